'use strict';
// Memory of an idle, specialized Node instance per set of interpreter flags, next to the call
// latency with those flags: which V8 flags make a small warm instance without slowing calls.
//
//   node environments/nodejs/bench/memory.js \
//       --variant 'none=' --variant 'small=--max-semi-space-size=1 --v8-pool-size=1' \
//       [--instances 4] [--calls 1000] [--idle 2]
//
// A variant is LABEL=TOKENS; a token `--x` is a node flag, `NAME=value` an environment
// variable, `server=FILE` another loader (e.g. an older server.js placed beside a link to
// node_modules). Each variant starts --instances loaders (server.js, as the executor does: fd-less,
// PORT), specializes each with its own hello function, makes --calls sequential keep-alive
// calls per instance (after 200 unmeasured ones), lets them idle (--idle seconds), and reads
// /proc/<pid>/smaps_rollup. Variants run interleaved, instance by instance, so machine noise
// falls on all alike. Medians over the instances; latency percentiles over all calls.

const { spawn } = require('child_process');
const fs = require('fs');
const net = require('net');
const os = require('os');
const path = require('path');

const NODE_DIR = path.dirname(__dirname);
const SERVER = path.join(NODE_DIR, 'server.js');

function fail(msg) {
  console.error(`Error: ${msg}`);
  process.exit(1);
}

function parseArgs() {
  const variants = [];
  let instances = 4;
  let calls = 1000;
  let idle = 2;
  const argv = process.argv.slice(2);
  for (let i = 0; i < argv.length; i++) {
    const a = argv[i];
    if (a === '--variant') {
      const spec = argv[++i] || '';
      const eq = spec.indexOf('=');
      if (eq <= 0) fail(`--variant wants LABEL=TOKENS, got "${spec}"`);
      const flags = [];
      const env = {};
      let server = SERVER;
      for (const t of spec.slice(eq + 1).split(/\s+/).filter(Boolean)) {
        if (t.startsWith('--')) flags.push(t);
        else if (t.startsWith('server=')) server = path.resolve(t.slice('server='.length));
        else if (/^[A-Z_][A-Z0-9_]*=/.test(t)) env[t.slice(0, t.indexOf('='))] = t.slice(t.indexOf('=') + 1);
        else fail(`variant token "${t}" is neither --flag, NAME=value nor server=FILE`);
      }
      if (!fs.existsSync(server)) fail(`no server file ${server}`);
      variants.push({ label: spec.slice(0, eq), flags, env, server, inst: [] });
    } else if (a === '--instances') {
      instances = Number(argv[++i]);
      if (!Number.isInteger(instances) || instances < 1) fail('--instances wants a number ≥ 1');
    } else if (a === '--idle') {
      idle = Number(argv[++i]);
      if (!(idle >= 0)) fail('--idle wants seconds ≥ 0');
    } else if (a === '--calls') {
      calls = Number(argv[++i]);
      if (!Number.isInteger(calls) || calls < 10) fail('--calls wants a number ≥ 10');
    } else {
      fail(`unknown argument ${a}`);
    }
  }
  if (!variants.length) variants.push({ label: 'default', flags: [], env: {}, server: SERVER, inst: [] });
  return { variants, instances, calls, idle };
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

async function start(variant, home) {
  const port = await freePort();
  const child = spawn(process.execPath, [...variant.flags, variant.server], {
    env: { PATH: '/usr/bin:/bin', HOME: home, PORT: String(port), ...variant.env },
    cwd: home,
    stdio: ['ignore', 'pipe', 'inherit'],
  });
  await new Promise((resolve, reject) => {
    let out = '';
    const onData = (d) => {
      out += d;
      if (out.includes('warmed up') || out.includes('warm-up incomplete')) {
        child.stdout.off('data', onData);
        resolve();
      }
    };
    child.stdout.on('data', onData);
    child.on('exit', (code) => reject(new Error(`${variant.label}: server.js exited (${code}) before warming up`)));
  });
  child.stdout.resume();
  return { child, port };
}

// One keep-alive connection; responses need a Content-Length (the loader always sends one).
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
        this.parse();
      });
    });
  }

  parse() {
    if (!this.waiter) return;
    const end = this.buf.indexOf('\r\n\r\n');
    if (end < 0) return;
    const head = this.buf.subarray(0, end).toString('latin1');
    const m = /\r\ncontent-length: *(\d+)/i.exec(head);
    const len = m ? Number(m[1]) : 0;
    if (this.buf.length < end + 4 + len) return;
    const body = this.buf.subarray(end + 4, end + 4 + len).toString();
    this.buf = this.buf.subarray(end + 4 + len);
    const w = this.waiter;
    this.waiter = null;
    w({ status: Number(head.slice(9, 12)), body });
  }

  request(raw) {
    return new Promise((resolve) => {
      this.waiter = resolve;
      this.sock.write(raw);
    });
  }
}

