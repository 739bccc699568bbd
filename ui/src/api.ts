// The controller's REST API (same origin as the page) and the dashboard's invoke endpoint.

export interface Meta {
  name: string;
  namespace: string;
  resourceVersion?: string;
  creationTimestamp?: string;
}

export interface Ref {
  name: string;
  namespace?: string;
}

export interface Environment {
  metadata: Meta;
  spec: { version?: number; poolsize?: number; runtime?: { image?: string }; builder?: { image?: string } };
}

export interface Fn {
  metadata: Meta;
  spec: {
    environment: Ref;
    package?: { packageref?: Ref; functionName?: string };
    InvokeStrategy?: { ExecutionStrategy?: { ExecutorType?: string; MinScale?: number; MaxScale?: number } };
    concurrency?: number;
    functionTimeout?: number;
  };
}

export interface Package {
  metadata: Meta;
  spec: { environment: Ref };
  status?: { buildstatus?: string; buildlog?: string; lastUpdateTimestamp?: string };
}

export interface FunctionRef {
  type?: string;
  name?: string;
  functionweights?: Record<string, number> | null;
}

export interface Trigger {
  metadata: Meta;
  spec: {
    functionref?: FunctionRef;
    relativeurl?: string;
    prefix?: string;
    method?: string;
    methods?: string[];
    cron?: string;
    topic?: string;
    messageQueueType?: string;
    type?: string;
  };
}

export interface Canary {
  metadata: Meta;
  spec: { trigger: string; newfunction: string; oldfunction: string; weightincrement: number; duration: string; failurethreshold: number };
  status?: { status?: string };
}

export interface InvokeRequest {
  function: string;
  namespace: string;
  method: string;
  path: string;
  headers: Record<string, string>;
  body: string;
}

export interface InvokeResponse {
  status: number;
  headers: [string, string][];
  body: string;
  truncated: boolean;
  duration_ms: number;
}

/** A failed API call, with the controller's message when it sent one. */
export class ApiError extends Error {}

async function failure(resp: Response, what: string): Promise<ApiError> {
  // The login cookie is missing or no longer the server's token (a restart with another one):
  // loading the page again shows the server's login form.
  if (resp.status === 401) location.reload();
  let message = `${resp.status} ${resp.statusText}`;
  try {
    const body = await resp.json();
    if (body && typeof body.message === "string") message = body.message;
  } catch {
    // not JSON: the status line says enough
  }
  return new ApiError(`${what}: ${message}`);
}

/** A collection's JSON text, unparsed: the caller skips parsing (and rendering) when it is unchanged. */
export async function listText(path: string, namespace: string): Promise<string> {
  const resp = await fetch(`/v2/${path}?namespace=${encodeURIComponent(namespace)}`);
  if (!resp.ok) throw await failure(resp, `listing ${path}`);
  return await resp.text();
}

export function parseList<T>(text: string): T[] {
  const items: unknown = JSON.parse(text);
  return Array.isArray(items) ? (items as T[]) : [];
}

export async function invoke(req: InvokeRequest): Promise<InvokeResponse> {
  const resp = await fetch("/ui/api/invoke", {
    method: "POST",
    headers: { "Content-Type": "application/json" },
    body: JSON.stringify(req),
  });
  if (!resp.ok) throw await failure(resp, `invoking ${req.function}`);
  return (await resp.json()) as InvokeResponse;
}

/**
 * Follow a function's log (`fn logs -f`'s endpoint): `onLines` gets each chunk of complete
 * lines as it arrives, until `signal` aborts or the server ends the stream.
 */
export async function followLogs(
  fn: string,
  namespace: string,
  signal: AbortSignal,
  onLines: (lines: string[]) => void,
): Promise<void> {
  const url = `/proxy/logs/${encodeURIComponent(fn)}?namespace=${encodeURIComponent(namespace)}&follow=true&recordcount=100`;
  const resp = await fetch(url, { signal });
  if (!resp.ok || !resp.body) throw await failure(resp, `following the log of ${fn}`);
  const reader = resp.body.pipeThrough(new TextDecoderStream()).getReader();
  let partial = "";
  for (;;) {
    const { value, done } = await reader.read();
    if (done) return;
    const parts = (partial + value).split("\n");
    partial = parts.pop() ?? "";
    if (parts.length) onLines(parts);
  }
}

