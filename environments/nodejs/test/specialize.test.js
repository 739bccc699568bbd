'use strict';
// Specialization: entrypoint resolution, module formats, load errors and the
// generic-container lifecycle.

const { test } = require('node:test');
const assert = require('node:assert/strict');
const path = require('path');
const { makeFixture, startServer, specialize, request, serve } = require('./helpers');

const HELLO = `module.exports = async function (context) {
  return { status: 200, body: 'hello from cjs' };
};
`;

// Specializes a fresh server with the fixture and returns the GET / answer.
async function callAfterSpecialize(files, filepath, functionName) {
  const server = await serve(files, { filepath, functionName });
  try {
    return await request(`${server.url}/`);
  } finally {
    await server.stop();
  }
}

test('single file, empty entrypoint: module.exports function', async () => {
  const res = await callAfterSpecialize({ 'hello.js': HELLO }, 'hello.js', '');
  assert.equal(res.status, 200);
  assert.equal(res.text, 'hello from cjs');
});

test('single extensionless file (as the fetcher stores a literal)', async () => {
  const res = await callAfterSpecialize({ deployarchive: HELLO }, 'deployarchive', '');
  assert.equal(res.status, 200);
  assert.equal(res.text, 'hello from cjs');
});

test('single file with "func" entrypoint uses that export', async () => {
  const files = {
    'multi.js': `exports.a = async () => ({ status: 200, body: 'A' });
exports.b = async () => ({ status: 200, body: 'B' });
`,
  };
  const res = await callAfterSpecialize(files, 'multi.js', 'b');
  assert.equal(res.text, 'B');
});

test('single file with a "name" entrypoint that is no export falls back to the file', async () => {
  const res = await callAfterSpecialize({ 'hello.js': HELLO }, 'hello.js', 'hello');
  assert.equal(res.text, 'hello from cjs');
});

test('directory with "file.func" entrypoint', async () => {
  const files = {
    'handlers.js': `exports.main = async (ctx) => ({ status: 200, body: 'main' });
exports.other = async (ctx) => ({ status: 201, body: 'other' });
`,
  };
  const res = await callAfterSpecialize(files, '', 'handlers.other');
  assert.equal(res.status, 201);
  assert.equal(res.text, 'other');
});

test('directory with "file" entrypoint uses the default export', async () => {
  const res = await callAfterSpecialize({ 'hello.js': HELLO, 'other.js': 'module.exports = 1;' }, '', 'hello');
  assert.equal(res.text, 'hello from cjs');
});

test('directory with "sub/file.func" entrypoint', async () => {
  const files = { 'lib/api.js': `exports.get = async () => ({ status: 200, body: 'nested' });` };
  const res = await callAfterSpecialize(files, '', 'lib/api.get');
  assert.equal(res.text, 'nested');
});

test('directory with package.json main and empty entrypoint', async () => {
  const files = {
    'package.json': JSON.stringify({ name: 'fn', main: 'src/entry.js' }),
    'src/entry.js': `module.exports = async () => ({ status: 200, body: 'from main' });`,
    'index.js': `module.exports = async () => ({ status: 200, body: 'from index' });`,
  };
  const res = await callAfterSpecialize(files, '', '');
  assert.equal(res.text, 'from main');
});

test('directory with index.js and empty entrypoint', async () => {
  const files = {
    'index.js': `module.exports = async () => ({ status: 200, body: 'from index' });`,
    'util.js': `module.exports = 42;`,
  };
  const res = await callAfterSpecialize(files, '', '');
  assert.equal(res.text, 'from index');
});

test('directory with a single .js file and empty entrypoint', async () => {
  const res = await callAfterSpecialize({ 'only.js': HELLO, 'README.md': '# hi' }, '', '');
  assert.equal(res.text, 'hello from cjs');
});

test('user directory with its own node_modules', async () => {
  const files = {
    'node_modules/shout/package.json': JSON.stringify({ name: 'shout', main: 'shout.js' }),
    'node_modules/shout/shout.js': `module.exports = (s) => s.toUpperCase() + '!';`,
    'fn.js': `const shout = require('shout');
module.exports = async () => ({ status: 200, body: shout('dep works') });
`,
  };
  const res = await callAfterSpecialize(files, '', 'fn');
  assert.equal(res.text, 'DEP WORKS!');
});

test('ES module: .mjs named export', async () => {
  const files = {
    'fn.mjs': `import { helper } from './helper.mjs';
export async function handler(context) { return { status: 200, body: helper() }; }
`,
    'helper.mjs': `export const helper = () => 'mjs named';`,
  };
  const res = await callAfterSpecialize(files, '', 'fn.handler');
  assert.equal(res.text, 'mjs named');
});

test('ES module: .mjs default export as single file', async () => {
  const files = { 'fn.mjs': `export default async (context) => ({ status: 200, body: 'mjs default' });` };
  const res = await callAfterSpecialize(files, 'fn.mjs', '');
  assert.equal(res.text, 'mjs default');
});

test('ES module: plain .js with export default syntax', async () => {
  const files = { 'plain.js': `export default async function (context) { return { status: 200, body: 'esm in .js' }; }` };
  const res = await callAfterSpecialize(files, '', 'plain');
  assert.equal(res.text, 'esm in .js');
});

test('ES module: .js under package.json "type": "module"', async () => {
  const files = {
    'package.json': JSON.stringify({ type: 'module' }),
    'index.js': `import os from 'node:os';
export default async () => ({ status: 200, body: typeof os.hostname() });
`,
  };
  const res = await callAfterSpecialize(files, '', '');
  assert.equal(res.text, 'string');
});

