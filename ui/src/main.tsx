// The Fission dashboard: an overview of every resource with each function's last hour of calls,
// and a page per function with throughput and latency plots, an invoke form and a live log tail.
// Data comes from the controller's REST API; the server pushes store writes and calls over one
// server-sent event stream (/v2/stats/stream), so nothing polls; the log tail is the streamed
// `fn logs -f` endpoint.

import { Component, Fragment, render } from "preact";
import { useCallback, useEffect, useMemo, useRef, useState } from "preact/hooks";
import * as api from "./api";
import type { Canary, Environment, Fn, Package, Trigger } from "./api";

/** A safety net only: every change arrives over the event stream. */
const FALLBACK_REFRESH_MS = 60_000;
/** Store writes come in bursts (`spec apply`): one update for the burst. */
const CHANGE_DEBOUNCE_MS = 150;
/** The hour's summaries (percentiles cannot be merged in the page) are re-read at most this often. */
const SUMMARY_REFRESH_MS = 10_000;
const HOUR = 3600;

type StatsListener = (e: api.LatestEvent) => void;
/** Pages that follow calls (the function page) subscribe here; App owns the one EventSource. */
const statsListeners = new Set<StatsListener>();

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
 * Every resource of `namespace`, reloaded when the server says something changed (`reload`,
 * called from the event stream). A collection whose JSON did not change keeps its previous array,
 * and a reload that changed nothing does not render at all: with thousands of functions, most
 * reloads cost only the fetch.
 */
function useResources(namespace: string): { data: Resources; error: string | null; loaded: boolean; reload: () => void; apply: (changes: api.ChangeEvent[]) => void } {
  const [state, setState] = useState<{ data: Resources; error: string | null; loaded: boolean }>({ data: EMPTY, error: null, loaded: false });
  const reloadRef = useRef<() => void>(() => {});
  const applyRef = useRef<(changes: api.ChangeEvent[]) => void>(() => {});
  useEffect(() => {
    let stopped = false;
    let timer: number | undefined;
    let texts: string[] = [];
    let data = EMPTY;
    let running = false;
    let again = false;
    const load = async () => {
      // One load at a time; a change during a load asks for one more after it.
      if (running) {
        again = true;
        return;
      }
      running = true;
      window.clearTimeout(timer);
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
      } finally {
        running = false;
      }
      if (stopped) return;
      if (again) {
        again = false;
        load();
      } else {
        timer = window.setTimeout(load, FALLBACK_REFRESH_MS);
      }
    };
    // A change event carries the object: patch its one entry instead of relisting everything
    // (with a thousand functions, a relisting is a megabyte to parse and a full diff).
    const apply = (changes: api.ChangeEvent[]) => {
      if (changes.length > MAX_PATCHES) return load();
      const next = { ...data } as Record<keyof Resources, { metadata: { name: string } }[]>;
      for (const c of changes) {
        const key = KIND_KEYS[c.kind];
        if (c.kind === "*") return load();
        if (!key || c.namespace !== namespace) continue;
        if (c.type !== "DELETED" && !c.object) return load();
        const list = [...next[key]];
        // Lists come sorted by name: keep them so.
        let i = 0;
        while (i < list.length && list[i].metadata.name < c.name) i++;
        const exists = i < list.length && list[i].metadata.name === c.name;
        if (c.type === "DELETED") {
          if (exists) list.splice(i, 1);
        } else if (exists) {
          list[i] = c.object as { metadata: { name: string } };
        } else {
          list.splice(i, 0, c.object as { metadata: { name: string } });
        }
        next[key] = list;
        // The next full listing of this collection is parsed again, whatever its text.
        texts[COLLECTIONS.findIndex(([k]) => k === key)] = "";
      }
      data = next as unknown as Resources;
      setState({ data, error: null, loaded: true });
      // A listing in flight may predate these changes: list once more after it.
      if (running) again = true;
    };
    reloadRef.current = load;
    applyRef.current = apply;
    load();
    return () => {
      stopped = true;
      reloadRef.current = () => {};
      applyRef.current = () => {};
      window.clearTimeout(timer);
    };
  }, [namespace]);
  const reload = useCallback(() => reloadRef.current(), []);
  const apply = useCallback((changes: api.ChangeEvent[]) => applyRef.current(changes), []);
  return { ...state, reload, apply };
}

