// Calls to the ticktape API. Every error the API answers is thrown as ApiError with
// the API's own message ({"error": {"code", "message"}}), for the page to show.

export interface Stats {
  trades: number;
  orderbook: number;
  errors: number;
  ticks_total?: number | null; // backtest: ticks to replay
  progress?: number | null; // backtest: replayed / total
  eta_s?: number | null; // backtest: seconds left (running only)
}

export interface Session {
  id: string;
  kind: string;
  status: string;
  symbols: string[];
  exchange: string;
  data_types: string[];
  config: Record<string, unknown>;
  created_at: string;
  started_at: string | null;
  ended_at: string | null;
  reason: string | null;
  stats: Stats;
  owner: string | null;
  version: number;
  deleted: boolean;
}

export interface SessionList {
  sessions: Session[];
  next_cursor: string | null;
}

export interface SessionEvent {
  session_id: string;
  seq: number;
  at: string;
  from_status: string | null;
  to_status: string;
  actor: string;
  reason: string;
  detail: string | null;
}

export interface Bucket {
  t_us: number;
  open: number;
  high: number;
  low: number;
  close: number;
  count: number;
  volume: number;
}

export interface Chart {
  session_id: string;
  symbol: string;
  start: string | null;
  end: string | null;
  width_us: number;
  buckets: Bucket[];
  trades: number;
  truncated: boolean;
}

export interface Book {
  symbol: string;
  ts: string;
  bids: [number, number][];
  asks: [number, number][];
}

export class ApiError extends Error {
  constructor(
    message: string,
    readonly status: number,
    readonly code: string,
  ) {
    super(message);
  }
}

const TOKEN_KEY = "ticktape-token";

export function token(): string {
  return sessionStorage.getItem(TOKEN_KEY) ?? "";
}

export function setToken(value: string): void {
  sessionStorage.setItem(TOKEN_KEY, value);
}

let csrf: string | null = null; // for a browser signed in with a cookie (no token)

async function send(method: string, path: string, body?: unknown): Promise<Response> {
  const headers: Record<string, string> = { Accept: "application/json" };
  if (body !== undefined) headers["Content-Type"] = "application/json";
  if (method !== "GET") {
    if (token()) headers["Authorization"] = "Bearer " + token();
    else if (csrf) headers["X-CSRF-Token"] = csrf;
  }
  return fetch(path, {
    method,
    headers,
    body: body === undefined ? undefined : JSON.stringify(body),
    credentials: "same-origin",
  });
}

async function failure(resp: Response): Promise<ApiError> {
  const data = (await resp.json().catch(() => ({}))) as {
    error?: { code?: string; message?: string };
  };
  const message = data.error?.message ?? (resp.statusText || "request failed");
  return new ApiError(`${message} (HTTP ${resp.status})`, resp.status, data.error?.code ?? "");
}

export async function api<T>(method: string, path: string, body?: unknown): Promise<T> {
  let resp: Response;
  try {
    resp = await send(method, path, body);
  } catch {
    throw new ApiError("the server cannot be reached", 0, "unreachable");
  }
  if (resp.status === 403 && method !== "GET" && !token()) {
    const err = await failure(resp);
    if (err.code !== "csrf_failed") throw err;
    // Signed in with a cookie: fetch a CSRF token bound to it and try once more.
    const got = await fetch("/csrf-token", { credentials: "same-origin" });
    if (!got.ok) throw err;
    const data = (await got.json()) as { data?: { token?: string } };
    csrf = data.data?.token ?? null;
    resp = await send(method, path, body);
  }
  if (!resp.ok) throw await failure(resp);
  return (await resp.json()) as T;
}

export function query(params: Record<string, string | number | null | undefined>): string {
  const q = new URLSearchParams();
  for (const [k, v] of Object.entries(params)) {
    if (v !== null && v !== undefined && v !== "") q.set(k, String(v));
  }
  const s = q.toString();
  return s ? "?" + s : "";
}

export interface Strategy {
  name: string;
  description: string;
  forms: string[];
  origin: string;
  params_schema: ParamsSchema;
}

export interface ParamSchema {
  type?: string;
  title?: string;
  description?: string;
  default?: unknown;
  enum?: unknown[];
  minimum?: number;
  maximum?: number;
  exclusiveMinimum?: number;
  exclusiveMaximum?: number;
}

export interface ParamsSchema {
  properties?: Record<string, ParamSchema>;
  required?: string[];
}

export interface ResultSummary {
  session_id: string;
  status: string;
  hash: string;
  summary: Record<string, number | string | null>;
  orders: number;
  fills: number;
  equity: number;
  written_at: string;
}

export interface ResultRows<T> {
  rows: T[];
  next_cursor: string | null;
}

export interface EquityRow {
  ts_us: number;
  equity: number;
  cash: number;
  gross_exposure: number;
}

export interface FillRow {
  fill_id: number;
  order_id: number;
  symbol: string;
  side: string;
  price: number;
  qty: number;
  fee: number;
  liquidity: string;
  ts_us: number;
}

export interface Gap {
  symbol: string;
  data_type: string;
  start: string;
  end: string;
  duration_s: number;
  cause: string;
  lost: number | null;
  detail: string;
}

export interface Quality {
  session_id: string;
  streams: { symbol: string; data_type: string; gap_rows: Gap[] }[];
}

/** The session whose recording a session's market data lives in: a backtest replays
 * its source session; collect and paper sessions record their own. */
export function dataSession(s: Session): string {
  const run = s.config.strategy_run as Record<string, unknown> | null | undefined;
  if (s.kind === "backtest" && run && typeof run.source_session === "string") {
    return run.source_session;
  }
  return s.id;
}

/** Every row of a cursor-paged results route (at most `cap`); `more` says rows were left. */
export async function allRows<T>(path: string, cap: number): Promise<{ rows: T[]; more: boolean }> {
  const rows: T[] = [];
  let cursor: string | null = null;
  for (;;) {
    const page: ResultRows<T> = await api<ResultRows<T>>("GET",
      path + query({ limit: 10_000, cursor }));
    rows.push(...page.rows);
    cursor = page.next_cursor;
    if (!cursor) return { rows, more: false };
    if (rows.length >= cap) return { rows, more: true };
  }
}
