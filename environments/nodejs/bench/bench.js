'use strict';
// Measures the Node loader's warm-call cost against a bare http.createServer, in one run,
// interleaved so that the noise of a shared machine falls on all of them alike: sequential
// requests on one keep-alive connection, p50/p99/mean latency and the server's CPU time per
// call (from /proc, robust to a loaded machine).
//
//   node environments/nodejs/bench/bench.js \
//       --server bare=bare --server before=git:4724f52 --server after=environments/nodejs/server.js \
//       [--calls 2000]
//
// A server is LABEL=SPEC: `bare` (bench/bare.js: the floor), a server.js path, or git:REV
// (that revision's environments/nodejs/server.js and warmup.js, run beside the current
// node_modules). Calls: GET of a hello function (async signature), GET of a hello function
// that reads context.request.get() and .query, and a small JSON POST echoed back.

const { spawn, execFileSync } = require('child_process');
const fs = require('fs');
const net = require('net');
const os = require('os');
const path = require('path');

const HERE = __dirname;
const NODE_DIR = path.dirname(HERE);
const REPO = path.resolve(NODE_DIR, '..', '..');

const FUNCTIONS = {
  hello: 'module.exports = async function (context) {\n  return { status: 200, body: "Hello, world!\\n" };\n};\n',
  reads: [
    'module.exports = async function (context) {',
    '  const who = context.request.get("x-fission-params-name") || context.request.query.name;',
    '  return { status: 200, body: "Hello, " + who + "!\\n" };',
    '};',
    '',
  ].join('\n'),
  json: 'module.exports = async function (context) {\n  return { status: 200, body: context.request.body };\n};\n',
};

function fail(msg) {
  console.error(`Error: ${msg}`);
  process.exit(1);
}

function parseArgs() {
  const servers = [];
  let calls = 2000;
  const argv = process.argv.slice(2);
  for (let i = 0; i < argv.length; i++) {
    if (argv[i] === '--server') {
      const spec = argv[++i] || '';
      const eq = spec.indexOf('=');
      if (eq <= 0) fail(`--server wants LABEL=SPEC, got "${spec}"`);
      servers.push({ label: spec.slice(0, eq), spec: spec.slice(eq + 1) });
    } else if (argv[i] === '--calls') {
      calls = Number(argv[++i]);
      if (!Number.isInteger(calls) || calls < 10) fail('--calls wants a number ≥ 10');
    } else {
      fail(`unknown argument ${argv[i]}`);
    }
  }
  if (!servers.length) servers.push({ label: 'current', spec: path.join(NODE_DIR, 'server.js') });
  return { servers, calls };
}

function resolveSpec(spec, scratch) {
  if (spec === 'bare') return { file: path.join(HERE, 'bare.js'), bare: true };
  if (spec.startsWith('git:')) {
    const rev = spec.slice(4);
    const dir = fs.mkdtempSync(path.join(scratch, 'rev-'));
    for (const f of ['server.js', 'warmup.js']) {
      let src;
      try {
        src = execFileSync('git', ['-C', REPO, 'show', `${rev}:environments/nodejs/${f}`], { stdio: ['ignore', 'pipe', 'pipe'] });
      } catch (err) {
        if (f === 'warmup.js') continue; // older revisions have none
        fail(`git show ${rev}: ${String(err.stderr || err).trim()}`);
      }
      fs.writeFileSync(path.join(dir, f), src);
    }
    fs.symlinkSync(path.join(NODE_DIR, 'node_modules'), path.join(dir, 'node_modules'));
    return { file: path.join(dir, 'server.js'), bare: false };
  }
  const file = path.resolve(spec);
  if (!fs.existsSync(file)) fail(`no server file ${file}`);
  return { file, bare: false };
}

function freePort() {
  return new Promise((resolve, reject) => {
    const s = net.createServer();
    s.on('error', reject);
    s.listen(0, '127.0.0.1', () => {
      const { port } = s.address();
      s.close(() => resolve(port));
    });
  });
}

async function startInstance(file, home) {
  const port = await freePort();
  const child = spawn(process.execPath, [file], {
    env: { PATH: '/usr/bin:/bin', HOME: home, PORT: String(port) },
    cwd: home,
    stdio: ['ignore', 'pipe', 'ignore'],
  });
  await new Promise((resolve, reject) => {
    let out = '';
    child.stdout.on('data', (d) => {
      out += d;
      if (out.includes('listening on')) resolve();
    });
    child.on('exit', (code) => reject(new Error(`${file} exited (${code}) before listening`)));
  });
  child.stdout.resume();
  // Let the loader's own warm-up finish first (it is cancelled by the first connection).
  await new Promise((r) => setTimeout(r, 1500));
  return { child, port };
}

// A minimal HTTP/1.1 client on one keep-alive connection.
class Conn {
  constructor(port) {
    this.port = port;
    this.buf = Buffer.alloc(0);
    this.waiter = null;
  }

  open() {
    return new Promise((resolve, reject) => {
      this.sock = net.connect({ port: this.port, host: '127.0.0.1', noDelay: true }, resolve);
      this.sock.on('error', reject);
      this.sock.on('data', (d) => {
        this.buf = this.buf.length ? Buffer.concat([this.buf, d]) : d;
        this.tryParse();
      });
    });
  }

