'use strict';
// FISSION_LISTEN_FD: the executor hands the runtime an already bound and
// listening socket.  A tiny python launcher plays the executor: it creates
// the socket, puts it on fd 3 and execs node server.js.

const { test } = require('node:test');
const assert = require('node:assert/strict');
const { spawn } = require('child_process');
const path = require('path');
const { SERVER, collect, waitReady, wrap, makeFixture, specialize, request } = require('./helpers');

const LAUNCHER = `
import os, socket, sys
s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
s.bind(("127.0.0.1", 0))
s.listen(128)
port = s.getsockname()[1]
if s.fileno() != 3:
    os.dup2(s.fileno(), 3, inheritable=True)
    s.close()
else:
    os.set_inheritable(s.detach(), True)
sys.stdout.write("%d\\n" % port)
sys.stdout.flush()
env = {"PATH": os.environ.get("PATH", ""), "FISSION_LISTEN_FD": "3"}
os.execve(sys.argv[1], [sys.argv[1], sys.argv[2]], env)
`;

function python() {
  return process.env.PYTHON || 'python3';
}

test('serves on the inherited listening socket (FISSION_LISTEN_FD)', async () => {
  const child = spawn(python(), ['-c', LAUNCHER, process.execPath, SERVER], { stdio: ['ignore', 'pipe', 'pipe'] });
  const logs = collect(child);
  const port = await new Promise((resolve, reject) => {
    let buf = '';
    child.stdout.on('data', (d) => {
      buf += d;
      const m = /^(\d+)\n/.exec(buf);
      if (m) resolve(Number(m[1]));
    });
    child.on('exit', (code) => reject(new Error(`launcher exited ${code}: ${logs()}`)));
  });
  const url = `http://127.0.0.1:${port}`;
  const server = wrap(child, url, logs);
  try {
    await waitReady(url, child, logs);
    await server.waitLog(/listening on 127\.0\.0\.1:\d+ \(fd 3\)/);
    const dir = makeFixture({ 'fn.js': `module.exports = async () => ({ status: 200, body: 'via fd' });` });
    const res = await specialize(server, path.join(dir, 'fn.js'), '');
    assert.equal(res.status, 202, res.text);
    assert.equal((await request(`${url}/`)).text, 'via fd');
  } finally {
    await server.stop();
  }
});