/** The collection each kind of `change` event patches. */
const KIND_KEYS: Record<string, keyof Resources> = {
  Environment: "environments",
  Function: "functions",
  Package: "packages",
  HTTPTrigger: "http",
  TimeTrigger: "time",
  MessageQueueTrigger: "mq",
  KubernetesWatchTrigger: "watches",
  CanaryConfig: "canaries",
};
/** More changes than this in one burst (`spec apply`): one relisting is cheaper. */
const MAX_PATCHES = 50;

/** Per function: the last hour's summary and calls per minute (sparkline), kept live. */
interface FnStats {
  summary: api.Point;
  totalCalls: number;
  totalErrors: number;
  minutes: api.Point[];
}

/**
 * Every function's last hour, outside the component tree: each row subscribes to its own
 * function, so a call re-renders one row, not a thousand.
 */
class StatsStore {
  private stats = new Map<string, FnStats>();
  private listeners = new Map<string, Set<() => void>>();

  get(name: string): FnStats | undefined {
    return this.stats.get(name);
  }

  subscribe(name: string, on: () => void): () => void {
    let set = this.listeners.get(name);
    if (!set) this.listeners.set(name, (set = new Set()));
    set.add(on);
    return () => set.delete(on);
  }

  private set(name: string, value: FnStats | undefined) {
    if (value) this.stats.set(name, value);
    else this.stats.delete(name);
    for (const on of this.listeners.get(name) ?? []) on();
  }

  /** A fresh read of the list endpoint. */
  replace(functions: api.FunctionSeries[]) {
    const fresh = new Map(functions.map((f) => [f.name, { summary: f.summary, totalCalls: f.totalCalls, totalErrors: f.totalErrors, minutes: f.points }]));
    for (const name of this.stats.keys()) if (!fresh.has(name)) this.set(name, undefined);
    for (const [name, v] of fresh) this.set(name, v);
  }

  /** A `stats` event: the current minute of the functions called. */
  merge(e: api.LatestEvent) {
    for (const f of e.functions) {
      const prev = this.stats.get(f.name);
      const minutes = (prev?.minutes ?? []).filter((p) => p.start > e.now - HOUR && p.start !== f.minute.start);
      minutes.push(f.minute);
      // Counts add up exactly; percentiles wait for the next summary read.
      const summary = prev
        ? { ...prev.summary, calls: prev.summary.calls + f.totalCalls - prev.totalCalls, errors: prev.summary.errors + f.totalErrors - prev.totalErrors }
        : f.minute;
      this.set(f.name, { summary, totalCalls: f.totalCalls, totalErrors: f.totalErrors, minutes });
    }
  }
}

const statsStore = new StatsStore();

/**
 * Keeps `statsStore` on the last hour of `namespace`: read once, then the stream's `minute`
 * points are merged in as calls happen; the summaries (percentiles) are re-read at most every
 * SUMMARY_REFRESH_MS while calls keep coming.
 */