  tryParse() {
    if (!this.waiter) return;
    const end = this.buf.indexOf('\r\n\r\n');
    if (end < 0) return;
    const head = this.buf.subarray(0, end).toString('latin1');
    const status = Number(head.slice(9, 12));
    const m = /\r\ncontent-length: *(\d+)/i.exec(head);
    if (!m) throw new Error(`response without Content-Length:\n${head}`);
    const len = Number(m[1]);
    if (this.buf.length < end + 4 + len) return;
    const body = this.buf.subarray(end + 4, end + 4 + len).toString();
    this.buf = this.buf.subarray(end + 4 + len);
    const w = this.waiter;
    this.waiter = null;
    w({ status, body });
  }

  request(raw) {
    return new Promise((resolve) => {
      this.waiter = resolve;
      this.sock.write(raw);
    });
  }

  close() {
    this.sock.destroy();
  }
}

function specializeRequest(file) {
  const body = JSON.stringify({ filepath: file, functionName: '', url: '', FunctionMetadata: { name: 'b' }, envVersion: 3 });
  return `POST /v2/specialize HTTP/1.1\r\nHost: b\r\nContent-Type: application/json\r\nContent-Length: ${Buffer.byteLength(body)}\r\n\r\n${body}`;
}

const CALLS = {
  hello: { raw: 'GET / HTTP/1.1\r\nHost: b\r\n\r\n', expect: 'Hello, world!\n' },
  reads: { raw: 'GET /?name=ann HTTP/1.1\r\nHost: b\r\nX-Fission-Params-Name: bob\r\n\r\n', expect: 'Hello, bob!\n' },
  json: {
    raw: 'POST / HTTP/1.1\r\nHost: b\r\nContent-Type: application/json\r\nContent-Length: 21\r\n\r\n{"a":1,"b":[1,2,3]}\r\n',
    expect: '{"a":1,"b":[1,2,3]}',
  },
};

function cpuNs(pid) {
  let total = 0;
  const dir = `/proc/${pid}/task`;
  for (const tid of fs.readdirSync(dir)) {
    try {
      total += Number(fs.readFileSync(`${dir}/${tid}/schedstat`, 'utf8').split(' ')[0]);
    } catch (_) {
      /* the thread ended meanwhile */
    }
  }
  return total;
}

function pct(sorted, p) {
  return sorted[Math.min(sorted.length - 1, Math.round((p / 100) * (sorted.length - 1)))];
}

async function main() {
  const { servers, calls } = parseArgs();
  const scratch = fs.mkdtempSync(path.join(os.tmpdir(), 'nodebench-'));
  const instances = [];
  try {
    for (const s of servers) {
      const { file, bare } = resolveSpec(s.spec, scratch);
      s.kinds = {};
      for (const kind of Object.keys(CALLS)) {
        const home = fs.mkdtempSync(path.join(scratch, 'home-'));
        const inst = await startInstance(file, home);
        instances.push(inst);
        const conn = new Conn(inst.port);
        await conn.open();
        if (!bare) {
          const fn = path.join(home, 'fn.js');
          fs.writeFileSync(fn, FUNCTIONS[kind]);
          const r = await conn.request(specializeRequest(fn));
          if (r.status !== 202) fail(`${s.label}: specialize answered ${r.status} ${r.body}`);
        }
        s.kinds[kind] = { inst, conn, lat: [], cpu: [], bare };
      }
    }
    const blocks = 10;
    for (const s of servers) {
      for (const k of Object.values(s.kinds)) for (let i = 0; i < 500; i++) await k.conn.request(CALLS.hello.raw);
    }
    for (let b = 0; b < blocks; b++) {
      for (const s of servers) {
        for (const [kind, k] of Object.entries(s.kinds)) {
          const call = CALLS[kind];
          const n = Math.floor(calls / blocks);
          const cpu0 = cpuNs(k.inst.child.pid);
          for (let i = 0; i < n; i++) {
            const t = process.hrtime.bigint();
            const r = await k.conn.request(call.raw);
            k.lat.push(Number(process.hrtime.bigint() - t) / 1e6);
            if (r.status !== 200 || (!k.bare && r.body !== call.expect)) {
              fail(`${s.label} ${kind}: ${r.status} ${JSON.stringify(r.body)}`);
            }
          }
          k.cpu.push((cpuNs(k.inst.child.pid) - cpu0) / n / 1e6);
        }
      }
    }
  } finally {
    for (const inst of instances) inst.child.kill('SIGKILL');
    fs.rmSync(scratch, { recursive: true, force: true });
  }
  console.log(`node ${process.version}; ${calls} sequential keep-alive calls per server and kind; ms`);
  const labels = servers.map((s) => s.label);
  console.log(''.padEnd(34) + labels.map((l) => l.padStart(12)).join(''));
  for (const kind of Object.keys(CALLS)) {
    const rows = [
      [`${kind} p50`, (k) => pct([...k.lat].sort((a, b) => a - b), 50)],
      [`${kind} p99`, (k) => pct([...k.lat].sort((a, b) => a - b), 99)],
      [`${kind} mean`, (k) => k.lat.reduce((a, b) => a + b, 0) / k.lat.length],
      [`${kind} server CPU per call`, (k) => pct([...k.cpu].sort((a, b) => a - b), 50)],
    ];
    for (const [name, get] of rows) {
      console.log(name.padEnd(34) + servers.map((s) => get(s.kinds[kind]).toFixed(3).padStart(12)).join(''));
    }
  }
}

main().catch((err) => fail(err.stack || String(err)));
