'use strict';
// fission-rs Node.js runtime ("environment").
//
// Speaks Fission's node-env contract: a generic instance starts warm (Express
// loaded, socket listening), is specialized exactly once with
// POST /v2/specialize (or the v1 POST /specialize), and from then on every
// request is handed to the loaded user function.  See ../README.md.

const fs = require('fs');
const path = require('path');
const { pathToFileURL } = require('url');
const { performance } = require('perf_hooks');

// Heavy imports happen before we start serving so a generic instance is warm.
const http = require('http');
const express = require('express');

// ---------------------------------------------------------------------------
// Configuration
// ---------------------------------------------------------------------------

function argValue(name) {
  const argv = process.argv.slice(2);
  for (let i = 0; i < argv.length; i++) {
    const a = argv[i];
    if (a === `--${name}`) return argv[i + 1];
    if (a.startsWith(`--${name}=`)) return a.slice(name.length + 3);
  }
  return undefined;
}

const LISTEN_FD = process.env.FISSION_LISTEN_FD;
const PORT = Number(argValue('port') || process.env.RUNTIME_PORT || process.env.PORT || 8888);
const HOST = process.env.HOST || '127.0.0.1';
const CODEPATH = argValue('codepath') || process.env.FISSION_CODEPATH || '/userfunc/user';
const BODY_PARSER_LIMIT = process.env.BODY_PARSER_LIMIT || '1mb';
// Idle keep-alive timeout for client connections, in seconds.  Longer than
// the usual client pool idle timeouts (90 s) so the proxy in front of us is
// the side that closes idle connections.
const KEEPALIVE_TIMEOUT_MS = Math.round(Number(process.env.KEEPALIVE_TIMEOUT || 120) * 1000);
// FAST_PATH=0 sends every request through Express (see "Fast path"): for tests and diagnosis.
const FAST_PATH = !['0', 'false', 'off', 'no'].includes(String(process.env.FAST_PATH || '').toLowerCase());

const EXTENSIONS = ['.js', '.mjs', '.cjs'];

// ---------------------------------------------------------------------------
// Errors
// ---------------------------------------------------------------------------

// An error whose message is already the complete, user-facing explanation.
class LoadError extends Error {
  constructor(message) {
    super(message);
    this.name = 'LoadError';
  }
}

function isFile(p) {
  try {
    return fs.statSync(p).isFile();
  } catch (_) {
    return false;
  }
}

function isDir(p) {
  try {
    return fs.statSync(p).isDirectory();
  } catch (_) {
    return false;
  }
}

function displayPath(p, root) {
  if (!p) return p;
  if (p.startsWith('file://')) {
    try {
      p = require('url').fileURLToPath(p);
    } catch (_) {
      /* keep as is */
    }
  }
  if (root) {
    const base = isDir(root) ? root : path.dirname(root);
    const rel = path.relative(base, p);
    if (rel && !rel.startsWith('..') && !path.isAbsolute(rel)) return rel;
  }
  return p;
}

// Turns an error thrown while loading user code into a readable one-liner
// (plus the code frame for syntax errors), e.g.
//   SyntaxError: Unexpected token ')' (hello.js:3)
function describeLoadError(err, root) {
  if (err instanceof LoadError) return err.message;
  if (!(err instanceof Error)) return `non-error thrown while loading: ${String(err)}`;
  // "Cannot find module 'x'\nRequire stack:\n- ..." -> first line only.
  const message = String(err.message).split('\nRequire stack:')[0];
  const head = `${err.name || 'Error'}: ${message}`;
  const stack = String(err.stack || '');
  if (err instanceof SyntaxError) {
    // V8 prefixes the stack of compile errors with "file:line\ncode\n  ^^^\n\n".
    let located = stack;
    if (!/^(?:file:\/\/)?\/[^\n]*?:\d+\n/.test(located) && err.loadingFile) {
      located = locateSyntaxError(err.loadingFile) || stack;
    }
    const m = /^((?:file:\/\/)?\/[^\n]*?):(\d+)\n/.exec(located);
    if (m) {
      const frame = located
        .slice(m[0].length)
        .split(/\n\s*\n/)[0]
        .split('\n')
        .filter((l) => l.trim() && !l.startsWith(`${err.name}:`));
      const code = frame.length ? '\n' + frame.map((l) => `    ${l}`).join('\n') : '';
      return `${head} (${displayPath(m[1], root)}:${m[2]})${code}`;
    }
  }
  // Otherwise point at the first stack frame inside the user's code.
  const base = root && (isDir(root) ? root : path.dirname(root));
  if (base) {
    const frames = stack.split('\n').slice(1);
    for (const frame of frames) {
      const fm = /\(?((?:file:\/\/)?\/[^():]+):(\d+):(\d+)\)?\s*$/.exec(frame);
      if (!fm) continue;
      let file = fm[1];
      if (file.startsWith('file://')) file = require('url').fileURLToPath(file);
      if (file.startsWith(base + path.sep) || file === root) {
        if (file.includes(`${path.sep}node_modules${path.sep}`)) continue;
        return `${head} (at ${displayPath(file, root)}:${fm[2]})`;
      }
    }
  }
  return head;
}

