// Formatting shared by the pages: UTC times (local offset on hover), grouped numbers,
// and small DOM helpers.

const NUMBER = new Intl.NumberFormat("en-US");
const PRICE = new Intl.NumberFormat("en-US", { maximumFractionDigits: 8 });

export function count(n: number): string {
  return NUMBER.format(n);
}

export function price(n: number): string {
  return PRICE.format(n);
}

function pad(n: number, width = 2): string {
  return String(n).padStart(width, "0");
}

/** "2026-11-30 06:41:27 UTC" (with milliseconds when asked). */
export function utc(date: Date, millis = false): string {
  const base =
    `${date.getUTCFullYear()}-${pad(date.getUTCMonth() + 1)}-${pad(date.getUTCDate())} ` +
    `${pad(date.getUTCHours())}:${pad(date.getUTCMinutes())}:${pad(date.getUTCSeconds())}`;
  return base + (millis ? "." + pad(date.getUTCMilliseconds(), 3) : "") + " UTC";
}

/** The same instant in the browser's time zone, with its offset: shown on hover. */
export function local(date: Date): string {
  const offset = -date.getTimezoneOffset();
  const sign = offset >= 0 ? "+" : "-";
  const abs = Math.abs(offset);
  const when =
    `${date.getFullYear()}-${pad(date.getMonth() + 1)}-${pad(date.getDate())} ` +
    `${pad(date.getHours())}:${pad(date.getMinutes())}:${pad(date.getSeconds())}`;
  return `local time ${when} (UTC${sign}${pad(Math.floor(abs / 60))}:${pad(abs % 60)})`;
}

/** A <time> element: UTC text, local time and offset in its title. */
export function timeEl(iso: string | null, millis = false): HTMLElement {
  if (!iso) return el("span", { class: "muted" }, "—");
  const date = new Date(iso);
  const t = el("time", { datetime: iso, title: local(date) }, utc(date, millis));
  return t;
}

export function duration(ms: number): string {
  if (ms < 0) ms = 0;
  const s = Math.floor(ms / 1000);
  const h = Math.floor(s / 3600);
  const m = Math.floor((s % 3600) / 60);
  const sec = s % 60;
  if (h) return `${h} h ${m} min`;
  if (m) return `${m} min ${sec} s`;
  return `${(ms / 1000).toFixed(1)} s`;
}

export function width(us: number): string {
  if (us >= 86_400_000_000) return `${us / 86_400_000_000} d`;
  if (us >= 3_600_000_000) return `${us / 3_600_000_000} h`;
  if (us >= 60_000_000) return `${us / 60_000_000} min`;
  if (us >= 1_000_000) return `${us / 1_000_000} s`;
  if (us >= 1_000) return `${us / 1_000} ms`;
  return `${us} µs`;
}

type Child = Node | string | null | undefined | false;

export function el<K extends keyof HTMLElementTagNameMap>(
  tag: K,
  attrs: Record<string, string> = {},
  ...children: Child[]
): HTMLElementTagNameMap[K] {
  const node = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs)) node.setAttribute(k, v);
  for (const c of children) {
    if (c === null || c === undefined || c === false) continue;
    node.append(c);
  }
  return node;
}

export function statusBadge(status: string): HTMLElement {
  return el("span", { class: "status " + status }, status);
}

export const ACTIVE = new Set(["pending", "running", "stopping"]);
