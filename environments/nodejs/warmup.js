'use strict';
// Not user code: server.js loads this once at startup, through its own
// specialize and invocation code paths, so that those are compiled and warm
// before the instance is served (see "Warm-up" in server.js), then unloads it.
module.exports = async function warmup(context) {
  const body = context.request.body;
  const echo = body !== null && typeof body === 'object' && !Buffer.isBuffer(body);
  return { status: 200, headers: { 'X-Warmup': '1' }, body: echo ? body : 'warm\n' };
};