// ---------------------------------------------------------------------------
// Loading user code
// ---------------------------------------------------------------------------

function shouldRetryAsImport(err) {
  if (!err) return false;
  if (err.code === 'ERR_REQUIRE_ESM' || err.code === 'ERR_REQUIRE_ASYNC_MODULE') return true;
  if (err instanceof SyntaxError) {
    return /\b(import|export)\b|import\.meta|top-level await|await is only valid/.test(err.message);
  }
  return false;
}

// Loads a module from an absolute file path: require() first (CommonJS, and
// ES modules through require(esm)), dynamic import() as the fallback for
// what require cannot do (e.g. ES modules with top-level await).
async function loadModule(file) {
  try {
    try {
      return require(file);
    } catch (err) {
      if (!shouldRetryAsImport(err)) throw err;
      return await import(pathToFileURL(file).href);
    }
  } catch (err) {
    if (err && typeof err === 'object' && !err.loadingFile) err.loadingFile = file;
    throw err;
  }
}

// V8 gives ES-module syntax errors no location; `node --check` prints it
// ("file:line\ncode\n  ^\n\nSyntaxError: ...").  Only used on the error path.
function locateSyntaxError(file) {
  // Ambiguous .js files pass a plain --check when they fail both as CommonJS
  // and as ESM; checking them as ESM explicitly finds the location.
  const attempts = [['--check', file], ['--experimental-default-type=module', '--check', file]];
  for (const args of attempts) {
    try {
      require('child_process').execFileSync(process.execPath, args, {
        stdio: ['ignore', 'ignore', 'pipe'],
        timeout: 5000,
        env: {},
      });
    } catch (err) {
      const stderr = err && err.stderr ? err.stderr.toString('utf8') : '';
      if (/^(?:file:\/\/)?\/[^\n]*?:\d+\n/.test(stderr)) return stderr;
    }
  }
  return null;
}

// Resolves a path (without or with extension) to a file, trying the usual
// extensions and, for directories, the directory's entry file.
function resolveFile(p) {
  if (isFile(p)) return p;
  for (const ext of EXTENSIONS) {
    if (isFile(p + ext)) return p + ext;
  }
  if (isDir(p)) return resolveDirEntry(p);
  return null;
}

// Entry file of a directory: package.json "main", else index.{js,mjs,cjs},
// else the only .js/.mjs/.cjs file in it.
function resolveDirEntry(dir) {
  const pkgPath = path.join(dir, 'package.json');
  if (isFile(pkgPath)) {
    let pkg;
    try {
      pkg = JSON.parse(fs.readFileSync(pkgPath, 'utf8'));
    } catch (err) {
      throw new LoadError(`cannot parse ${displayPath(pkgPath, dir)}: ${err.message}`);
    }
    if (pkg && typeof pkg.main === 'string' && pkg.main) {
      const main = path.resolve(dir, pkg.main);
      const f = isDir(main) ? resolveDirEntryNoPkg(main) : resolveFile(main);
      if (!f) {
        throw new LoadError(
          `package.json "main" is "${pkg.main}" but no such file exists in ${dir}`,
        );
      }
      return f;
    }
  }
  return resolveDirEntryNoPkg(dir);
}

function resolveDirEntryNoPkg(dir) {
  for (const ext of EXTENSIONS) {
    const f = path.join(dir, 'index' + ext);
    if (isFile(f)) return f;
  }
  let entries = [];
  try {
    entries = fs.readdirSync(dir);
  } catch (_) {
    return null;
  }
  const candidates = entries.filter((n) => EXTENSIONS.includes(path.extname(n)) && isFile(path.join(dir, n)));
  if (candidates.length === 1) return path.join(dir, candidates[0]);
  return null;
}

