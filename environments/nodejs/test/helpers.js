'use strict';
// Test helpers: spawn the real server.js, write fixture functions to a temp
// dir, talk to the server over HTTP.

const { spawn } = require('child_process');
const fs = require('fs');
const net = require('net');
const os = require('os');
const path = require('path');

const SERVER = path.resolve(__dirname, '..', 'server.js');

function freePort() {
  return new Promise((resolve, reject) => {
    const srv = net.createServer();
    srv.on('error', reject);
    srv.listen(0, '127.0.0.1', () => {
      const { port } = srv.address();
      srv.close(() => resolve(port));
    });
  });
}

// Writes {relativePath: contents} into a fresh temp dir; returns its path.
function makeFixture(files) {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'fission-node-env-'));
  for (const [rel, contents] of Object.entries(files)) {
    const p = path.join(dir, rel);
    fs.mkdirSync(path.dirname(p), { recursive: true });
    fs.writeFileSync(p, contents);
  }
  return dir;
}

function sleep(ms) {
  return new Promise((r) => setTimeout(r, ms));
}

// Waits until GET /healthz answers 200 (or the child dies / times out).
async function waitReady(url, child, logs, timeoutMs = 10000) {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    if (child.exitCode !== null) throw new Error(`server exited (${child.exitCode}):\n${logs()}`);
    try {
      const res = await fetch(`${url}/healthz`);
      await res.arrayBuffer();
      if (res.status === 200) return;
    } catch (_) {
      /* not listening yet */
    }
    if (Date.now() > deadline) throw new Error(`server not ready after ${timeoutMs} ms:\n${logs()}`);
    await sleep(15);
  }
}

function collect(child) {
  let out = '';
  child.stdout.on('data', (d) => (out += d));
  child.stderr.on('data', (d) => (out += d));
  return () => out;
}

function fastPathEnv() {
  return process.env.FAST_PATH === undefined ? {} : { FAST_PATH: process.env.FAST_PATH };
}

// Spawns server.js on a free port with a clean environment.
async function startServer({ env = {}, args = [] } = {}) {
  const port = await freePort();
  const child = spawn(process.execPath, [SERVER, ...args], {
    // FAST_PATH is passed on so the whole suite can run on the Express path too (test.sh).
    env: { PATH: process.env.PATH, PORT: String(port), ...fastPathEnv(), ...env },
    stdio: ['ignore', 'pipe', 'pipe'],
  });
  const logs = collect(child);
  const url = `http://127.0.0.1:${port}`;
  await waitReady(url, child, logs);
  return wrap(child, url, logs);
}

function wrap(child, url, logs) {
  return {
    url,
    child,
    logs,
    // Output arrives through pipes asynchronously: wait for it.
    async waitLog(re, timeoutMs = 3000) {
      const deadline = Date.now() + timeoutMs;
      while (!re.test(logs())) {
        if (Date.now() > deadline) throw new Error(`log never matched ${re}:\n${logs()}`);
        await sleep(10);
      }
    },
    async stop() {
      if (child.exitCode === null && child.signalCode === null) {
        const exited = new Promise((r) => child.once('exit', r));
        child.kill('SIGTERM');
        await exited;
      }
    },
  };
}

async function request(url, opts = {}) {
  const res = await fetch(url, opts);
  const body = Buffer.from(await res.arrayBuffer());
  return { status: res.status, headers: res.headers, body, text: body.toString('utf8') };
}

function specialize(server, filepath, functionName = '') {
  return request(`${server.url}/v2/specialize`, {
    method: 'POST',
    headers: { 'content-type': 'application/json' },
    body: JSON.stringify({
      filepath,
      functionName,
      url: '',
      FunctionMetadata: { name: 'fn', namespace: 'default' },
      envVersion: 3,
    }),
  });
}

// Starts a server, specializes it with the given fixture, and returns it.
async function serve(files, { filepath = '', functionName = '', env = {} } = {}) {
  const dir = makeFixture(files);
  const server = await startServer({ env });
  const res = await specialize(server, path.join(dir, filepath), functionName);
  if (res.status !== 202) {
    await server.stop();
    throw new Error(`specialize failed: ${res.status} ${res.text}\n${server.logs()}`);
  }
  return server;
}

module.exports = { SERVER, freePort, makeFixture, startServer, wrap, collect, waitReady, request, specialize, serve, sleep };