export function executorType(f: Fn): string {
  return f.spec.InvokeStrategy?.ExecutionStrategy?.ExecutorType || "poolmgr";
}

/** The functions a trigger sends to: one by name, or the weighted set. */
export function targets(ref: FunctionRef | undefined): string[] {
  if (!ref) return [];
  if (ref.type === "function-weights" && ref.functionweights) return Object.keys(ref.functionweights);
  return ref.name ? [ref.name] : [];
}

/** One step of a function's calls (`/v2/stats/...`). */
export interface Point {
  start: number;
  calls: number;
  errors: number;
  coldStarts: number;
  p50Ms?: number;
  p99Ms?: number;
}

export interface FunctionSeries {
  namespace: string;
  name: string;
  totalCalls: number;
  totalErrors: number;
  summary: Point;
  points: Point[];
}

export interface StatsResponse {
  step: number;
  now: number;
  window: number;
  functions: FunctionSeries[];
}

/** A `stats` event: the current 10-second bucket and minute of each function called since the last one. */
export interface LatestEvent {
  now: number;
  functions: { namespace: string; name: string; totalCalls: number; totalErrors: number; bucket: Point; minute: Point }[];
}

/** A `change` event: a write to the store, with the object (absent for secrets and config maps). */
export interface ChangeEvent {
  kind: string;
  type: string;
  namespace: string;
  name: string;
  object?: unknown;
}

/** Every function of `namespace` called in the last hour, per minute. */
export async function statsList(namespace: string): Promise<StatsResponse> {
  const resp = await fetch(`/v2/stats/functions?namespace=${encodeURIComponent(namespace)}&step=60`);
  if (!resp.ok) throw await failure(resp, "reading call statistics");
  return (await resp.json()) as StatsResponse;
}

/** One function's last hour, per 10 seconds. */
export async function statsOne(namespace: string, name: string): Promise<StatsResponse> {
  const resp = await fetch(`/v2/stats/functions/${encodeURIComponent(namespace)}/${encodeURIComponent(name)}?step=10`);
  if (!resp.ok) throw await failure(resp, `reading call statistics of ${name}`);
  return (await resp.json()) as StatsResponse;
}

export interface TriggerStatus {
  fired: number;
  succeeded: number;
  failed: number;
  lastFire?: string;
  lastStatus?: number;
  lastError?: string;
}

/** A time or message-queue trigger's fires; `null` when the server does not run it. */
export async function triggerStatus(kind: "time" | "messagequeue", name: string, namespace: string): Promise<TriggerStatus | null> {
  const resp = await fetch(`/v2/triggerstatus/${kind}/${encodeURIComponent(name)}?namespace=${encodeURIComponent(namespace)}`);
  if (resp.status === 404) return null;
  if (!resp.ok) throw await failure(resp, `reading the status of trigger ${name}`);
  return (await resp.json()) as TriggerStatus;
}

/**
 * Follow the server's live stream for `namespace`: `onStats` with calls as they are answered,
 * `onChange` for every write to the store, `onState` when the connection opens or drops
 * (EventSource reconnects by itself). Returns the function that closes it.
 */
export function follow(
  namespace: string,
  onStats: (e: LatestEvent) => void,
  onChange: (e: ChangeEvent) => void,
  onState: (open: boolean) => void,
): () => void {
  const es = new EventSource(`/v2/stats/stream?namespace=${encodeURIComponent(namespace)}`);
  es.addEventListener("stats", (e) => onStats(JSON.parse((e as MessageEvent).data) as LatestEvent));
  es.addEventListener("change", (e) => onChange(JSON.parse((e as MessageEvent).data) as ChangeEvent));
  es.onopen = () => onState(true);
  es.onerror = () => onState(false);
  return () => es.close();
}