function exportNames(mod) {
  if (mod === null || mod === undefined) return [];
  if (typeof mod !== 'object' && typeof mod !== 'function') return [];
  const names = new Set(Object.keys(mod).filter((k) => k !== '__esModule'));
  if (mod.default && typeof mod.default === 'object') {
    for (const k of Object.keys(mod.default)) names.add(`default.${k}`);
  }
  return [...names];
}

function listExports(mod) {
  const names = exportNames(mod);
  if (names.length) return names.join(', ');
  return typeof mod === 'function' ? 'only a function as module.exports' : 'none';
}

// The "default export": CommonJS module.exports, or an ES module's default.
function defaultExport(mod) {
  if (typeof mod === 'function') return mod;
  if (mod && (typeof mod === 'object') && 'default' in mod) {
    // ES module namespace (import / require(esm)), or transpiled CommonJS
    // (exports.default = fn).
    return mod.default;
  }
  return mod;
}

function hasOwn(obj, name) {
  return obj !== null && obj !== undefined && Object.prototype.hasOwnProperty.call(Object(obj), name);
}

// Own properties every function has; never treated as exports.
const FUNCTION_BUILTINS = new Set(['name', 'length', 'prototype', 'arguments', 'caller']);

function exportOf(obj, name) {
  if (!hasOwn(obj, name)) return undefined;
  if (typeof obj === 'function' && FUNCTION_BUILTINS.has(name)) return undefined;
  return obj[name];
}

function namedExport(mod, name) {
  const direct = exportOf(mod, name);
  if (direct !== undefined) return direct;
  const def = mod && mod.default;
  if (typeof def === 'object' || typeof def === 'function') return exportOf(def, name);
  return undefined;
}

function kindOf(v) {
  if (v === null) return 'null';
  if (Array.isArray(v)) return 'an array';
  return typeof v === 'object' ? 'an object' : typeof v;
}

// Resolves a LoadReq (filepath + functionName) to the user function.
async function loadUserFunction(filepath, functionName) {
  functionName = (functionName || '').trim();
  if (!filepath) throw new LoadError('specialize request has no "filepath"');
  filepath = path.resolve(filepath);
  if (!fs.existsSync(filepath)) {
    // v1 code paths may omit the extension (/userfunc/user -> user.js).
    const withExt = EXTENSIONS.map((e) => filepath + e).find(isFile);
    if (!withExt) throw new LoadError(`code path ${filepath} does not exist`);
    filepath = withExt;
  }
  const root = filepath;
  const rootIsFile = isFile(filepath);

  // Chooses [file, exportName|null].
  let file;
  let func = null;
  let fallbackDefault = false;
  if (rootIsFile) {
    file = filepath;
    if (functionName) {
      const dot = functionName.lastIndexOf('.');
      // A single file: "func" and "anything.func" name an export of it.
      // "func" that is no export of the file names the file itself.
      func = dot >= 0 ? functionName.slice(dot + 1) : functionName;
      fallbackDefault = dot < 0;
    }
  } else if (!functionName) {
    file = resolveDirEntry(filepath);
    if (!file) {
      throw new LoadError(
        `no entrypoint found in ${filepath}: expected package.json "main", index.js/index.mjs/index.cjs, ` +
          `or a single .js/.mjs/.cjs file; set the function's entrypoint (e.g. "hello" or "hello.handler")`,
      );
    }
  } else {
    const exact = path.resolve(filepath, functionName);
    if (functionName.includes('.') && isFile(exact) && EXTENSIONS.includes(path.extname(exact))) {
      file = exact; // "hello.js" names a file
    } else {
      const dot = functionName.lastIndexOf('.');
      const modName = dot >= 0 ? functionName.slice(0, dot) : functionName;
      func = dot >= 0 ? functionName.slice(dot + 1) : null;
      if (!modName) throw new LoadError(`invalid entrypoint "${functionName}": empty module name`);
      if (dot >= 0 && !func) throw new LoadError(`invalid entrypoint "${functionName}": empty export name`);
      file = resolveFile(path.resolve(filepath, modName));
      if (!file && dot < 0) {
        // Lenient: "handler" may also be an export of the directory's entry file.
        const entry = resolveDirEntry(filepath);
        if (entry) {
          const mod = await loadModule(entry);
          const fn = namedExport(mod, functionName);
          if (typeof fn === 'function') return { fn, file: entry, exportName: functionName };
        }
      }
      if (!file) {
        throw new LoadError(
          `entrypoint "${functionName}": no module "${modName}" in ${filepath} ` +
            `(looked for ${modName}, ${EXTENSIONS.map((e) => modName + e).join(', ')} and ${modName}/index.js)`,
        );
      }
    }
  }

  const mod = await loadModule(file);
  const shown = displayPath(file, rootIsFile ? path.dirname(root) : root);
  let fn;
  let exportName = 'default export';
  if (func) {
    fn = namedExport(mod, func);
    if (fn === undefined && fallbackDefault) {
      fn = defaultExport(mod);
    } else {
      exportName = `export "${func}"`;
      if (fn === undefined) {
        throw new LoadError(`module ${shown} has no export "${func}" (exports: ${listExports(mod)})`);
      }
    }
  } else {
    fn = defaultExport(mod);
  }
  if (typeof fn !== 'function') {
    const hint =
      exportName === 'default export'
        ? ` (exports: ${listExports(mod)}); use module.exports = async function (context) {...} or ` +
          'export default, or name an export in the entrypoint ("file.func")'
        : '';
    throw new LoadError(`${exportName} of ${shown} is ${kindOf(fn)}, not a function${hint}`);
  }
  return { fn, file, exportName };
}

