// The Fission dashboard: an overview of every resource, and a page per function with an invoke
// form, a plot of the calls made from it and a live log tail. Data comes from the controller's
// REST API, polled; the log tail is the streamed `fn logs -f` endpoint.

import { Component, Fragment, render } from "preact";
import { useEffect, useMemo, useRef, useState } from "preact/hooks";
import * as api from "./api";
import type { Canary, Environment, Fn, Package, Trigger } from "./api";

const POLL_MS = 2000;

interface Resources {
  environments: Environment[];
  functions: Fn[];
  packages: Package[];
  http: Trigger[];
  time: Trigger[];
  mq: Trigger[];
  watches: Trigger[];
  canaries: Canary[];
}

const EMPTY: Resources = { environments: [], functions: [], packages: [], http: [], time: [], mq: [], watches: [], canaries: [] };

const COLLECTIONS: [keyof Resources, string][] = [
  ["environments", "environments"],
  ["functions", "functions"],
  ["packages", "packages"],
  ["http", "triggers/http"],
  ["time", "triggers/time"],
  ["mq", "triggers/messagequeue"],
  ["watches", "watches"],
  ["canaries", "canaryconfigs"],
];

/**
 * Every resource of `namespace`, refreshed every POLL_MS (so new objects appear live). A
 * collection whose JSON did not change keeps its previous array, and a refresh that changed
 * nothing does not render at all: with thousands of functions, most refreshes cost only the fetch.
 */
function useResources(namespace: string): { data: Resources; error: string | null; loaded: boolean } {
  const [state, setState] = useState<{ data: Resources; error: string | null; loaded: boolean }>({ data: EMPTY, error: null, loaded: false });
  useEffect(() => {
    let stopped = false;
    let timer: number | undefined;
    let texts: string[] = [];
    let data = EMPTY;
    const load = async () => {
      try {
        const fresh = await Promise.all(COLLECTIONS.map(([, path]) => api.listText(path, namespace)));
        if (stopped) return;
        const changed = fresh.some((t, i) => t !== texts[i]);
        if (changed) {
          const next = { ...data } as Record<keyof Resources, unknown[]>;
          COLLECTIONS.forEach(([key], i) => {
            if (fresh[i] !== texts[i]) next[key] = api.parseList(fresh[i]);
          });
          data = next as unknown as Resources;
          texts = fresh;
        }
        setState((s) => (changed || s.error || !s.loaded ? { data, error: null, loaded: true } : s));
      } catch (e) {
        if (!stopped) setState((s) => ({ ...s, error: String(e instanceof Error ? e.message : e) }));
      }
      if (!stopped) timer = window.setTimeout(load, POLL_MS);
    };
    load();
    return () => {
      stopped = true;
      window.clearTimeout(timer);
    };
  }, [namespace]);
  return state;
}