test('ES module with top-level await (needs the import() fallback)', async () => {
  const files = {
    'tla.mjs': `const value = await Promise.resolve('awaited');
export const main = async () => ({ status: 200, body: value });
`,
  };
  const res = await callAfterSpecialize(files, '', 'tla.main');
  assert.equal(res.text, 'awaited');
});

test('syntax error: 500 with SyntaxError, file and line', async () => {
  const dir = makeFixture({ 'broken.js': `module.exports = async (context) => {\n  return { status: 200, body: 'x' ;\n};\n` });
  const server = await startServer();
  try {
    const res = await specialize(server, path.join(dir, 'broken.js'), '');
    assert.equal(res.status, 500);
    assert.match(res.text, /^user code load error: SyntaxError: /);
    assert.match(res.text, /broken\.js:2/);
    await server.waitLog(/user code load error: SyntaxError/);
    // still generic: requests are refused, a corrected specialization works
    const call = await request(`${server.url}/`);
    assert.equal(call.status, 500);
    assert.equal(call.text, 'Generic container: no requests supported');
  } finally {
    await server.stop();
  }
});

test('a load failure leaves the container generic: a later specialization works', async () => {
  const dir = makeFixture({ 'good.js': HELLO });
  const server = await startServer();
  try {
    const bad = await specialize(server, path.join(dir, 'missing.js'), '');
    assert.equal(bad.status, 500);
    assert.match(bad.text, /does not exist/);
    const good = await specialize(server, path.join(dir, 'good.js'), '');
    assert.equal(good.status, 202);
    assert.equal((await request(`${server.url}/`)).text, 'hello from cjs');
  } finally {
    await server.stop();
  }
});

async function loadFailure(files, filepath, functionName) {
  const dir = makeFixture(files);
  const server = await startServer();
  try {
    const res = await specialize(server, path.join(dir, filepath), functionName);
    assert.equal(res.status, 500, res.text);
    await server.waitLog(/user code load error: /);
    return res.text;
  } finally {
    await server.stop();
  }
}

test('missing export: 500 naming the export and the available ones', async () => {
  const text = await loadFailure({ 'h.js': `exports.main = async () => ({});` }, '', 'h.nope');
  assert.match(text, /^user code load error: /);
  assert.match(text, /no export "nope"/);
  assert.match(text, /exports: main/);
});

test('missing module file: 500 naming it', async () => {
  const text = await loadFailure({ 'h.js': HELLO }, '', 'nothere.main');
  assert.match(text, /no module "nothere"/);
});

test('default export is not a function: 500', async () => {
  const text = await loadFailure({ 'cfg.js': `module.exports = { port: 1 };` }, 'cfg.js', '');
  assert.match(text, /not a function/);
});

test('module throwing at load time: 500 with the error and location', async () => {
  const text = await loadFailure({ 'boom.js': `\nthrow new Error('kaboom at load');\n` }, 'boom.js', '');
  assert.match(text, /Error: kaboom at load/);
  assert.match(text, /boom\.js:2/);
});

test('missing dependency: 500 with Cannot find module', async () => {
  const text = await loadFailure({ 'dep.js': `require('no-such-package-xyz');` }, 'dep.js', '');
  assert.match(text, /Cannot find module 'no-such-package-xyz'/);
});

test('directory without an entry file: 500 asking for an entrypoint', async () => {
  const text = await loadFailure({ 'a.js': HELLO, 'b.js': HELLO }, '', '');
  assert.match(text, /no entrypoint found/);
});

test('re-specialization is refused with 400', async () => {
  const dir = makeFixture({ 'hello.js': HELLO });
  const server = await startServer();
  try {
    assert.equal((await specialize(server, path.join(dir, 'hello.js'), '')).status, 202);
    const again = await specialize(server, path.join(dir, 'hello.js'), '');
    assert.equal(again.status, 400);
    assert.equal(again.text, 'Not a generic container');
    const v1 = await request(`${server.url}/specialize`, { method: 'POST' });
    assert.equal(v1.status, 400);
  } finally {
    await server.stop();
  }
});

test('unspecialized: any request gets 500 Generic container', async () => {
  const server = await startServer();
  try {
    for (const [method, p] of [['GET', '/'], ['POST', '/some/path'], ['DELETE', '/x?y=1']]) {
      const res = await request(`${server.url}${p}`, { method });
      assert.equal(res.status, 500);
      assert.equal(res.text, 'Generic container: no requests supported');
    }
    const health = await request(`${server.url}/healthz`);
    assert.equal(health.status, 200);
  } finally {
    await server.stop();
  }
});

test('invalid specialize JSON: 400', async () => {
  const server = await startServer();
  try {
    const res = await request(`${server.url}/v2/specialize`, { method: 'POST', body: '{not json' });
    assert.equal(res.status, 400);
    assert.match(res.text, /invalid specialize request/);
  } finally {
    await server.stop();
  }
});

test('v1 /specialize loads --codepath', async () => {
  const dir = makeFixture({ user: HELLO });
  const server = await startServer({ args: ['--codepath', path.join(dir, 'user')] });
  try {
    const res = await request(`${server.url}/specialize`, { method: 'POST', headers: { 'content-type': 'text/plain' } });
    assert.equal(res.status, 202);
    assert.equal((await request(`${server.url}/`)).text, 'hello from cjs');
  } finally {
    await server.stop();
  }
});

test('v1 /specialize loads FISSION_CODEPATH', async () => {
  const dir = makeFixture({ 'user.js': HELLO });
  const server = await startServer({ env: { FISSION_CODEPATH: path.join(dir, 'user') } });
  try {
    assert.equal((await request(`${server.url}/specialize`, { method: 'POST' })).status, 202);
    assert.equal((await request(`${server.url}/`)).text, 'hello from cjs');
  } finally {
    await server.stop();
  }
});