// ---------------------------------------------------------------------------
// Invocation
// ---------------------------------------------------------------------------

function logFunctionError(err) {
  console.error(`Function error: ${err && err.stack ? err.stack : String(err)}`);
}

function failRequest(res, err) {
  logFunctionError(err);
  if (!res.headersSent) {
    res.status(500).type('text/plain').send('Internal server error');
  } else if (!res.writableEnded) {
    res.end();
  }
}

// Express's res.send of a string costs a call about as much as the rest of the runtime
// (bench/bench.js). For the common case it reduces to four headers and an end, so that case
// is written out here with the same result — the same Content-Type, Content-Length and ETag
// (from the app's own 'etag fn') — and every other case still goes through res.send:
// a Content-Type or ETag the function set, HEAD, a conditional request (304 handling), and
// the statuses send rewrites (204, 205, 304).
function plainStringSend(res) {
  const req = res.req;
  const status = res.statusCode;
  return (
    req !== undefined &&
    req.method !== 'HEAD' &&
    req.headers['if-none-match'] === undefined &&
    req.headers['if-modified-since'] === undefined &&
    status !== 204 &&
    status !== 205 &&
    status !== 304 &&
    !res.hasHeader('content-type') &&
    !res.hasHeader('etag')
  );
}

function sendString(res, body) {
  res.setHeader('Content-Type', 'text/html; charset=utf-8');
  const etagFn = res.app.get('etag fn');
  if (typeof etagFn === 'function') {
    const buf = Buffer.from(body, 'utf8');
    res.setHeader('Content-Length', buf.length);
    const tag = etagFn(buf);
    if (tag) res.setHeader('ETag', tag);
    res.end(buf);
  } else {
    res.setHeader('Content-Length', Buffer.byteLength(body, 'utf8'));
    res.end(body, 'utf8');
  }
}

function sendResult(res, result) {
  const { status, body, headers } = result;
  if (headers && typeof headers === 'object') {
    for (const name of Object.keys(headers)) {
      if (headers[name] !== undefined && headers[name] !== null) res.set(name, headers[name]);
    }
  }
  res.status(status ? Number(status) : 200);
  if (body === undefined || body === null) {
    res.end();
  } else if (typeof body.pipe === 'function') {
    body.on('error', (err) => failRequest(res, err));
    body.pipe(res);
  } else if (FAST_PATH && typeof body === 'string' && plainStringSend(res)) {
    sendString(res, body);
  } else if (typeof body === 'string' || Buffer.isBuffer(body) || typeof body === 'object') {
    res.send(body);
  } else {
    res.send(String(body));
  }
}

function invoke(fn, req, res) {
  const context = { request: req, response: res };
  if (fn.length >= 2) {
    let called = false;
    const callback = (status, body, headers) => {
      if (called) return;
      called = true;
      if (res.headersSent) return;
      try {
        sendResult(res, { status, body, headers });
      } catch (err) {
        failRequest(res, err);
      }
    };
    try {
      const rv = fn(context, callback);
      if (rv && typeof rv.then === 'function') {
        rv.then(undefined, (err) => {
          if (!called) {
            called = true;
            failRequest(res, err);
          } else {
            logFunctionError(err);
          }
        });
      }
    } catch (err) {
      called = true;
      failRequest(res, err);
    }
    return;
  }
  let rv;
  try {
    rv = fn(context);
  } catch (err) {
    failRequest(res, err);
    return;
  }
  Promise.resolve(rv).then(
    (result) => {
      if (res.headersSent || res.writableEnded) return; // the function answered itself
      if (result === null || typeof result !== 'object') {
        throw new TypeError(
          `function returned ${result === undefined ? 'undefined' : kindOf(result)}; ` +
            'expected an object {status, body, headers} (or write to context.response)',
        );
      }
      sendResult(res, result);
    },
  ).catch((err) => failRequest(res, err));
}

