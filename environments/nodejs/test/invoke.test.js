'use strict';
// Invocation: function signatures, request parsing, responses and errors.

const { test, before, after } = require('node:test');
const assert = require('node:assert/strict');
const { serve, request, specialize, sleep } = require('./helpers');

// One echo function shared by the request-parsing tests.
const ECHO = `module.exports = async function (context) {
  const req = context.request;
  const body = Buffer.isBuffer(req.body)
    ? { type: 'buffer', hex: req.body.toString('hex') }
    : { type: typeof req.body, value: req.body };
  return {
    status: 200,
    headers: { 'x-echo': 'yes' },
    body: {
      method: req.method,
      url: req.url,
      query: req.query,
      body,
      param: req.get('x-fission-params-name') || null,
      contentType: req.headers['content-type'] || null,
    },
  };
};
`;

let echo;
before(async () => {
  echo = await serve({ 'echo.js': ECHO }, { functionName: 'echo' });
});
after(async () => {
  if (echo) await echo.stop();
});

async function echoCall(path, opts) {
  const res = await request(`${echo.url}${path}`, opts);
  assert.equal(res.status, 200, res.text);
  assert.equal(res.headers.get('x-echo'), 'yes');
  assert.match(res.headers.get('content-type'), /application\/json/);
  return JSON.parse(res.text);
}

test('query string, method, url and router headers reach the function', async () => {
  const got = await echoCall('/some/sub/path?name=fission&n=2', {
    headers: { 'X-Fission-Params-Name': 'alice' },
  });
  assert.equal(got.method, 'GET');
  assert.equal(got.url, '/some/sub/path?name=fission&n=2');
  assert.deepEqual(got.query, { name: 'fission', n: '2' });
  assert.equal(got.param, 'alice');
});

test('JSON body is parsed', async () => {
  const got = await echoCall('/', {
    method: 'POST',
    headers: { 'content-type': 'application/json' },
    body: JSON.stringify({ a: 1, b: [true, null] }),
  });
  assert.deepEqual(got.body, { type: 'object', value: { a: 1, b: [true, null] } });
});

test('text/* body is a string', async () => {
  const got = await echoCall('/', { method: 'PUT', headers: { 'content-type': 'text/plain' }, body: 'plain text' });
  assert.equal(got.method, 'PUT');
  assert.deepEqual(got.body, { type: 'string', value: 'plain text' });
});

test('application/octet-stream body is a Buffer', async () => {
  const got = await echoCall('/', {
    method: 'POST',
    headers: { 'content-type': 'application/octet-stream' },
    body: Buffer.from([0, 1, 2, 254, 255]),
  });
  assert.deepEqual(got.body, { type: 'buffer', hex: '000102feff' });
});

test('urlencoded body is parsed (extended: false)', async () => {
  const got = await echoCall('/', {
    method: 'POST',
    headers: { 'content-type': 'application/x-www-form-urlencoded' },
    body: 'x=1&y=two&z[a]=3',
  });
  assert.deepEqual(got.body, { type: 'object', value: { x: '1', y: 'two', 'z[a]': '3' } });
});

test('malformed JSON body: 400 before the function runs', async () => {
  const res = await request(`${echo.url}/`, {
    method: 'POST',
    headers: { 'content-type': 'application/json' },
    body: '{bad json',
  });
  assert.equal(res.status, 400);
});

test('specialize endpoints are refused after specialization, other paths reach the function', async () => {
  const res = await specialize(echo, '/tmp', '');
  assert.equal(res.status, 400);
  assert.equal(res.text, 'Not a generic container');
  const got = await echoCall('/specialize/else', { method: 'DELETE' });
  assert.equal(got.method, 'DELETE');
});

test('concurrent requests are served', async () => {
  const results = await Promise.all(Array.from({ length: 20 }, (_, i) => echoCall(`/?i=${i}`)));
  results.forEach((r, i) => assert.equal(r.query.i, String(i)));
});

test('async signature: status, headers and string body', async () => {
  const server = await serve({
    'fn.js': `module.exports = async (context) => ({
  status: 418, body: 'teapot', headers: { 'Content-Type': 'text/x-tea', 'X-Custom': 'v' } });`,
  });
  try {
    const res = await request(`${server.url}/`);
    assert.equal(res.status, 418);
    assert.equal(res.text, 'teapot');
    assert.match(res.headers.get('content-type'), /^text\/x-tea/);
    assert.equal(res.headers.get('x-custom'), 'v');
  } finally {
    await server.stop();
  }
});

test('sync function returning an object, Buffer body', async () => {
  const server = await serve({
    'fn.js': `module.exports = (context) => ({ status: 200, body: Buffer.from('bytes!'), headers: { 'content-type': 'application/octet-stream' } });`,
  });
  try {
    const res = await request(`${server.url}/`);
    assert.equal(res.status, 200);
    assert.equal(res.text, 'bytes!');
  } finally {
    await server.stop();
  }
});

