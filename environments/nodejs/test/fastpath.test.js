'use strict';
// The fast path (calls served straight from the http server) answers exactly as Express does:
// the same requests are sent, byte for byte, to an instance on the fast path and to one with
// FAST_PATH=0, and the answers must be equal but for the Date header.

const { test, before, after } = require('node:test');
const assert = require('node:assert/strict');
const net = require('net');
const { serve } = require('./helpers');

const PROBE = `module.exports = async function (context) {
  const req = context.request;
  const res = context.response;
  if (req.query.direct) {
    res.locals.seen = true;
    res.status(201).set('X-Direct', String(res.locals.seen)).json({ direct: req.params[0] });
    return;
  }
  if (req.query.throw) throw new Error('probe failure');
  // Which path served the call: only Express's router sets req.route.
  if (req.query.which) return { status: 200, body: req.route === undefined ? 'fast' : 'express' };
  if (req.query.text) {
    const headers = req.query.type ? { 'Content-Type': req.query.type } : undefined;
    return { status: Number(req.query.status || 200), headers, body: 'h\u00e9llo ' + req.url };
  }
  if (req.query.stream) {
    const { Readable } = require('stream');
    return { status: 200, body: Readable.from(['a', 'b']) };
  }
  const body = Buffer.isBuffer(req.body) ? { buffer: req.body.toString('hex') } : req.body;
  return {
    status: Number(req.query.status || 200),
    headers: { 'X-Probe': 'yes' },
    body: {
      method: req.method,
      url: req.url,
      originalUrl: req.originalUrl,
      baseUrl: req.baseUrl,
      path: req.path,
      params: req.params,
      query: req.query,
      body,
      hostname: req.hostname,
      ip: req.ip,
      protocol: req.protocol,
      secure: req.secure,
      xhr: req.xhr,
      fresh: req.fresh,
      isJson: req.is('json'),
      accepts: req.accepts(['json', 'html']),
      param: req.get('X-Fission-Params-Name') || null,
      hasApp: typeof req.app === 'function' && res.app === req.app,
      linked: req.res === res && res.req === req,
      next: typeof req.next,
      locals: Object.getPrototypeOf(res.locals) === null,
    },
  };
};
`;

const CALLBACK = `module.exports = function (context, callback) {
  if (context.request.query.throw) throw new Error('callback probe failure');
  callback(Number(context.request.query.status || 200), 'cb:' + context.request.url, { 'X-Cb': '1' });
};
`;

let servers = [];

async function pair(files, functionName) {
  const fast = await serve(files, { functionName, env: { FAST_PATH: '1' } });
  servers.push(fast);
  const slow = await serve(files, { functionName, env: { FAST_PATH: '0' } });
  servers.push(slow);
  return { fast, slow };
}

let probe;
let callback;
before(async () => {
  probe = await pair({ 'probe.js': PROBE }, 'probe');
  callback = await pair({ 'cb.js': CALLBACK }, 'cb');
});
after(async () => {
  for (const s of servers) await s.stop();
  servers = [];
});

// The methods of the requests in raw bytes (their request lines).
function methodsOf(raw) {
  return raw
    .split('\r\n')
    .filter((l) => /^[A-Z]+ \S+ HTTP\/1\.[01]$/.test(l))
    .map((l) => l.split(' ')[0]);
}

// True once buf holds a complete answer to each of the requests.
function complete(buf, methods) {
  let at = 0;
  for (const method of methods) {
    const end = buf.indexOf('\r\n\r\n', at);
    if (end < 0) return false;
    const head = buf.slice(at, end);
    const status = Number(head.slice(9, 12));
    const length = /\r\ncontent-length: *(\d+)/i.exec(head);
    at = end + 4;
    if (method === 'HEAD' || status === 204 || status === 304 || (status >= 100 && status < 200)) continue;
    if (length) {
      at += Number(length[1]);
      if (buf.length < at) return false;
    } else if (/\r\ntransfer-encoding: *chunked/i.test(head)) {
      const last = buf.indexOf('\r\n0\r\n\r\n', at - 2);
      if (last < 0) return false;
      at = last + 7;
    } else {
      return false; // ends with the connection
    }
  }
  return true;
}

// Sends raw bytes on a fresh connection and collects the answers (until each request has one,
// or the server closes); Date headers are blanked.
function exchange(url, raw) {
  const { port } = new URL(url);
  const methods = methodsOf(raw);
  return new Promise((resolve, reject) => {
    const sock = net.connect({ port: Number(port), host: '127.0.0.1' });
    let out = '';
    let finished = false;
    const done = () => {
      if (finished) return;
      finished = true;
      clearTimeout(timer);
      sock.destroy();
      resolve(out.replace(/\r\nDate: [^\r]*/g, '\r\nDate: -'));
    };
    const timer = setTimeout(done, 10000);
    sock.on('data', (d) => {
      out += d.toString('latin1');
      if (complete(out, methods)) done();
    });
    sock.on('end', done);
    sock.on('close', done);
    sock.on('error', (err) => (out ? done() : reject(err)));
    sock.write(raw);
  });
}

function req(method, target, headers = {}, body = '') {
  const lines = [`${method} ${target} HTTP/1.1`, 'Host: probe.example'];
  for (const [k, v] of Object.entries(headers)) lines.push(`${k}: ${v}`);
  if (body || method === 'POST') lines.push(`Content-Length: ${Buffer.byteLength(body)}`);
  return `${lines.join('\r\n')}\r\n\r\n${body}`;
}