// ---------------------------------------------------------------------------
// HTTP server
// ---------------------------------------------------------------------------

let userFunction = null;
let specializing = false;

const app = express();

// The specialize endpoints read their own body (whatever its Content-Type),
// so they are registered before the user-facing body parsers.
const rawBody = express.raw({ type: () => true, limit: '1mb' });

app.post('/v2/specialize', rawBody, (req, res) => {
  let loadReq;
  try {
    loadReq = parseLoadRequest(req.body);
  } catch (err) {
    res.status(400).type('text/plain').send(`invalid specialize request: ${err.message}\n`);
    return;
  }
  specializeWith(req, res, loadReq.filepath, loadReq.functionName, 'v2');
});

app.post('/specialize', rawBody, (req, res) => {
  specializeWith(req, res, CODEPATH, '', 'v1');
});

// The user-facing body parsers, in order; the fast path (below) runs the same ones.
const BODY_PARSERS = [
  express.urlencoded({ extended: false, limit: BODY_PARSER_LIMIT }),
  express.json({ limit: BODY_PARSER_LIMIT }),
  express.raw({ type: 'application/octet-stream', limit: BODY_PARSER_LIMIT }),
  express.text({ type: 'text/*', limit: BODY_PARSER_LIMIT }),
];
for (const parser of BODY_PARSERS) app.use(parser);

app.get('/healthz', (req, res) => {
  res.status(200).end();
});

// The LoadReq JSON object from the raw request body.
function parseLoadRequest(body) {
  const text = Buffer.isBuffer(body) ? body.toString('utf8') : '';
  if (!text.trim()) return {};
  const obj = JSON.parse(text);
  if (!obj || typeof obj !== 'object' || Array.isArray(obj)) {
    throw new Error('expected a JSON object');
  }
  return obj;
}

async function specializeWith(req, res, filepath, functionName, label) {
  // The warm-up's own load (see "Warm-up") goes through the same code but
  // keeps its function apart: it never makes the instance specialized.
  const warm = isWarmup(req);
  if (!warm && (userFunction || specializing)) {
    res.status(400).type('text/plain').send('Not a generic container');
    return;
  }
  if (!warm) specializing = true;
  const started = performance.now();
  try {
    const { fn, file, exportName } = await loadUserFunction(filepath, functionName);
    const ms = (performance.now() - started).toFixed(1);
    if (warm) {
      warmup.fn = fn;
    } else {
      userFunction = fn;
      console.log(`specialized (${label}): ${exportName} of ${file} in ${ms} ms`);
    }
    res.status(202).end();
  } catch (err) {
    const msg = `user code load error: ${describeLoadError(err, path.resolve(filepath || '.'))}`;
    if (warm) {
      warmup.error = msg;
    } else {
      console.error(msg);
      if (!(err instanceof LoadError) && err && err.stack) console.error(err.stack);
    }
    res.status(500).type('text/plain').send(msg + '\n');
  } finally {
    if (!warm) specializing = false;
  }
}

app.all('*', (req, res) => {
  const fn = isWarmup(req) ? warmup.fn : userFunction;
  if (!fn) {
    res.status(500).type('text/plain').send('Generic container: no requests supported');
    return;
  }
  invoke(fn, req, res);
});

// Body-parser errors (413 too large, 400 bad JSON, 415 bad charset) and
// anything else Express catches: plain text, never a stack trace.
// eslint-disable-next-line no-unused-vars
function errorHandler(err, req, res, next) {
  const status = Number(err.status || err.statusCode) || 500;
  if (status >= 500) logFunctionError(err);
  if (res.headersSent) {
    res.end();
    return;
  }
  const text = err.expose && err.message ? err.message : http.STATUS_CODES[status] || 'Error';
  res.status(status).type('text/plain').send(text);
}
app.use(errorHandler);

