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
