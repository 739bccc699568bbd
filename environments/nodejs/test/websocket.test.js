'use strict';
// WebSockets: an upgrade request calls the user function with (ws, clients).

const { test } = require('node:test');
const assert = require('node:assert/strict');
const WebSocket = require('ws');
const { serve, startServer, sleep } = require('./helpers');

// Broadcasts every message to all open sockets of the instance.
const BROADCAST = `module.exports = function (ws, clients) {
  ws.on('message', (data) => {
    for (const c of clients) c.send('broadcast: ' + data);
  });
  ws.send('hello ' + clients.size);
};
`;

function wsUrl(server, path = '/') {
  return server.url.replace(/^http/, 'ws') + path;
}

function open(url, options = {}) {
  return new Promise((resolve, reject) => {
    const ws = new WebSocket(url, options);
    const queue = [];
    const waiters = [];
    ws.on('message', (data) => {
      const w = waiters.shift();
      if (w) w(String(data));
      else queue.push(String(data));
    });
    ws.next = () =>
      new Promise((res, rej) => {
        if (queue.length) return res(queue.shift());
        const t = setTimeout(() => rej(new Error('no message within 3 s')), 3000);
        waiters.push((m) => {
          clearTimeout(t);
          res(m);
        });
      });
    ws.once('open', () => resolve(ws));
    ws.once('error', reject);
    ws.once('unexpected-response', (req, res) => {
      let body = '';
      res.on('data', (d) => (body += d));
      res.on('end', () => reject(Object.assign(new Error(`HTTP ${res.statusCode}: ${body}`), { status: res.statusCode, body })));
    });
  });
}

function closed(ws) {
  return new Promise((resolve) => ws.once('close', (code) => resolve(code)));
}

test('a message from one websocket client is broadcast to every open client', async () => {
  const server = await serve({ 'ws.js': BROADCAST }, { functionName: 'ws' });
  try {
    const a = await open(wsUrl(server, '/any/path'));
    assert.equal(await a.next(), 'hello 1');
    const b = await open(wsUrl(server));
    assert.equal(await b.next(), 'hello 2');
    a.send('from a');
    assert.equal(await a.next(), 'broadcast: from a');
    assert.equal(await b.next(), 'broadcast: from a');
    // A closed client leaves the set.
    const bClosed = closed(b);
    b.close();
    await bClosed;
    await sleep(50);
    const c = await open(wsUrl(server));
    assert.equal(await c.next(), 'hello 2');
    a.close();
    c.close();
  } finally {
    await server.stop();
  }
});

test('an http function still answers plain http requests next to the websocket server', async () => {
  const fn = `module.exports = async function (context) { return { status: 200, body: 'http' }; };`;
  const server = await serve({ 'h.js': fn }, { functionName: 'h' });
  try {
    const res = await fetch(server.url + '/');
    assert.equal(res.status, 200);
    assert.equal(await res.text(), 'http');
  } finally {
    await server.stop();
  }
});

test('a websocket upgrade to a generic instance is refused with 500', async () => {
  const server = await startServer();
  try {
    await assert.rejects(open(wsUrl(server)), (err) => {
      assert.equal(err.status, 500);
      assert.equal(err.body, 'Generic container: no requests supported');
      return true;
    });
  } finally {
    await server.stop();
  }
});

test('a websocket function that throws closes the socket with 1011 and the instance keeps serving', async () => {
  const fn = `let n = 0;
module.exports = function (ws) {
  if (n++ === 0) throw new Error('boom');
  ws.send('ok');
};`;
  const server = await serve({ 'f.js': fn }, { functionName: 'f' });
  try {
    const a = await open(wsUrl(server));
    assert.equal(await closed(a), 1011);
    await server.waitLog(/Function error: Error: boom/);
    const b = await open(wsUrl(server));
    assert.equal(await b.next(), 'ok');
    b.close();
  } finally {
    await server.stop();
  }
});

test('an async websocket function that rejects closes the socket with 1011', async () => {
  const fn = `module.exports = async function (ws) { throw new Error('async boom'); };`;
  const server = await serve({ 'f.js': fn }, { functionName: 'f' });
  try {
    const a = await open(wsUrl(server));
    assert.equal(await closed(a), 1011);
    await server.waitLog(/Function error: Error: async boom/);
  } finally {
    await server.stop();
  }
});

test('a peer that stops answering pings is terminated after TIMEOUT', async () => {
  const server = await serve({ 'ws.js': BROADCAST }, { functionName: 'ws', env: { TIMEOUT: '100' } });
  try {
    // This client never answers pings.
    const a = await open(wsUrl(server), { autoPong: false });
    assert.equal(await a.next(), 'hello 1');
    const code = await Promise.race([closed(a).then(() => 'closed'), sleep(3000).then(() => 'open')]);
    assert.equal(code, 'closed');
    // One that answers stays open across several ping rounds.
    const b = await open(wsUrl(server));
    assert.equal(await b.next(), 'hello 1');
    await sleep(500);
    assert.equal(b.readyState, WebSocket.OPEN);
    b.close();
  } finally {
    await server.stop();
  }
});