// User code must not take the runtime down: log and keep serving, like
// Fission's node-env.
process.on('uncaughtException', (err) => logFunctionError(err));
process.on('unhandledRejection', (err) => logFunctionError(err));
process.on('SIGTERM', () => process.exit(0));
process.on('SIGINT', () => process.exit(0));

// ---------------------------------------------------------------------------
// Fast path
// ---------------------------------------------------------------------------
//
// Through Express, a call runs ~10 router layers (init, query, the specialize routes, four
// body parsers, healthz, the catch-all), each matching the path, plus a setPrototypeOf of the
// request and the response; that is most of the runtime's cost of a call (bench/bench.js).
// A call of the user function needs only what those layers give it, so calls are served
// straight from the http server, with the same result:
// - requests and responses are created with Express's API: http builds them from classes
//   that inherit app.request / app.response, so nothing is re-prototyped per call;
// - what Express's layers set is set alike: X-Powered-By, req.res/res.req, req.next,
//   res.locals, req.originalUrl, req.baseUrl, req.params ({0: path}, as the catch-all route
//   gives); req.query is parsed by Express's own query parser, on first use;
// - a request with a body goes through the same four body-parser instances, errors through
//   the same error handler; a request without one gets req.body = {} as they would set.
// Express itself still serves a generic instance, the runtime's own paths (any spelling
// Express would route: any case, a trailing slash) and a path it would refuse to decode.

class FissionRequest extends http.IncomingMessage {}
Object.setPrototypeOf(FissionRequest.prototype, app.request);
class FissionResponse extends http.ServerResponse {}
Object.setPrototypeOf(FissionResponse.prototype, app.response);

// Express's own URL parser (cached per request) and query parser (the 'query parser' setting).
const parseurl = require(require.resolve('parseurl', { paths: [path.dirname(require.resolve('express'))] }));
const queryParser = app.get('query parser fn');
const kQuery = Symbol('query');
// Lazy, and assignable. On app.request, which Express's own path re-prototypes requests to
// (after its query layer has read, and so parsed, it), so both paths share it.
Object.defineProperty(app.request, 'query', {
  configurable: true,
  enumerable: true,
  get() {
    let q = this[kQuery];
    if (q === undefined) {
      q = queryParser(parseurl(this).query);
      this[kQuery] = q;
    }
    return q;
  },
  set(value) {
    this[kQuery] = value;
  },
});

const RUNTIME_PATHS = new Set(['/v2/specialize', '/specialize', '/healthz']);
const POWERED_BY = app.enabled('x-powered-by');

function expressNext(req, res) {
  return (err) => {
    if (err) errorHandler(err, req, res);
  };
}

function runBodyParsers(req, res, i, fn) {
  if (i === BODY_PARSERS.length) {
    invoke(fn, req, res);
    return;
  }
  BODY_PARSERS[i](req, res, (err) => {
    if (err) errorHandler(err, req, res);
    else runBodyParsers(req, res, i + 1, fn);
  });
}

function serveRequest(req, res) {
  const fn = isWarmup(req) ? warmup.fn : userFunction;
  if (fn === null || !FAST_PATH) {
    app(req, res);
    return;
  }
  const pathname = parseurl(req).pathname;
  let key = pathname.length > 1 && pathname.endsWith('/') ? pathname.slice(0, -1) : pathname;
  if (key.length <= 15) key = key.toLowerCase(); // longer ones are none of RUNTIME_PATHS
  let param = pathname;
  if (pathname.includes('%')) {
    try {
      param = decodeURIComponent(pathname);
    } catch (_) {
      param = null;
    }
  }
  if (param === null || RUNTIME_PATHS.has(key)) {
    app(req, res);
    return;
  }
  if (POWERED_BY) res.setHeader('X-Powered-By', 'Express');
  req.res = res;
  res.req = req;
  req.next = expressNext(req, res);
  res.locals = Object.create(null);
  req.originalUrl = req.url;
  req.baseUrl = '';
  req.params = { 0: param };
  // type-is's hasBody: body-parser skips a request without one, after setting req.body = {}.
  if (req.headers['transfer-encoding'] === undefined && isNaN(req.headers['content-length'])) {
    req.body = {};
    invoke(fn, req, res);
  } else {
    runBodyParsers(req, res, 0, fn);
  }
}

const server = http.createServer({ IncomingMessage: FissionRequest, ServerResponse: FissionResponse }, serveRequest);
server.keepAliveTimeout = KEEPALIVE_TIMEOUT_MS;
server.headersTimeout = KEEPALIVE_TIMEOUT_MS + 1000;