/** The `#/…` route: the overview, or one function's page. */
function useRoute(): string[] {
  const parse = () => location.hash.replace(/^#\/?/, "").split("/").filter(Boolean).map(decodeURIComponent);
  const [route, setRoute] = useState(parse);
  useEffect(() => {
    const on = () => setRoute(parse());
    window.addEventListener("hashchange", on);
    return () => window.removeEventListener("hashchange", on);
  }, []);
  return route;
}

function fnHref(name: string): string {
  return `#/functions/${encodeURIComponent(name)}`;
}

function Status({ value }: { value?: string }) {
  const v = value || "none";
  return <span class={`status ${v}`}>{v}</span>;
}

function App() {
  const route = useRoute();
  const [namespace, setNamespace] = useState(() => localStorage.getItem("fission-ns") || "default");
  const { data, error, loaded } = useResources(namespace);
  const setNs = (ns: string) => {
    localStorage.setItem("fission-ns", ns);
    setNamespace(ns || "default");
  };
  return (
    <>
      <header>
        <a href="#/">Fission</a>
        <label>
          namespace{" "}
          <input value={namespace} onChange={(e) => setNs((e.target as HTMLInputElement).value.trim())} />
        </label>
        <span class="meta">{error ? <span class="error">{error}</span> : loaded ? `refreshed every ${POLL_MS / 1000} s` : "loading…"}</span>
      </header>
      <main>
        {route[0] === "functions" && route[1] ? (
          <FunctionPage name={route[1]} namespace={namespace} data={data} loaded={loaded} />
        ) : (
          <Overview data={data} />
        )}
      </main>
    </>
  );
}

function Overview({ data }: { data: Resources }) {
  return (
    <>
      <Environments data={data} />
      <Functions data={data} />
      <Packages packages={data.packages} />
      <Triggers data={data} />
      <Canaries canaries={data.canaries} />
    </>
  );
}

function Environments({ data }: { data: Resources }) {
  const counts = useMemo(() => {
    const m = new Map<string, number>();
    for (const f of data.functions) m.set(f.spec.environment.name, (m.get(f.spec.environment.name) ?? 0) + 1);
    return m;
  }, [data.functions]);
  return (
    <section id="environments">
      <h2>
        Environments <small>{data.environments.length}</small>
      </h2>
      <table>
        <thead>
          <tr><th>name</th><th>runtime image</th><th>builder</th><th>version</th><th>pool size</th><th>functions</th></tr>
        </thead>
        <tbody>
          {data.environments.map((e) => (
            <tr key={e.metadata.name}>
              <td>{e.metadata.name}</td>
              <td class="mono">{e.spec.runtime?.image}</td>
              <td class="mono">{e.spec.builder?.image || <span class="muted">none</span>}</td>
              <td>{e.spec.version ?? 1}</td>
              <td>{e.spec.poolsize ?? 3}</td>
              <td>{counts.get(e.metadata.name) ?? 0}</td>
            </tr>
          ))}
        </tbody>
      </table>
    </section>
  );
}

/** Rows rendered per frame: the first screenful comes at once, the rest without a long task. */
const ROWS_PER_FRAME = 200;

function Functions({ data }: { data: Resources }) {
  const [filter, setFilter] = useState("");
  // Indexes built once per refresh, so each row is O(1) even with thousands of functions.
  const pkgStatus = useMemo(() => new Map(data.packages.map((p) => [p.metadata.name, p.status?.buildstatus])), [data.packages]);
  const routes = useMemo(() => {
    const m = new Map<string, string[]>();
    for (const t of data.http) for (const f of api.targets(t.spec.functionref)) m.set(f, [...(m.get(f) ?? []), t.spec.prefix || t.spec.relativeurl || ""]);
    return m;
  }, [data.http]);
  const shown = useMemo(() => (filter ? data.functions.filter((f) => f.metadata.name.includes(filter)) : data.functions), [data.functions, filter]);
  const [limit, setLimit] = useState(ROWS_PER_FRAME);
  useEffect(() => setLimit(ROWS_PER_FRAME), [filter]);
  useEffect(() => {
    if (limit >= shown.length) return;
    const frame = requestAnimationFrame(() => setLimit((l) => l + ROWS_PER_FRAME));
    return () => cancelAnimationFrame(frame);
  }, [limit, shown.length]);
  return (
    <section id="functions">
      <h2>
        Functions <small>{data.functions.length}</small>
        <input class="filter" placeholder="filter by name" value={filter} onInput={(e) => setFilter((e.target as HTMLInputElement).value)} />
      </h2>
      <table>
        <thead>
          <tr><th>name</th><th>environment</th><th>executor</th><th>package</th><th>build</th><th>routes</th></tr>
        </thead>
        <tbody>
          {shown.slice(0, limit).map((f) => {
            const pkg = f.spec.package?.packageref?.name;
            return <FunctionRow key={f.metadata.name} f={f} build={pkg ? pkgStatus.get(pkg) ?? "none" : ""} routes={(routes.get(f.metadata.name) ?? []).join(" ")} />;
          })}
        </tbody>
      </table>
    </section>
  );
}

interface RowProps {
  f: Fn;
  build: string;
  routes: string;
}

/** One function's row; re-rendered only when what it shows changed. */
class FunctionRow extends Component<RowProps> {
  shouldComponentUpdate(next: RowProps): boolean {
    const p = this.props;
    return next.f.metadata.resourceVersion !== p.f.metadata.resourceVersion || next.build !== p.build || next.routes !== p.routes;
  }

  render({ f, build, routes }: RowProps) {
    return (
      <tr data-function={f.metadata.name}>
        <td><a href={fnHref(f.metadata.name)}>{f.metadata.name}</a></td>
        <td>{f.spec.environment.name}</td>
        <td>{api.executorType(f)}</td>
        <td>{f.spec.package?.packageref?.name}</td>
        <td>{build ? <Status value={build} /> : null}</td>
        <td class="mono">{routes}</td>
      </tr>
    );
  }
}

function Packages({ packages }: { packages: Package[] }) {
  const [open, setOpen] = useState<string | null>(null);
  return (
    <section id="packages">
      <h2>
        Packages <small>{packages.length}</small>
      </h2>
      <table>
        <thead>
          <tr><th>name</th><th>environment</th><th>build status</th><th>updated</th><th>build log</th></tr>
        </thead>
        <tbody>
          {packages.map((p) => (
            <Fragment key={p.metadata.name}>
              <tr data-package={p.metadata.name}>
                <td>{p.metadata.name}</td>
                <td>{p.spec.environment?.name}</td>
                <td><Status value={p.status?.buildstatus} /></td>
                <td class="muted">{p.status?.lastUpdateTimestamp}</td>
                <td>
                  {p.status?.buildlog ? (
                    <a href="javascript:void 0" onClick={() => setOpen(open === p.metadata.name ? null : p.metadata.name)}>
                      {open === p.metadata.name ? "hide" : "show"}
                    </a>
                  ) : (
                    <span class="muted">empty</span>
                  )}
                </td>
              </tr>
              {open === p.metadata.name ? (
                <tr>
                  <td colSpan={5}><pre class="buildlog">{p.status?.buildlog}</pre></td>
                </tr>
              ) : null}
            </Fragment>
          ))}
        </tbody>
      </table>
    </section>
  );
}

function Triggers({ data }: { data: Resources }) {
  const rows: { kind: string; t: Trigger; detail: string }[] = [
    ...data.http.map((t) => ({ kind: "http", t, detail: `${(t.spec.methods?.length ? t.spec.methods : [t.spec.method || "GET"]).join(",")} ${t.spec.prefix ? `${t.spec.prefix}*` : t.spec.relativeurl ?? ""}` })),
    ...data.time.map((t) => ({ kind: "time", t, detail: t.spec.cron ?? "" })),
    ...data.mq.map((t) => ({ kind: "messagequeue", t, detail: `${t.spec.messageQueueType ?? ""} ${t.spec.topic ?? ""}` })),
    ...data.watches.map((t) => ({ kind: "watch", t, detail: t.spec.type ?? "" })),
  ];
  return (
    <section id="triggers">
      <h2>
        Triggers <small>{rows.length}</small>
      </h2>
      <table>
        <thead>
          <tr><th>kind</th><th>name</th><th>function</th><th>detail</th></tr>
        </thead>
        <tbody>
          {rows.map(({ kind, t, detail }) => (
            <tr key={`${kind}/${t.metadata.name}`}>
              <td>{kind}</td>
              <td>{t.metadata.name}</td>
              <td>
                {api.targets(t.spec.functionref).map((f) => (
                  <a key={f} href={fnHref(f)}>
                    {f}
                    {t.spec.functionref?.functionweights?.[f] !== undefined ? ` (${t.spec.functionref.functionweights[f]}%)` : ""}{" "}
                  </a>
                ))}
              </td>
              <td class="mono">{detail}</td>
            </tr>
          ))}
        </tbody>
      </table>
    </section>
  );
}

function Canaries({ canaries }: { canaries: Canary[] }) {
  if (!canaries.length) return null;
  return (
    <section id="canaries">
      <h2>
        Canaries <small>{canaries.length}</small>
      </h2>
      <table>
        <thead>
          <tr><th>name</th><th>trigger</th><th>old → new</th><th>step</th><th>failure threshold</th><th>status</th></tr>
        </thead>
        <tbody>
          {canaries.map((c) => (
            <tr key={c.metadata.name}>
              <td>{c.metadata.name}</td>
              <td>{c.spec.trigger}</td>
              <td>{c.spec.oldfunction} → {c.spec.newfunction}</td>
              <td>+{c.spec.weightincrement}% every {c.spec.duration}</td>
              <td>{c.spec.failurethreshold}%</td>
              <td><Status value={c.status?.status || "pending"} /></td>
            </tr>
          ))}
        </tbody>
      </table>
    </section>
  );
}

function FunctionPage({ name, namespace, data, loaded }: { name: string; namespace: string; data: Resources; loaded: boolean }) {
  const fn = data.functions.find((f) => f.metadata.name === name);
  if (!fn) return <section>{loaded ? <p class="error">function '{name}' not found in namespace '{namespace}'</p> : <p>loading…</p>}</section>;
  const pkgName = fn.spec.package?.packageref?.name;
  const pkg = data.packages.find((p) => p.metadata.name === pkgName);
  const triggers = [...data.http, ...data.time, ...data.mq, ...data.watches].filter((t) => api.targets(t.spec.functionref).includes(name));
  const strategy = fn.spec.InvokeStrategy?.ExecutionStrategy;
  return (
    <>
      <section id="function">
        <h2>
          Function {name} <small>{namespace}</small>
        </h2>
        <dl>
          <dt>environment</dt><dd>{fn.spec.environment.name}</dd>
          <dt>executor</dt><dd>{api.executorType(fn)}{strategy?.MaxScale ? ` (scale ${strategy.MinScale ?? 0}–${strategy.MaxScale})` : ""}</dd>
          <dt>package</dt><dd>{pkgName} {pkg ? <Status value={pkg.status?.buildstatus} /> : null}</dd>
          <dt>entrypoint</dt><dd class="mono">{fn.spec.package?.functionName || <span class="muted">default</span>}</dd>
          <dt>triggers</dt><dd>{triggers.length ? triggers.map((t) => t.metadata.name).join(", ") : <span class="muted">none</span>}</dd>
        </dl>
        {pkg?.status?.buildstatus === "failed" ? <pre class="buildlog">{pkg.status.buildlog}</pre> : null}
      </section>
      <div class="grid">
        <Invoke name={name} namespace={namespace} />
        <LogTail name={name} namespace={namespace} />
      </div>
    </>
  );
}

interface Call {
  at: number;
  ms: number;
  status: number;
}

function Invoke({ name, namespace }: { name: string; namespace: string }) {
  const [method, setMethod] = useState("GET");
  const [path, setPath] = useState("");
  const [headers, setHeaders] = useState("");
  const [body, setBody] = useState("");
  const [busy, setBusy] = useState(false);
  const [result, setResult] = useState<api.InvokeResponse | null>(null);
  const [error, setError] = useState<string | null>(null);
  const [calls, setCalls] = useState<Call[]>([]);
  useEffect(() => setCalls([]), [name, namespace]);

  const submit = async (e: Event) => {
    e.preventDefault();
    const hs: Record<string, string> = {};
    for (const line of headers.split("\n")) {
      if (!line.trim()) continue;
      const i = line.indexOf(":");
      if (i <= 0) {
        setError(`invalid header '${line}': use 'Key: value'`);
        return;
      }
      hs[line.slice(0, i).trim()] = line.slice(i + 1).trim();
    }
    setBusy(true);
    setError(null);
    try {
      const r = await api.invoke({ function: name, namespace, method, path, headers: hs, body });
      setResult(r);
      setCalls((c) => [...c.slice(-99), { at: Date.now(), ms: r.duration_ms, status: r.status }]);
    } catch (err) {
      setResult(null);
      setError(String(err instanceof Error ? err.message : err));
    } finally {
      setBusy(false);
    }
  };

  return (
    <section id="invoke">
      <h2>Invoke</h2>
      <form class="invoke" onSubmit={submit}>
        <label for="inv-method">method</label>
        <select id="inv-method" value={method} onChange={(e) => setMethod((e.target as HTMLSelectElement).value)}>
          {["GET", "POST", "PUT", "DELETE", "PATCH", "HEAD", "OPTIONS"].map((m) => <option key={m}>{m}</option>)}
        </select>
        <label for="inv-path">path</label>
        <input id="inv-path" placeholder="/sub/path?query" value={path} onInput={(e) => setPath((e.target as HTMLInputElement).value)} />
        <label for="inv-headers">headers</label>
        <textarea id="inv-headers" placeholder="Key: value (one a line)" value={headers} onInput={(e) => setHeaders((e.target as HTMLTextAreaElement).value)} />
        <label for="inv-body">body</label>
        <textarea id="inv-body" value={body} onInput={(e) => setBody((e.target as HTMLTextAreaElement).value)} />
        <span />
        <button id="inv-send" type="submit" disabled={busy}>{busy ? "calling…" : "Invoke"}</button>
      </form>
      {error ? <p class="error" id="inv-error">{error}</p> : null}
      {result ? (
        <div id="inv-result">
          <p>
            <span class={`status ${result.status < 400 ? "ok" : "bad"}`} id="inv-status">{result.status}</span>{" "}
            in <span id="inv-duration">{result.duration_ms.toFixed(1)}</span> ms
          </p>
          <pre class="headers">{result.headers.map(([k, v]) => `${k}: ${v}`).join("\n")}</pre>
          <pre id="inv-body-out">{result.body}{result.truncated ? "\n… (cut)" : ""}</pre>
        </div>
      ) : null}
      <Plot calls={calls} />
    </section>
  );
}

/** Latency of the calls made from this page: one bar per call, red when the status is ≥ 400. */
function Plot({ calls }: { calls: Call[] }) {
  if (!calls.length) return <p class="muted" id="plot">No calls from this page yet.</p>;
  const w = 400;
  const h = 80;
  const max = Math.max(...calls.map((c) => c.ms), 1);
  const bw = w / Math.max(calls.length, 20);
  return (
    <div id="plot">
      <svg width={w} height={h + 14} viewBox={`0 0 ${w} ${h + 14}`} role="img" aria-label="call latency">
        {calls.map((c, i) => {
          const bh = Math.max(2, (c.ms / max) * h);
          return (
            <rect key={c.at + ":" + i} class="bar" x={i * bw + 1} y={h - bh} width={Math.max(bw - 2, 1)} height={bh} fill={c.status >= 400 ? "#b42318" : "#2459c9"}>
              <title>{`${c.ms.toFixed(1)} ms, status ${c.status}`}</title>
            </rect>
          );
        })}
        <text x="0" y={h + 12} font-size="11" fill="#667085">
          {calls.length} calls, max {max.toFixed(1)} ms
        </text>
      </svg>
    </div>
  );
}

const MAX_LOG_LINES = 500;

function LogTail({ name, namespace }: { name: string; namespace: string }) {
  const [lines, setLines] = useState<string[]>([]);
  const [state, setState] = useState("connecting…");
  const box = useRef<HTMLPreElement>(null);
  useEffect(() => {
    setLines([]);
    const abort = new AbortController();
    let retry: number | undefined;
    const follow = () => {
      setState("following");
      api
        .followLogs(name, namespace, abort.signal, (more) => setLines((l) => [...l, ...more].slice(-MAX_LOG_LINES)))
        .then(() => setState("stream ended"))
        .catch((e) => {
          if (abort.signal.aborted) return;
          setState(String(e instanceof Error ? e.message : e));
          // The server restarting or a network blip should not end the tail for good.
          retry = window.setTimeout(() => {
            setLines([]);
            follow();
          }, 3000);
        });
    };
    follow();
    return () => {
      abort.abort();
      window.clearTimeout(retry);
    };
  }, [name, namespace]);
  useEffect(() => {
    if (box.current) box.current.scrollTop = box.current.scrollHeight;
  }, [lines]);
  return (
    <section id="logs">
      <h2>
        Logs <small>{state}</small>
      </h2>
      <pre id="log-tail" ref={box}>{lines.length ? lines.join("\n") : "(no log lines yet)"}</pre>
    </section>
  );
}

const root = document.getElementById("app");
if (root) render(<App />, root);