function useStats(namespace: string): StatsListener {
  const refresh = useRef<{ last: number; timer?: number; load: () => void }>({ last: 0, load: () => {} });
  useEffect(() => {
    let stopped = false;
    const r = refresh.current;
    r.load = async () => {
      r.last = Date.now();
      try {
        const resp = await api.statsList(namespace);
        if (!stopped) statsStore.replace(resp.functions);
      } catch {
        // The resource lists report the server's errors; the plots just stay as they were.
      }
    };
    statsStore.replace([]);
    r.load();
    return () => {
      stopped = true;
      window.clearTimeout(r.timer);
    };
  }, [namespace]);
  return useCallback((e: api.LatestEvent) => {
    statsStore.merge(e);
    const r = refresh.current;
    if (r.timer === undefined) {
      const wait = Math.max(0, r.last + SUMMARY_REFRESH_MS - Date.now());
      r.timer = window.setTimeout(() => {
        r.timer = undefined;
        r.load();
      }, wait);
    }
  }, []);
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
  const { data, error, loaded, reload, apply } = useResources(namespace);
  const onStats = useStats(namespace);
  const [live, setLive] = useState(false);
  useEffect(() => {
    // The stream opens after the first listing: the server's work for it (following the store
    // starts with a listing of its own) does not delay the first render.
    if (!loaded) return;
    let debounce: number | undefined;
    let pending: api.ChangeEvent[] = [];
    const close = api.follow(
      namespace,
      (e) => {
        onStats(e);
        for (const l of statsListeners) l(e);
      },
      (change) => {
        pending.push(change);
        window.clearTimeout(debounce);
        debounce = window.setTimeout(() => {
          const batch = pending;
          pending = [];
          apply(batch);
        }, CHANGE_DEBOUNCE_MS);
      },
      (open) => {
        setLive(open);
        // Whatever changed before the stream (re)opened is read again; a listing that finds
        // nothing new costs a fetch, no parse and no render.
        if (open) reload();
      },
    );
    return () => {
      window.clearTimeout(debounce);
      close();
    };
  }, [namespace, loaded, reload, apply, onStats]);
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
        <span class="meta" id="live">
          {error ? <span class="error">{error}</span> : !loaded ? "loading…" : live ? "live" : "reconnecting…"}
        </span>
      </header>
      <main>
        {route[0] === "functions" && route[1] ? (
          <FunctionPage name={route[1]} namespace={namespace} data={data} loaded={loaded} />
        ) : (
          <Overview data={data} namespace={namespace} />
        )}
      </main>
    </>
  );
}

function Overview({ data, namespace }: { data: Resources; namespace: string }) {
  return (
    <>
      <Environments data={data} />
      <Functions data={data} />
      <Packages packages={data.packages} />
      <Triggers data={data} namespace={namespace} />
      <Canaries canaries={data.canaries} http={data.http} />
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

/**
 * Rows rendered per frame: the first screenful comes at once, the rest without a long task. Rows
 * are rendered in chunks of this many that skip their diff when their functions did not change,
 * so each frame (and each live update) costs one chunk, not every row shown so far.
 */
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
          <tr><th>name</th><th>environment</th><th>executor</th><th>package</th><th>build</th><th>routes</th><th>calls (1 h)</th><th>errors</th><th>cold</th><th>p50</th><th>p99</th><th>calls per minute</th></tr>
        </thead>
        <tbody>
          {Array.from({ length: Math.ceil(Math.min(limit, shown.length) / ROWS_PER_FRAME) }, (_, i) => (
            <RowChunk key={i} fns={shown} from={i * ROWS_PER_FRAME} to={Math.min((i + 1) * ROWS_PER_FRAME, shown.length)} pkgStatus={pkgStatus} routes={routes} />
          ))}
        </tbody>
      </table>
    </section>
  );
}

interface ChunkProps {
  fns: Fn[];
  from: number;
  to: number;
  pkgStatus: Map<string, string | undefined>;
  routes: Map<string, string[]>;
}

/** Rows `from..to` of the list; skipped when those functions and the indexes are unchanged. */
class RowChunk extends Component<ChunkProps> {
  shouldComponentUpdate(next: ChunkProps): boolean {
    const p = this.props;
    if (next.from !== p.from || next.to !== p.to || next.pkgStatus !== p.pkgStatus || next.routes !== p.routes) return true;
    for (let i = next.from; i < next.to; i++) if (next.fns[i] !== p.fns[i]) return true;
    return false;
  }

  render({ fns, from, to, pkgStatus, routes }: ChunkProps) {
    return (
      <>
        {fns.slice(from, to).map((f) => {
          const pkg = f.spec.package?.packageref?.name;
          return <FunctionRow key={f.metadata.name} f={f} build={pkg ? pkgStatus.get(pkg) ?? "none" : ""} routes={(routes.get(f.metadata.name) ?? []).join(" ")} />;
        })}
      </>
    );
  }
}

interface RowProps {
  f: Fn;
  build: string;
  routes: string;
}

/** One function's row; re-rendered only when what it shows changed (its calls arrive from `statsStore`). */
class FunctionRow extends Component<RowProps, { stats?: FnStats }> {
  private unsubscribe?: () => void;

  constructor(props: RowProps) {
    super(props);
    this.state = { stats: statsStore.get(props.f.metadata.name) };
  }

  componentDidMount() {
    const name = this.props.f.metadata.name;
    this.unsubscribe = statsStore.subscribe(name, () => this.setState({ stats: statsStore.get(name) }));
  }