function rollup(pid) {
  const out = {};
  for (const line of fs.readFileSync(`/proc/${pid}/smaps_rollup`, 'utf8').split('\n')) {
    const m = /^(\w+):\s+(\d+) kB/.exec(line);
    if (m) out[m[1]] = Number(m[2]);
  }
  return out;
}

const pct = (xs, p) => {
  const s = [...xs].sort((a, b) => a - b);
  return s[Math.min(s.length - 1, Math.max(0, Math.ceil((p / 100) * s.length) - 1))];
};
const median = (xs) => pct(xs, 50);

async function main() {
  const { variants, instances, calls, idle } = parseArgs();
  const scratch = fs.mkdtempSync(path.join(os.tmpdir(), 'nodemem-'));
  const children = [];
  try {
    for (let i = 0; i < instances; i++) {
      for (const v of variants) {
        const home = fs.mkdtempSync(path.join(scratch, 'home-'));
        const inst = await start(v, home);
        children.push(inst.child);
        const fn = path.join(home, `fn${i}.js`);
        fs.writeFileSync(fn, `module.exports = async function () {\n  return { status: 200, body: "Hello, world! ${i}\\n" };\n};\n`);
        const conn = new Conn(inst.port);
        await conn.open();
        const body = JSON.stringify({ filepath: fn, functionName: '', url: '', FunctionMetadata: { name: `f${i}` }, envVersion: 3 });
        const t0 = process.hrtime.bigint();
        const r = await conn.request(
          `POST /v2/specialize HTTP/1.1\r\nHost: b\r\nContent-Type: application/json\r\nContent-Length: ${Buffer.byteLength(body)}\r\n\r\n${body}`,
        );
        if (r.status !== 202) fail(`${v.label}: specialize answered ${r.status} ${r.body}`);
        const get = 'GET / HTTP/1.1\r\nHost: b\r\n\r\n';
        const first = await conn.request(get);
        const specMs = Number(process.hrtime.bigint() - t0) / 1e6;
        if (first.body !== `Hello, world! ${i}\n`) fail(`${v.label}: unexpected answer ${JSON.stringify(first.body)}`);
        v.inst.push({ pid: inst.child.pid, conn, specMs, lat: [], idleCall: 0, mem: null });
      }
    }
    // Calls, interleaved by blocks.
    const get = 'GET / HTTP/1.1\r\nHost: b\r\n\r\n';
    for (const v of variants) for (const k of v.inst) for (let j = 0; j < 200; j++) await k.conn.request(get);
    const blocks = 10;
    for (let b = 0; b < blocks; b++) {
      for (const v of variants) {
        for (const k of v.inst) {
          for (let j = 0; j < calls / blocks; j++) {
            const t = process.hrtime.bigint();
            await k.conn.request(get);
            k.lat.push(Number(process.hrtime.bigint() - t) / 1e3);
          }
        }
      }
    }
    // Idle, then memory, then the next call of an idle instance.
    await new Promise((r) => setTimeout(r, idle * 1000));
    for (const v of variants) for (const k of v.inst) k.mem = rollup(k.pid);
    for (const v of variants) {
      for (const k of v.inst) {
        const t = process.hrtime.bigint();
        await k.conn.request(get);
        k.idleCall = Number(process.hrtime.bigint() - t) / 1e3;
      }
    }
  } finally {
    for (const c of children) c.kill('SIGKILL');
    fs.rmSync(scratch, { recursive: true, force: true });
  }
  const cols = variants.map((v) => v.label);
  console.log(`node ${process.version}; ${instances} instances per variant, ${calls} calls each, then ${idle} s idle`);
  console.log('variant flags:');
  for (const v of variants) {
    const tokens = [...Object.entries(v.env).map(([k, x]) => `${k}=${x}`), ...v.flags];
    if (v.server !== SERVER) tokens.push(`server=${v.server}`);
    console.log(`  ${v.label}: ${tokens.join(' ') || '(none)'}`);
  }
  const row = (name, f, digits = 0) =>
    console.log(name.padEnd(40) + variants.map((v) => f(v).toFixed(digits).padStart(14)).join(''));
  console.log(''.padEnd(40) + cols.map((c) => c.padStart(14)).join(''));
  const memMed = (key) => (v) => median(v.inst.map((k) => k.mem[key] || 0)) / 1024;
  row('idle Pss_Anon, MiB (median)', memMed('Pss_Anon'), 1);
  row('idle Pss, MiB (median)', memMed('Pss'), 1);
  row('idle Rss, MiB (median)', memMed('Rss'), 1);
  row('specialize + first call, ms (median)', (v) => median(v.inst.map((k) => k.specMs)), 2);
  row('warm call p50, µs', (v) => pct(v.inst.flatMap((k) => k.lat), 50));
  row('warm call p99, µs', (v) => pct(v.inst.flatMap((k) => k.lat), 99));
  row('next call after the idle time, µs (median)', (v) => median(v.inst.map((k) => k.idleCall)));
}

main().catch((err) => fail(err.stack || String(err)));