server.on('error', (err) => {
  console.error(`runtime server error: ${err.stack || err}`);
  process.exit(1);
});

// ---------------------------------------------------------------------------
// WebSockets
// ---------------------------------------------------------------------------
//
// As in Fission's node env: an upgrade request on any path opens a `ws` socket
// and the user function is called as fn(ws, clients), where clients is the
// live set of this instance's open sockets (so a function can broadcast).
// Every TIMEOUT ms each socket is pinged; one that did not answer the previous
// ping is terminated, so dead peers do not keep the instance busy.  The router
// holds the instance for as long as the upgraded connection stays open.

const { WebSocketServer } = require('ws');

const WS_TIMEOUT_MS = Number(process.env.TIMEOUT) > 0 ? Number(process.env.TIMEOUT) : 60000;
const wss = new WebSocketServer({ noServer: true, clientTracking: true });
const kAlive = Symbol('answered the last ping');

function refuseUpgrade(socket, status, text) {
  const body = Buffer.from(text);
  socket.end(
    `HTTP/1.1 ${status} ${http.STATUS_CODES[status]}\r\nContent-Type: text/plain\r\n` +
      `Content-Length: ${body.length}\r\nConnection: close\r\n\r\n${text}`,
  );
}

server.on('upgrade', (req, socket, head) => {
  socket.on('error', () => socket.destroy());
  if (userFunction === null) {
    refuseUpgrade(socket, 500, 'Generic container: no requests supported');
    return;
  }
  // handleUpgrade answers 400/426 itself for a request that is no websocket handshake.
  wss.handleUpgrade(req, socket, head, (ws) => wss.emit('connection', ws, req));
});

wss.on('connection', (ws) => {
  ws[kAlive] = true;
  ws.on('pong', () => {
    ws[kAlive] = true;
  });
  ws.on('error', (err) => logFunctionError(err));
  const closeOnError = (err) => {
    logFunctionError(err);
    ws.close(1011, 'Internal server error');
  };
  try {
    const result = userFunction(ws, wss.clients);
    if (result && typeof result.then === 'function') result.then(undefined, closeOnError);
  } catch (err) {
    closeOnError(err);
  }
});

const wsLiveness = setInterval(() => {
  for (const ws of wss.clients) {
    if (!ws[kAlive]) {
      ws.terminate();
      continue;
    }
    ws[kAlive] = false;
    ws.ping();
  }
}, WS_TIMEOUT_MS);
wsLiveness.unref();

// ---------------------------------------------------------------------------
// Warm-up
// ---------------------------------------------------------------------------
//
// A fresh process pays for one-time work on its first specialize request and
// first call that has nothing to do with the user's code: V8 compiling the
// functions of net, http, Express and body-parser on first use, iconv-lite
// loading its encoding tables for the first text or JSON body, ICU looking up
// the local time zone for the first Date header.  Measured: ~10 ms of a
// ~14 ms specialize + first call, ~5 ms more for a first JSON body.
//
// So right after listening, an idle instance sends itself the requests a
// cold start makes, over a loopback connection of its own: a v2 specialize
// request that loads warmup.js, then calls of it with each body type the
// parsers handle.  They are told apart by their socket, and the function they
// load is kept apart from userFunction, so the instance stays generic and a
// real specialize request may arrive at any moment.  When one does (a request
// that found no warm instance and waited for this one to start), the rest of
// the warm-up is skipped: that request goes first, at the old cost.
// Listening first keeps the start-up time unchanged.

const WARMUP_MODULE = path.join(__dirname, 'warmup.js');
const WARMUP_TIMEOUT_MS = 2000;
// Marks the server side of the warm-up connection.
const kWarmup = Symbol('fission-rs warm-up connection');
// fn / error: what the warm-up's specialize request loaded or why it failed.
const warmup = { fn: null, error: null, cancelled: false };

function isWarmup(req) {
  return req.socket != null && req.socket[kWarmup] === true;
}

function warmupRequests() {
  const raw = (method, url, type, body) => {
    const len = Buffer.byteLength(body);
    const ct = type ? `Content-Type: ${type}\r\n` : '';
    return Buffer.from(`${method} ${url} HTTP/1.1\r\nHost: warmup\r\n${ct}Content-Length: ${len}\r\n\r\n${body}`);
  };
  const load = { filepath: WARMUP_MODULE, functionName: '', url: '', FunctionMetadata: {}, envVersion: 3 };
  return [
    raw('POST', '/v2/specialize', 'application/json', JSON.stringify(load)),
    raw('GET', '/', null, ''),
    raw('POST', '/?warm=1', 'application/json', '{"warm":true}'),
    raw('POST', '/', 'text/plain; charset=utf-8', 'warm'),
    raw('POST', '/', 'application/x-www-form-urlencoded', 'warm=1'),
    raw('POST', '/', 'application/octet-stream', 'warm'),
  ];
}

