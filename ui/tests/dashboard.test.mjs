// The dashboard in a real browser (Debian's Chromium, driven by playwright-core) against the
// real `fission server` and CLI: what a user does and sees. Screenshots of each page, and the
// first-load and 1,000-function measurements, go to target/ui-screenshots/.
//
// Prerequisites (chromium, the fission binary, environments/setup.sh) missing: the tests print
// SKIPPED and pass, unless CI is set (as scripts/test.sh's callers in CI do): then they fail.

import { after, before, test } from "node:test";
import assert from "node:assert/strict";
import { spawn, spawnSync } from "node:child_process";
import { existsSync, mkdirSync, mkdtempSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { dirname, join, resolve } from "node:path";
import { createInterface } from "node:readline";
import { fileURLToPath } from "node:url";
import { chromium } from "playwright-core";

const ROOT = resolve(dirname(fileURLToPath(import.meta.url)), "../..");
const TARGET = process.env.CARGO_TARGET_DIR || join(ROOT, "target");
const BIN = process.env.FISSION_BIN || join(TARGET, "debug", "fission");
const CHROMIUM = process.env.CHROMIUM || "/usr/bin/chromium";
const SHOTS = join(ROOT, "target", "ui-screenshots");
const CI = !["", "0", "false"].includes((process.env.CI ?? "").trim().toLowerCase());

/** Why the tests cannot run here, or null. */
function missingPrerequisite() {
  if (!existsSync(CHROMIUM)) return `${CHROMIUM} does not exist (apt-get install chromium)`;
  if (!existsSync(BIN)) return `${BIN} does not exist (cargo build -p fission)`;
  if (!existsSync(join(ROOT, "environments/nodejs/node_modules"))) return "the Node.js runtime's dependencies are missing (run environments/setup.sh)";
  return null;
}

const missing = missingPrerequisite();
if (missing && CI) {
  test("prerequisites are installed", () => assert.fail(`prerequisite missing: ${missing}; CI is set, so this fails instead of skipping`));
}
if (missing && !CI) console.error(`SKIPPED: dashboard browser tests: ${missing}`);
const run = missing ? test.skip : test;

let server; // { child, controller, router, dir }
let browser;

/** `fission server` on free ports, with its own data directory; resolves at its ready line. */
async function startServer(extraArgs = []) {
  const dir = mkdtempSync(join(tmpdir(), "fission-ui-"));
  const child = spawn(
    BIN,
    ["server", "--sandbox", "none", "--data-dir", join(dir, "data"), "--controller-listen", "127.0.0.1:0", "--router-listen", "127.0.0.1:0", "--grace-period", "2", ...extraArgs],
    { stdio: ["ignore", "pipe", "pipe"], env: { ...process.env, RUST_LOG: "warn", FISSION_ENVIRONMENTS_DIR: join(ROOT, "environments") } },
  );
  let stderr = "";
  child.stderr.on("data", (d) => (stderr = (stderr + d).slice(-8000)));
  const lines = createInterface({ input: child.stdout });
  return await new Promise((ok, fail) => {
    const timer = setTimeout(() => fail(new Error(`server not ready in 30 s: ${stderr}`)), 30_000);
    let ready = null;
    child.on("exit", (code) => fail(new Error(`server exited with ${code}: ${stderr}`)));
    lines.on("line", (line) => {
      const m = /controller (http:\/\/\S+) router (http:\/\/\S+)/.exec(line);
      if (line.startsWith("fission server ready") && m) ready = { controller: m[1], router: m[2] };
      const d = /^dashboard: (http:\/\/\S+)$/.exec(line);
      if (d && ready) {
        clearTimeout(timer);
        ok({ child, dir, dashboard: d[1], ...ready });
      }
    });
  });
}

/** `fission <args>` against the server; returns stdout, throws with stderr on failure. */
function fission(args, { allowFailure = false, on = server, token } = {}) {
  const env = { ...process.env, FISSION_URL: on.controller, FISSION_ROUTER_URL: on.router };
  delete env.FISSION_AUTH_TOKEN;
  if (token) env.FISSION_AUTH_TOKEN = token;
  const r = spawnSync(BIN, args, {
    env,
    encoding: "utf8",
    timeout: 120_000,
  });
  if (r.status !== 0 && !allowFailure) throw new Error(`fission ${args.join(" ")} exited with ${r.status}: ${r.stderr}`);
  return r.stdout + r.stderr;
}

before(async () => {
  if (missing) return;
  mkdirSync(SHOTS, { recursive: true });
  server = await startServer();
  browser = await chromium.launch({ executablePath: CHROMIUM, args: ["--no-sandbox", "--disable-dev-shm-usage"] });
});

after(async () => {
  await browser?.close();
  if (server) {
    server.child.kill("SIGTERM");
    await new Promise((ok) => (server.child.exitCode !== null ? ok() : server.child.on("exit", ok)));
    rmSync(server.dir, { recursive: true, force: true });
  }
});

run("the server prints the dashboard URL on the controller's listener", () => {
  assert.equal(server.dashboard, `${server.controller}/ui`);
});

run("a function created with the CLI appears live, is invoked from the page, and its log line shows in the tail", async () => {
  const page = await browser.newPage({ viewport: { width: 1280, height: 900 } });
  const pageErrors = [];
  page.on("pageerror", (e) => pageErrors.push(String(e)));
  await page.goto(server.dashboard);
  await page.locator("#functions").waitFor();
  assert.equal(await page.locator("tr[data-function]").count(), 0);

  // Created while the page is open: it must appear without a reload.
  const code = join(server.dir, "hello.js");
  writeFileSync(
    code,
    `module.exports = async function(context) {
  console.log("dashboard-test call " + context.request.method);
  return { status: 201, headers: { "x-from": "hello" }, body: "Hello from the dashboard test\\n" };
}
`,
  );
  fission(["env", "create", "--name", "nodejs", "--image", "fission/node-env", "--poolsize", "1"]);
  fission(["fn", "create", "--name", "hello", "--env", "nodejs", "--code", code]);
  fission(["route", "create", "--name", "hello-route", "--function", "hello", "--url", "/hello", "--method", "GET"]);
  const row = page.locator('tr[data-function="hello"]');
  await row.waitFor({ timeout: 10_000 });
  assert.match(await row.innerText(), /nodejs/);
  // The route is written after the function: it arrives with its own change event.
  const route = page.locator('#triggers tr[data-trigger="http/hello-route"]');
  await route.waitFor({ timeout: 10_000 });
  assert.match(await route.innerText(), /GET \/hello/);
  await page.screenshot({ path: join(SHOTS, "overview.png"), fullPage: true });

  await row.locator("a").first().click();
  await page.locator("#invoke").waitFor();
  await page.locator("#log-tail").waitFor();
  await page.selectOption("#inv-method", "POST");
  await page.fill("#inv-body", "ping");
  await page.click("#inv-send");
  await page.locator("#inv-result").waitFor({ timeout: 60_000 });
  assert.equal(await page.locator("#inv-status").innerText(), "201");
  assert.match(await page.locator("#inv-body-out").innerText(), /Hello from the dashboard test/);
  assert.match(await page.locator("#inv-result pre.headers").innerText(), /x-from: hello/);
  assert.ok(Number(await page.locator("#inv-duration").innerText()) > 0);
  // The call is plotted, and the function's own log line arrives in the live tail.
  assert.equal(await page.locator("#plot rect.bar").count(), 1);
  await page.locator("#log-tail", { hasText: "dashboard-test call POST" }).waitFor({ timeout: 15_000 });
  await page.click("#inv-send");
  await page.waitForFunction(() => document.querySelectorAll("#plot rect.bar").length === 2, null, { timeout: 30_000 });
  // The server's own series, pushed over the event stream: both calls (the first a cold start)
  // in the hour's throughput plot and the latency plot, without reloading the page.
  await page.locator("#hour-calls", { hasText: "2 calls, 0 errors, 1 cold starts" }).waitFor({ timeout: 10_000 });
  await page.waitForFunction(() => Number(document.querySelector("#throughput path.series-calls")?.getAttribute("data-points")) >= 1);
  await page.waitForFunction(() => Number(document.querySelector("#latency path.series-p99")?.getAttribute("data-points")) >= 1);
  // A call made elsewhere (curl, another user) shows up too.
  const viaRouter = await fetch(`${server.router}/fission-function/hello`, { method: "DELETE" });
  assert.equal(viaRouter.status, 201);
  await page.locator("#hour-calls", { hasText: "3 calls" }).waitFor({ timeout: 10_000 });
  await page.screenshot({ path: join(SHOTS, "function.png"), fullPage: true });

  // Back on the overview, the function's row carries its hour: calls and a sparkline.
  await page.goto(server.dashboard);
  const calls = page.locator('tr[data-function="hello"] td.calls');
  await calls.filter({ hasText: /^3$/ }).waitFor({ timeout: 10_000 });
  assert.equal(await page.locator('tr[data-function="hello"] svg.spark').count(), 1);
  await fetch(`${server.router}/hello`);
  await calls.filter({ hasText: /^4$/ }).waitFor({ timeout: 10_000 });
  assert.equal(await page.locator("#live").innerText(), "live");
  await page.screenshot({ path: join(SHOTS, "overview-calls.png"), fullPage: true });
  assert.deepEqual(pageErrors, []);
  await page.close();
});

run("the stats endpoints serve the router's series and refuse a bad step", async () => {
  const r = await fetch(`${server.controller}/v2/stats/functions/default/hello?step=10`);
  assert.equal(r.status, 200);
  const body = await r.json();
  assert.equal(body.step, 10);
  const [hello] = body.functions;
  assert.equal(hello.name, "hello");
  assert.ok(hello.totalCalls >= 4, JSON.stringify(hello));
  assert.equal(hello.summary.coldStarts, 1);
  assert.ok(hello.summary.p99Ms > 0);
  const bad = await fetch(`${server.controller}/v2/stats/functions?step=7`);
  assert.equal(bad.status, 400);
  assert.match((await bad.json()).message, /multiple of 10 seconds/);
});

run("invoking a function that does not exist shows the controller's error on the page", async () => {
  const page = await browser.newPage();
  await page.goto(`${server.dashboard}#/functions/nosuch`);
  await page.locator("text=function 'nosuch' not found in namespace 'default'").waitFor();
  const r = await page.request.post(`${server.controller}/ui/api/invoke`, { data: { function: "nosuch" } });
  assert.equal(r.status(), 404);
  assert.match((await r.json()).message, /function 'nosuch' not found/);
  const bad = await page.request.post(`${server.controller}/ui/api/invoke`, { data: { function: "hello", method: "NOT A METHOD" } });
  assert.equal(bad.status(), 400);
  await page.close();
});

run("a failing build shows failed with its build log", async () => {
  fission(["env", "create", "--name", "nodeb", "--image", "fission/node-env", "--builder", "fission/node-builder", "--poolsize", "0"]);
  const src = join(server.dir, "src");
  mkdirSync(src, { recursive: true });
  writeFileSync(join(src, "build.sh"), "#!/bin/sh\necho 'compiling the broken package'\necho 'error: syntax error in hello.js' >&2\nexit 3\n", { mode: 0o755 });
  writeFileSync(join(src, "hello.js"), "module.exports = async () => ({ status: 200 })\n");
  fission(["pkg", "create", "--name", "broken", "--env", "nodeb", "--src", `${src}/*`, "--buildcmd", "./build.sh"], { allowFailure: true });
  const page = await browser.newPage({ viewport: { width: 1280, height: 900 } });
  await page.goto(server.dashboard);
  const row = page.locator('tr[data-package="broken"]');
  await row.locator(".status.failed").waitFor({ timeout: 60_000 });
  await row.locator("text=show").click();
  const log = await page.locator("pre.buildlog").innerText();
  assert.match(log, /compiling the broken package/);
  assert.match(log, /error: syntax error in hello.js/);
  await page.screenshot({ path: join(SHOTS, "failed-build.png"), fullPage: true });
  await page.close();
});

run("first load stays under 200 KB of JavaScript and 1,000 functions render without freezing", async () => {
  // 1,000 more functions through the REST API, sharing the hello function's package.
  const hello = await (await fetch(`${server.controller}/v2/functions/hello?namespace=default`)).json();
  const names = Array.from({ length: 1000 }, (_, i) => `load-${String(i).padStart(4, "0")}`);
  for (let i = 0; i < names.length; i += 20) {
    await Promise.all(
      names.slice(i, i + 20).map(async (name) => {
        const body = { ...hello, metadata: { name, namespace: "default" } };
        const r = await fetch(`${server.controller}/v2/functions`, { method: "POST", headers: { "content-type": "application/json" }, body: JSON.stringify(body) });
        assert.ok(r.ok, `creating ${name}: ${r.status} ${await r.text()}`);
      }),
    );
  }

  const page = await browser.newPage({ viewport: { width: 1280, height: 900 } });
  await page.addInitScript(() => {
    window.__longTasks = [];
    new PerformanceObserver((l) => window.__longTasks.push(...l.getEntries())).observe({ type: "longtask", buffered: true });
  });
  let jsBytes = 0;
  page.on("response", async (resp) => {
    if (resp.url().endsWith(".js")) jsBytes += (await resp.body()).length;
  });
  const started = Date.now();
  await page.goto(server.dashboard);
  await page.waitForFunction(() => document.querySelectorAll("tr[data-function]").length === 1001, null, { timeout: 30_000 });
  const renderMs = Date.now() - started;
  // Long main-thread tasks are what a user feels as a freeze: during the first load, and over
  // the live updates after it (recorded from the page's start by the init script above).
  const renderedAt = await page.evaluate(() => performance.now());
  // Live updates while 1,001 rows are shown: calls (stats events re-render one row each) and a
  // new function (a change event reloads every list).
  for (let i = 0; i < 5; i++) {
    await fetch(`${server.router}/hello`);
    await page.waitForTimeout(500);
  }
  const extra = await fetch(`${server.controller}/v2/functions`, {
    method: "POST",
    headers: { "content-type": "application/json" },
    body: JSON.stringify({ ...hello, metadata: { name: "load-extra", namespace: "default" } }),
  });
  assert.ok(extra.ok);
  await page.waitForFunction(() => document.querySelectorAll("tr[data-function]").length === 1002, null, { timeout: 10_000 });
  await page.waitForTimeout(1500);
  const longestTasks = await page.evaluate((at) => {
    const tasks = window.__longTasks;
    const longest = (list) => list.reduce((m, e) => Math.max(m, e.duration), 0);
    return { load: longest(tasks.filter((t) => t.startTime < at)), refresh: longest(tasks.filter((t) => t.startTime >= at)) };
  }, renderedAt);
  const filterStarted = Date.now();
  await page.fill("#functions input.filter", "load-099");
  await page.waitForFunction(() => document.querySelectorAll("tr[data-function]").length === 10);
  const filterMs = Date.now() - filterStarted;
  await page.fill("#functions input.filter", "");
  await page.waitForFunction(() => document.querySelectorAll("tr[data-function]").length === 1002);
  await page.screenshot({ path: join(SHOTS, "thousand-functions.png") });
  const numbers = { functions: 1001, jsBytes, renderMs, longestTaskOnLoadMs: longestTasks.load, longestTaskOnRefreshMs: longestTasks.refresh, filterMs };
  writeFileSync(join(SHOTS, "measurements.json"), JSON.stringify(numbers, null, 2) + "\n");
  console.log(`dashboard measurements: ${JSON.stringify(numbers)}`);
  assert.ok(jsBytes > 0 && jsBytes < 200 * 1024, `first load fetched ${jsBytes} bytes of JavaScript`);
  assert.ok(renderMs < 5000, `1,001 functions took ${renderMs} ms to appear`);
  // Generous bounds: CI machines are shared (on a 2-core VM at load 25–30 the same-run figures of
  // the polling dashboard were 554 ms on load and 414 ms for a relisting; BENCHMARKS.md), while
  // rendering all rows in one task, or re-rendering every row on each update, takes seconds there.
  assert.ok(longestTasks.load < 1000, `the page froze for ${longestTasks.load} ms while loading`);
  assert.ok(longestTasks.refresh < 1000, `the page froze for ${longestTasks.refresh} ms while updating live`);
  await page.close();
});

run("with an API token the dashboard asks for it once, then shows live objects", async () => {
  const token = "dashboard-ui-test-token-0123456789";
  const secured = await startServer(["--auth-token", token]);
  const context = await browser.newContext({ viewport: { width: 1280, height: 900 } });
  try {
    const page = await context.newPage();
    await page.goto(secured.dashboard);
    await page.locator("#token").waitFor();
    assert.equal(await page.locator("#functions").count(), 0, "nothing is shown before logging in");
    await page.screenshot({ path: join(SHOTS, "login.png") });
    await page.fill("#token", "not-the-token-0123456789");
    await page.click("#login");
    await page.getByText("That token is not this server's.").waitFor();
    await page.fill("#token", token);
    await page.click("#login");
    await page.locator("#functions").waitFor();

    fission(["env", "create", "--name", "nodejs", "--image", "fission/node-env", "--poolsize", "0"], { on: secured, token });
    writeFileSync(join(secured.dir, "f.js"), "module.exports = async () => ({ status: 200, body: 'ok' });\n");
    fission(["fn", "create", "--name", "secured", "--env", "nodejs", "--code", join(secured.dir, "f.js")], { on: secured, token });
    await page.locator('tr[data-function="secured"]').waitFor({ timeout: 10_000 });

    // A second tab of the same browser is already logged in; a fresh browser context is not.
    const again = await context.newPage();
    await again.goto(secured.dashboard);
    await again.locator('tr[data-function="secured"]').waitFor({ timeout: 10_000 });
    const stranger = await browser.newPage();
    await stranger.goto(secured.dashboard);
    await stranger.locator("#token").waitFor();
    await stranger.close();
  } finally {
    await context.close();
    secured.child.kill("SIGTERM");
    await new Promise((ok) => (secured.child.exitCode !== null ? ok() : secured.child.on("exit", ok)));
    rmSync(secured.dir, { recursive: true, force: true });
  }
});