  componentWillUnmount() {
    this.unsubscribe?.();
  }

  shouldComponentUpdate(next: RowProps, nextState: { stats?: FnStats }): boolean {
    const p = this.props;
    return next.f.metadata.resourceVersion !== p.f.metadata.resourceVersion || next.build !== p.build || next.routes !== p.routes || nextState.stats !== this.state.stats;
  }

  render({ f, build, routes }: RowProps, { stats }: { stats?: FnStats }) {
    const s = stats?.summary;
    return (
      <tr data-function={f.metadata.name}>
        <td><a href={fnHref(f.metadata.name)}>{f.metadata.name}</a></td>
        <td>{f.spec.environment.name}</td>
        <td>{api.executorType(f)}</td>
        <td>{f.spec.package?.packageref?.name}</td>
        <td>{build ? <Status value={build} /> : null}</td>
        <td class="mono">{routes}</td>
        {s && stats ? (
          <>
            <td class="num calls">{s.calls}</td>
            <td class={`num${s.errors ? " error" : ""}`}>{s.errors}</td>
            <td class="num">{s.coldStarts}</td>
            <td class="num">{ms(s.p50Ms)}</td>
            <td class="num">{ms(s.p99Ms)}</td>
            <td><Sparkline points={stats.minutes} /></td>
          </>
        ) : (
          // One cell for a function without calls: most of a thousand rows are these.
          <td class="calls muted" colSpan={6}>0</td>
        )}
      </tr>
    );
  }
}

function ms(v: number | undefined): string {
  if (v === undefined) return "";
  return v >= 100 ? `${v.toFixed(0)} ms` : `${v.toFixed(1)} ms`;
}

const SPARK_W = 120;
const SPARK_H = 22;

/** Calls per minute over the last hour, as one SVG path (cheap enough for a thousand rows). */
function Sparkline({ points }: { points: api.Point[] }) {
  const now = Date.now() / 1000;
  const from = now - HOUR;
  const max = Math.max(1, ...points.map((p) => p.calls));
  let d = "";
  for (const p of points) {
    if (p.start < from) continue;
    const x = ((p.start - from) / HOUR) * SPARK_W;
    const h = Math.max(1, (p.calls / max) * SPARK_H);
    d += `M${x.toFixed(1)} ${SPARK_H}v${-h.toFixed(1)}`;
  }
  const errors = points.some((p) => p.errors > 0);
  return (
    <svg class="spark" width={SPARK_W} height={SPARK_H} viewBox={`0 0 ${SPARK_W} ${SPARK_H}`} aria-label={`${points.reduce((n, p) => n + p.calls, 0)} calls in the last hour`}>
      <path d={d} stroke={errors ? "#b42318" : "#2459c9"} stroke-width="2" />
    </svg>
  );
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

const TRIGGER_STATUS_MS = 5000;

/** Fires of the time and message-queue triggers (the server runs those itself), refreshed while shown. */
function useTriggerStatus(data: Resources, namespace: string): Map<string, api.TriggerStatus | null> {
  const [statuses, setStatuses] = useState<Map<string, api.TriggerStatus | null>>(() => new Map());
  useEffect(() => {
    const wanted: ["time" | "messagequeue", string][] = [
      ...data.time.map((t): ["time", string] => ["time", t.metadata.name]),
      ...data.mq.map((t): ["messagequeue", string] => ["messagequeue", t.metadata.name]),
    ];
    if (!wanted.length) return;
    let stopped = false;
    let timer: number | undefined;
    const load = async () => {
      const got = await Promise.all(wanted.map(([kind, name]) => api.triggerStatus(kind, name, namespace).catch(() => null)));
      if (stopped) return;
      setStatuses(new Map(wanted.map(([kind, name], i) => [`${kind}/${name}`, got[i]])));
      timer = window.setTimeout(load, TRIGGER_STATUS_MS);
    };
    load();
    return () => {
      stopped = true;
      window.clearTimeout(timer);
    };
  }, [data.time, data.mq, namespace]);
  return statuses;
}

function Triggers({ data, namespace }: { data: Resources; namespace: string }) {
  const statuses = useTriggerStatus(data, namespace);
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
          <tr><th>kind</th><th>name</th><th>function</th><th>detail</th><th>fires</th><th>last fire</th><th>last error</th></tr>
        </thead>
        <tbody>
          {rows.map(({ kind, t, detail }) => {
            const st = statuses.get(`${kind}/${t.metadata.name}`);
            return (
              <tr key={`${kind}/${t.metadata.name}`} data-trigger={`${kind}/${t.metadata.name}`}>
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
                <td class="num">{st ? `${st.fired} (${st.failed} failed)` : <span class="muted">{kind === "http" ? "see function" : ""}</span>}</td>
                <td class="muted">{st?.lastFire ?? ""}{st?.lastStatus ? ` → ${st.lastStatus}` : ""}</td>
                <td class="error">{st?.lastError ?? ""}</td>
              </tr>
            );
          })}
        </tbody>
      </table>
    </section>
  );
}