// The warm-up connection: real loopback TCP, so that accepting, the native
// parser feed and socket writes are compiled too; an in-memory stream where
// no loopback socket can be had.  Calls onReady(send) once the server side is
// attached to the HTTP server; returns close(), which tears down whatever
// exists by then.
function warmupConnection(onReady) {
  const net = require('net');
  const open = [];
  let tmp = null;
  let ready = false;
  const attach = (conn, send) => {
    ready = true;
    conn[kWarmup] = true;
    open.push(conn);
    server.emit('connection', conn);
    onReady(send);
  };
  const close = () => {
    for (const s of open) s.destroy();
    if (tmp && tmp.listening) tmp.close();
  };
  const inMemory = () => {
    if (ready) return; // an error after the TCP connection was attached
    if (tmp && tmp.listening) tmp.close();
    const { Duplex } = require('stream');
    // Without a handle, http feeds its parser from 'data' events; answers
    // are dropped.
    const conn = new Duplex({
      read() {},
      write(chunk, encoding, cb) {
        cb();
      },
    });
    conn.remoteAddress = '127.0.0.1';
    attach(conn, (b) => conn.push(b));
  };
  tmp = net.createServer({ noDelay: true });
  tmp.once('error', inMemory);
  tmp.once('connection', (sock) => {
    tmp.close(); // no further connections
    attach(sock, (b) => client.write(b));
  });
  let client = null;
  tmp.listen(0, '127.0.0.1', () => {
    client = net.connect({ port: tmp.address().port, host: '127.0.0.1', noDelay: true });
    open.push(client);
    client.on('error', inMemory);
    client.resume(); // answers are dropped
  });
  return close;
}

// Runs the warm-up; calls back (once) with an error message when it could not
// complete, or null.
function warmUp(callback) {
  const requests = warmupRequests();
  let send = null;
  let done = false;
  const finish = (error) => {
    if (done) return;
    done = true;
    clearTimeout(timer);
    server.removeListener('request', onRequest);
    close();
    warmup.fn = null;
    delete require.cache[WARMUP_MODULE];
    callback(error);
  };
  // One request at a time: a pipelined call would reach the function before
  // the specialize request finished loading it.
  const sendNext = () => {
    const next = requests.shift();
    if (next === undefined || warmup.cancelled) finish(warmup.error);
    else send(next);
  };
  const onRequest = (req, res) => {
    if (isWarmup(req)) res.once('finish', () => setImmediate(sendNext));
  };
  const timer = setTimeout(() => finish(`no answer within ${WARMUP_TIMEOUT_MS} ms`), WARMUP_TIMEOUT_MS);
  server.on('request', onRequest);
  const close = warmupConnection((s) => {
    send = s;
    if (!done) sendNext();
  });
}

function onListening() {
  const addr = server.address();
  const where = addr && typeof addr === 'object' ? `${addr.address}:${addr.port}` : String(addr);
  console.log(`fission-rs nodejs runtime listening on ${where}${LISTEN_FD ? ` (fd ${LISTEN_FD})` : ''}`);
  // A connection that was already waiting is accepted before this runs and
  // cancels the warm-up.
  setImmediate(() => {
    if (warmup.cancelled) return;
    const started = performance.now();
    warmUp((error) => {
      if (warmup.cancelled) return;
      if (error) console.error(`runtime warm-up incomplete: ${error}`);
      else console.log(`runtime warmed up in ${(performance.now() - started).toFixed(1)} ms`);
    });
  });
}

server.on('connection', (sock) => {
  if (sock[kWarmup] !== true) warmup.cancelled = true;
});

if (LISTEN_FD !== undefined && LISTEN_FD !== '') {
  const fd = Number(LISTEN_FD);
  if (!Number.isInteger(fd) || fd < 0) {
    console.error(`invalid FISSION_LISTEN_FD: ${LISTEN_FD}`);
    process.exit(2);
  }
  server.listen({ fd }, onListening);
} else {
  server.listen(PORT, HOST, onListening);
}