test('callback signature: callback(status, body, headers)', async () => {
  const server = await serve({
    'fn.js': `module.exports = function (context, callback) {
  setTimeout(() => callback(201, 'created ' + context.request.query.id, { 'x-cb': '1' }), 5);
};`,
  });
  try {
    const res = await request(`${server.url}/?id=7`);
    assert.equal(res.status, 201);
    assert.equal(res.text, 'created 7');
    assert.equal(res.headers.get('x-cb'), '1');
  } finally {
    await server.stop();
  }
});

test('function writing to context.response directly', async () => {
  const server = await serve({
    'fn.js': `module.exports = async (context) => {
  context.response.status(202).set('x-direct', 'yes').send('direct');
};`,
  });
  try {
    const res = await request(`${server.url}/`);
    assert.equal(res.status, 202);
    assert.equal(res.text, 'direct');
    assert.equal(res.headers.get('x-direct'), 'yes');
  } finally {
    await server.stop();
  }
});

test('function errors: 500 Internal server error and the process keeps serving', async () => {
  const server = await serve({
    'fn.js': `module.exports = async (context) => {
  const mode = context.request.query.mode;
  if (mode === 'throw') throw new Error('boom-async');
  if (mode === 'reject') return Promise.reject(new Error('boom-reject'));
  if (mode === 'string') return 'not an object';
  if (mode === 'undefined') return undefined;
  return { status: 200, body: 'fine' };
};`,
  });
  try {
    for (const mode of ['throw', 'reject', 'string', 'undefined']) {
      const res = await request(`${server.url}/?mode=${mode}`);
      assert.equal(res.status, 500, mode);
      assert.equal(res.text, 'Internal server error', mode);
    }
    assert.equal((await request(`${server.url}/`)).text, 'fine');
    await server.waitLog(/Function error: Error: boom-async/);
    await server.waitLog(/Function error: Error: boom-reject/);
  } finally {
    await server.stop();
  }
});

test('callback signature: synchronous throw gives 500', async () => {
  const server = await serve({
    'fn.js': `module.exports = function (context, callback) { throw new Error('sync-cb-throw'); };`,
  });
  try {
    const res = await request(`${server.url}/`);
    assert.equal(res.status, 500);
    assert.equal(res.text, 'Internal server error');
    await server.waitLog(/Function error: Error: sync-cb-throw/);
  } finally {
    await server.stop();
  }
});

test('an async throw outside the request does not kill the runtime', async () => {
  const server = await serve({
    'fn.js': `module.exports = function (context, callback) {
  if (context.request.query.crash) { setTimeout(() => { throw new Error('late crash'); }, 1); return; }
  callback(200, 'alive');
};`,
  });
  try {
    const hung = fetch(`${server.url}/?crash=1`, { signal: AbortSignal.timeout(300) }).catch(() => 'aborted');
    await sleep(100);
    assert.equal((await request(`${server.url}/`)).text, 'alive');
    assert.equal(await hung, 'aborted');
    await server.waitLog(/Function error: Error: late crash/);
  } finally {
    await server.stop();
  }
});

test('BODY_PARSER_LIMIT: bodies over the limit get 413', async () => {
  const server = await serve(
    { 'fn.js': `module.exports = async (c) => ({ status: 200, body: 'len ' + (c.request.body.length || 0) });` },
    { env: { BODY_PARSER_LIMIT: '1kb' } },
  );
  try {
    const small = await request(`${server.url}/`, {
      method: 'POST',
      headers: { 'content-type': 'text/plain' },
      body: 'a'.repeat(1000),
    });
    assert.equal(small.status, 200);
    assert.equal(small.text, 'len 1000');
    for (const type of ['text/plain', 'application/octet-stream', 'application/json']) {
      const big = await request(`${server.url}/`, {
        method: 'POST',
        headers: { 'content-type': type },
        body: type === 'application/json' ? JSON.stringify({ s: 'a'.repeat(2000) }) : 'a'.repeat(2000),
      });
      assert.equal(big.status, 413, type);
    }
  } finally {
    await server.stop();
  }
});

test('default BODY_PARSER_LIMIT is 1mb', async () => {
  const server = await serve({ 'fn.js': `module.exports = async (c) => ({ status: 200, body: String(c.request.body.length) });` });
  try {
    const ok = await request(`${server.url}/`, {
      method: 'POST',
      headers: { 'content-type': 'application/octet-stream' },
      body: Buffer.alloc(1000 * 1000),
    });
    assert.equal(ok.text, '1000000');
    const big = await request(`${server.url}/`, {
      method: 'POST',
      headers: { 'content-type': 'application/octet-stream' },
      body: Buffer.alloc(1024 * 1024 + 1),
    });
    assert.equal(big.status, 413);
  } finally {
    await server.stop();
  }
});