function Canaries({ canaries, http }: { canaries: Canary[]; http: Trigger[] }) {
  if (!canaries.length) return null;
  // The canary manager moves traffic by rewriting its trigger's weights: the new function's weight is the progress.
  const weight = (c: Canary) => http.find((t) => t.metadata.name === c.spec.trigger)?.spec.functionref?.functionweights?.[c.spec.newfunction];
  return (
    <section id="canaries">
      <h2>
        Canaries <small>{canaries.length}</small>
      </h2>
      <table>
        <thead>
          <tr><th>name</th><th>trigger</th><th>old → new</th><th>step</th><th>failure threshold</th><th>new function's traffic</th><th>status</th></tr>
        </thead>
        <tbody>
          {canaries.map((c) => (
            <tr key={c.metadata.name}>
              <td>{c.metadata.name}</td>
              <td>{c.spec.trigger}</td>
              <td>{c.spec.oldfunction} → {c.spec.newfunction}</td>
              <td>+{c.spec.weightincrement}% every {c.spec.duration}</td>
              <td>{c.spec.failurethreshold}%</td>
              <td>
                {weight(c) !== undefined ? (
                  <span class="progress" title={`${weight(c)}%`}>
                    <span style={{ width: `${weight(c)}%` }} />
                  </span>
                ) : null}{" "}
                {weight(c) ?? "?"}%
              </td>
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
      <Charts name={name} namespace={namespace} />
      <div class="grid">
        <Invoke name={name} namespace={namespace} />
        <LogTail name={name} namespace={namespace} />
      </div>
    </>
  );
}

/** The function's last hour per 10 s: read once, then each `stats` event's bucket replaces its slot. */
function useFunctionSeries(name: string, namespace: string): { points: api.Point[]; summary?: api.Point; now: number } {
  const [state, setState] = useState<{ points: api.Point[]; summary?: api.Point; now: number }>({ points: [], now: Date.now() / 1000 });
  useEffect(() => {
    let stopped = false;
    setState({ points: [], now: Date.now() / 1000 });
    api
      .statsOne(namespace, name)
      .then((r) => {
        if (stopped) return;
        const f = r.functions[0];
        // Events that arrived during the read are newer than it: keep them.
        setState((s) => ({ points: merge(f?.points ?? [], s.points), summary: f?.summary, now: r.now }));
      })
      .catch(() => {});
    const on: StatsListener = (e) => {
      const f = e.functions.find((x) => x.name === name && x.namespace === namespace);
      if (!f) return;
      setState((s) => ({ points: merge(s.points, [f.bucket]).filter((p) => p.start > e.now - HOUR), summary: s.summary, now: e.now }));
    };
    statsListeners.add(on);
    // The time axis moves even without calls.
    const tick = window.setInterval(() => setState((s) => ({ ...s, now: Date.now() / 1000 })), 10_000);
    return () => {
      stopped = true;
      statsListeners.delete(on);
      window.clearInterval(tick);
    };
  }, [name, namespace]);
  return state;
}

/** `a` with `b`'s points replacing those of the same start, by time. */
function merge(a: api.Point[], b: api.Point[]): api.Point[] {
  if (!b.length) return a;
  const byStart = new Map(a.map((p) => [p.start, p]));
  for (const p of b) byStart.set(p.start, p);
  return [...byStart.values()].sort((x, y) => x.start - y.start);
}

const CHART_W = 560;
const CHART_H = 120;

function Charts({ name, namespace }: { name: string; namespace: string }) {
  const { points, summary, now } = useFunctionSeries(name, namespace);
  const calls = points.reduce((n, p) => n + p.calls, 0);
  const errors = points.reduce((n, p) => n + p.errors, 0);
  const cold = points.reduce((n, p) => n + p.coldStarts, 0);
  return (
    <section id="charts">
      <h2>
        Last hour <small id="hour-calls">{calls} calls, {errors} errors, {cold} cold starts{summary?.p99Ms !== undefined ? `, p50 ${ms(summary.p50Ms)}, p99 ${ms(summary.p99Ms)}` : ""}</small>
      </h2>
      <div class="grid">
        <Chart
          id="throughput"
          title="calls per 10 s"
          now={now}
          points={points}
          series={[
            { label: "calls", color: "#2459c9", value: (p) => p.calls, bars: true },
            { label: "errors", color: "#b42318", value: (p) => p.errors, bars: true },
          ]}
        />
        <Chart
          id="latency"
          title="latency (ms)"
          now={now}
          points={points}
          series={[
            { label: "p50", color: "#127a3d", value: (p) => p.p50Ms },
            { label: "p99", color: "#a15c00", value: (p) => p.p99Ms },
          ]}
        />
      </div>
    </section>
  );
}

interface ChartSeries {
  label: string;
  color: string;
  value: (p: api.Point) => number | undefined;
  bars?: boolean;
}

/** A one-hour time chart: bars (counts) or dots joined within runs of consecutive buckets (latencies). */
function Chart({ id, title, now, points, series }: { id: string; title: string; now: number; points: api.Point[]; series: ChartSeries[] }) {
  const from = now - HOUR;
  const slot = (CHART_W / HOUR) * 10;
  const values = points.flatMap((p) => series.map((s) => s.value(p) ?? 0));
  const max = Math.max(1, ...values);
  const x = (p: api.Point) => ((p.start - from) / HOUR) * CHART_W;
  const y = (v: number) => CHART_H - (v / max) * CHART_H;
  return (
    <div class="chart" id={id}>
      {/* A margin around the plot area, so the newest bucket's and the maximum's dots are whole. */}
      <svg width="100%" viewBox={`-4 -6 ${CHART_W + 8} ${CHART_H + 22}`} role="img" aria-label={title}>
        <line x1="0" x2={CHART_W} y1={CHART_H} y2={CHART_H} stroke="#e4e7ec" />
        {series.map((s) => {
          const shown = points.filter((p) => p.start >= from && s.value(p) !== undefined && (s.value(p) ?? 0) > 0);
          if (s.bars) {
            return (
              <path
                key={s.label}
                class={`series-${s.label}`}
                data-points={shown.length}
                d={shown.map((p) => `M${(x(p) + slot / 2).toFixed(1)} ${CHART_H}V${y(s.value(p) ?? 0).toFixed(1)}`).join("")}
                stroke={s.color}
                stroke-width={Math.max(1, slot - 0.5)}
              />
            );
          }
          let d = "";
          let prev: api.Point | undefined;
          for (const p of shown) {
            d += `${prev && p.start - prev.start <= 10 ? "L" : "M"}${(x(p) + slot / 2).toFixed(1)} ${y(s.value(p) ?? 0).toFixed(1)}`;
            prev = p;
          }
          // Lines join consecutive buckets; a dot marks each one, so a lone call is visible too.
          return (
            <g key={s.label}>
              <path class={`series-${s.label}`} data-points={shown.length} d={d} fill="none" stroke={s.color} stroke-width="2" />
              {shown.map((p) => (
                <circle key={p.start} cx={(x(p) + slot / 2).toFixed(1)} cy={y(s.value(p) ?? 0).toFixed(1)} r="2.5" fill={s.color}>
                  <title>{`${s.label} ${ms(s.value(p))}`}</title>
                </circle>
              ))}
            </g>
          );
        })}
        <text x="0" y={CHART_H + 13} font-size="11" fill="#667085">
          {title}, max {max >= 100 ? max.toFixed(0) : max.toFixed(1)} — {series.map((s) => s.label).join(" / ")} — last 60 min
        </text>
      </svg>
    </div>
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