const CASES = [
  ['GET with query, params header', req('GET', '/a/b?x=1&x=2&y[z]=3', { 'X-Fission-Params-Name': 'bob' })],
  ['percent-encoded path', req('GET', '/caf%C3%A9/%20x?q=%20')],
  ['undecodable path', req('GET', '/bad%E0%A4%A')],
  ['JSON body', req('POST', '/j', { 'Content-Type': 'application/json' }, '{"a":[1,2],"b":null}')],
  ['malformed JSON body', req('POST', '/j', { 'Content-Type': 'application/json' }, '{"a":')],
  ['urlencoded body', req('POST', '/f', { 'Content-Type': 'application/x-www-form-urlencoded' }, 'a=1&b=two&b=3')],
  ['text body', req('PUT', '/t', { 'Content-Type': 'text/plain; charset=utf-8' }, 'hello text')],
  ['octet-stream body', req('POST', '/o', { 'Content-Type': 'application/octet-stream' }, 'raw\u0001')],
  ['unparsed body type', req('POST', '/p', { 'Content-Type': 'image/png' }, 'PNG')],
  ['chunked JSON body', 'POST /c HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nTransfer-Encoding: chunked\r\n\r\n5\r\n{"k":\r\n2\r\n7}\r\n0\r\n\r\n'],
  ['body over the limit', req('POST', '/big', { 'Content-Type': 'text/plain' }, 'x'.repeat(1024 * 1024 + 10))],
  ['unsupported charset', req('POST', '/cs', { 'Content-Type': 'application/json; charset=klingon' }, '{}')],
  ['HEAD', req('HEAD', '/h?x=1')],
  ['OPTIONS', req('OPTIONS', '/o')],
  ['DELETE with status', req('DELETE', '/d?status=418')],
  ['conditional GET (ETag)', req('GET', '/same', { 'If-None-Match': 'W/"0-2jmj7l5rSw0yVb/vlWAYkK/YzwY"' })],
  ['string body', req('GET', '/text?text=1')],
  ['string body, HEAD', req('HEAD', '/text?text=1')],
  ['string body, conditional GET', req('GET', '/text?text=1', { 'If-None-Match': '*' })],
  ['string body, If-Modified-Since', req('GET', '/text?text=1', { 'If-Modified-Since': 'Sun, 06 Dec 2026 00:00:00 GMT' })],
  ['string body, status 204', req('GET', '/text?text=1&status=204')],
  ['string body, status 205', req('GET', '/text?text=1&status=205')],
  ['string body, the function sets Content-Type', req('GET', '/text?text=1&type=text/plain')],
  ['XHR, Accept', req('GET', '/x', { 'X-Requested-With': 'XMLHttpRequest', Accept: 'text/html' })],
  ['function writes the response', req('GET', '/w?direct=1')],
  ['function throws', req('GET', '/e?throw=1')],
  ['streamed body', req('GET', '/s?stream=1')],
  ['runtime path: healthz any case', req('GET', '/HEALTHZ/')],
  ['runtime path, other method', req('GET', '/v2/specialize')],
  ['re-specialize', req('POST', '/v2/Specialize/', { 'Content-Type': 'application/json' }, '{}')],
  ['HTTP/1.0', 'GET /old HTTP/1.0\r\n\r\n'],
  ['two requests on one connection', req('GET', '/one') + req('POST', '/two', { 'Content-Type': 'application/json' }, '[1]')],
];

for (const [name, raw] of CASES) {
  test(`fast path answers as Express: ${name}`, async () => {
    const [fast, slow] = await Promise.all([exchange(probe.fast.url, raw), exchange(probe.slow.url, raw)]);
    assert.ok(/^HTTP\/1\.1 \d{3} /.test(slow), slow);
    assert.equal(fast, slow);
  });
}

for (const [name, raw] of [
  ['callback signature', req('GET', '/cb?status=202')],
  ['callback signature, sync throw', req('GET', '/cb?throw=1')],
]) {
  test(`fast path answers as Express: ${name}`, async () => {
    const [fast, slow] = await Promise.all([exchange(callback.fast.url, raw), exchange(callback.slow.url, raw)]);
    assert.ok(/^HTTP\/1\.1 \d{3} /.test(slow), slow);
    assert.equal(fast, slow);
  });
}

test('the two instances compared really take different paths', async () => {
  const raw = req('GET', '/?which=1');
  const [fast, slow] = await Promise.all([exchange(probe.fast.url, raw), exchange(probe.slow.url, raw)]);
  assert.ok(fast.endsWith('\r\n\r\nfast'), fast);
  assert.ok(slow.endsWith('\r\n\r\nexpress'), slow);
});

test('the function sees the Express request API on the fast path', async () => {
  const out = await exchange(probe.fast.url, req('GET', '/api/x?y=1', { 'X-Fission-Params-Name': 'n' }));
  const body = JSON.parse(out.slice(out.indexOf('\r\n\r\n') + 4));
  assert.equal(body.path, '/api/x');
  assert.deepEqual(body.params, { 0: '/api/x' });
  assert.deepEqual(body.query, { y: '1' });
  assert.equal(body.param, 'n');
  assert.equal(body.hostname, 'probe.example');
  assert.equal(body.hasApp, true);
  assert.equal(body.linked, true);
  assert.equal(body.next, 'function');
  assert.equal(body.locals, true);
  assert.match(out, /\r\nX-Powered-By: Express\r\n/);
  assert.match(out, /\r\nETag: W\/"/);
});
