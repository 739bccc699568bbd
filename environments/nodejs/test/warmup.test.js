'use strict';
// The start-up warm-up (see "Warm-up" in server.js): it must leave the
// instance generic, never reach the user's function, and never delay or
// refuse a specialize request that arrives while it runs.

const { test } = require('node:test');
const assert = require('node:assert/strict');
const { spawn } = require('child_process');
const path = require('path');
const { SERVER, freePort, makeFixture, wrap, collect, request, specialize } = require('./helpers');

// Counts its calls, so a stray call from the warm-up would show.
const COUNTER = `let calls = 0;
module.exports = async function (context) {
  calls += 1;
  return { status: 200, body: 'calls=' + calls };
};
`;

// Spawns server.js and returns once it printed its listening line (no
// health check: that would be a connection of its own).
async function spawnListening(nodeArgs = []) {
  const port = await freePort();
  const child = spawn(process.execPath, [...nodeArgs, SERVER], {
    env: { PATH: process.env.PATH, PORT: String(port) },
    stdio: ['ignore', 'pipe', 'pipe'],
  });
  const server = wrap(child, `http://127.0.0.1:${port}`, collect(child));
  await server.waitLog(/listening on 127\.0\.0\.1:\d+/);
  return server;
}

test('an idle instance warms up, stays generic, and its function sees only real calls', async () => {
  const server = await spawnListening();
  try {
    await server.waitLog(/runtime warmed up in [\d.]+ ms/);
    const generic = await request(`${server.url}/`);
    assert.equal(generic.status, 500);
    assert.equal(generic.text, 'Generic container: no requests supported');
    const dir = makeFixture({ 'counter.js': COUNTER });
    assert.equal((await specialize(server, path.join(dir, 'counter.js'))).status, 202);
    assert.equal((await request(`${server.url}/`)).text, 'calls=1');
    const json = await request(`${server.url}/`, {
      method: 'POST',
      headers: { 'content-type': 'application/json' },
      body: '{"a":1}',
    });
    assert.equal(json.text, 'calls=2');
    assert.equal(server.logs().match(/^specialized \(/gm).length, 1, server.logs());
    assert.doesNotMatch(server.logs(), /warmup\.js|warm-up incomplete|load error/);
  } finally {
    await server.stop();
  }
});

test('a specialize request arriving during the warm-up is served at once', async () => {
  const dir = makeFixture({ 'counter.js': COUNTER });
  const server = await spawnListening();
  try {
    assert.equal((await specialize(server, path.join(dir, 'counter.js'))).status, 202);
    assert.equal((await request(`${server.url}/`)).text, 'calls=1');
    assert.equal((await request(`${server.url}/`)).text, 'calls=2');
    assert.doesNotMatch(server.logs(), /warm-up incomplete|load error/);
  } finally {
    await server.stop();
  }
});

test('without a loopback socket the warm-up runs over an in-memory stream', async () => {
  // Preloaded: the warm-up's own listen(0, '127.0.0.1') fails as it would
  // where no loopback interface exists.
  const preload = makeFixture({
    'no-loopback.js': `const net = require('net');
const listen = net.Server.prototype.listen;
net.Server.prototype.listen = function (...args) {
  if (args[0] === 0 && args[1] === '127.0.0.1') {
    process.nextTick(() => this.emit('error', new Error('no loopback here')));
    return this;
  }
  return listen.apply(this, args);
};
`,
  });
  const server = await spawnListening(['--require', path.join(preload, 'no-loopback.js')]);
  try {
    await server.waitLog(/runtime warmed up in [\d.]+ ms/);
    assert.equal((await request(`${server.url}/`)).text, 'Generic container: no requests supported');
    const dir = makeFixture({ 'counter.js': COUNTER });
    assert.equal((await specialize(server, path.join(dir, 'counter.js'))).status, 202);
    assert.equal((await request(`${server.url}/`)).text, 'calls=1');
  } finally {
    await server.stop();
  }
});
