// A backtest's or paper session's results on its page: summary metrics (/results), the
// equity curve (/equity, every row), the orders and fills tables (cursor-paged), the
// fills handed to the price chart as markers, and other backtests of the same source
// to compare with. Results are written when a run ends: nothing is asked for before.

import { LineSeries, type Time, createChart } from "lightweight-charts";
import { allRows, api, dataSession, query, type EquityRow, type FillRow, type ResultRows,
  type ResultSummary, type Session, type SessionList } from "./api";
import { ACTIVE, count, el, price, timeEl, utc } from "./format";

const MAX_EQUITY_ROWS = 200_000;
const MAX_FILL_MARKERS = 20_000;
const PAGE = 20;

/** Fractions the summary reports, shown as percentages. */
const PERCENT = new Set(["return", "max_drawdown", "win_rate", "exposure_time"]);
const LABELS: Record<string, string> = {
  pnl: "Profit and loss", return: "Return", sharpe: "Sharpe ratio", sortino: "Sortino ratio",
  max_drawdown: "Max drawdown", fees: "Fees", turnover: "Turnover", trade_count: "Trades",
  win_rate: "Win rate", max_position: "Max position", exposure_time: "Time in the market",
  final_equity: "Final equity", initial_cash: "Initial cash",
};

export function metricName(key: string): string {
  return LABELS[key] ?? key.replace(/_/g, " ");
}

export function metricValue(key: string, v: unknown): string {
  if (v === null || v === undefined) return "— (not defined for this run)";
  if (typeof v !== "number") return typeof v === "object" ? JSON.stringify(v) : String(v);
  if (PERCENT.has(key)) return price(Math.round(v * 1e6) / 1e4) + " %";
  return price(Math.round(v * 1e6) / 1e6);
}

/** Equity rows as line points: one per instant (the last row of an instant wins). */
export function equityPoints(rows: EquityRow[]): { time: Time; value: number }[] {
  const out: { time: Time; value: number }[] = [];
  let last = NaN;
  for (const r of rows) {
    const point = { time: (r.ts_us / 1e6) as Time, value: r.equity };
    if (r.ts_us === last) out[out.length - 1] = point;
    else out.push(point);
    last = r.ts_us;
  }
  return out;
}

function cell(key: string, v: unknown): HTMLElement {
  if (key.endsWith("_us") && typeof v === "number") {
    return el("td", {}, timeEl(new Date(v / 1000).toISOString(), true));
  }
  if (typeof v === "number") return el("td", { class: "num" }, price(v));
  if (v === null || v === undefined || v === "") return el("td", { class: "muted" }, "—");
  return el("td", {}, String(v));
}

/** The routes' rows have their keys sorted by name: ids and the main facts go first. */
const FIRST = ["fill_id", "order_id", "symbol", "side", "type", "status", "price", "qty",
  "filled_qty", "avg_price", "fee", "liquidity", "ts_us", "submitted_us"];

function columns(keys: string[]): string[] {
  const rank = (k: string): number => (FIRST.includes(k) ? FIRST.indexOf(k) : FIRST.length);
  return [...keys].sort((a, b) => rank(a) - rank(b)); // stable: the rest keep their order
}

/** A cursor-paged table of one results route. */
function pagedTable(sessionId: string, table: "orders" | "fills", title: string): {
  section: HTMLElement; load: () => void;
} {
  const hid = table + "-h";
  const body = el("div", { id: table + "-table" }, el("p", { class: "muted" },
    "written when the run ends"));
  const prev = el("button", { type: "button", class: "secondary" }, "← Previous");
  const next = el("button", { type: "button", class: "secondary" }, "Next →");
  const pageNo = el("span", { class: "muted" });
  const pager = el("nav", { class: "pager", "aria-label": title + " pages" }, prev, pageNo, next);
  pager.hidden = true;
  const cursors: (string | null)[] = [null];
  let nextCursor: string | null = null;

  async function load(): Promise<void> {
    try {
      const page = await api<ResultRows<Record<string, unknown>>>("GET",
        `/api/sessions/${encodeURIComponent(sessionId)}/${table}` +
        query({ limit: PAGE, cursor: cursors[cursors.length - 1] }));
      nextCursor = page.next_cursor;
      if (!page.rows.length) {
        body.replaceChildren(el("p", { class: "muted empty" },
          cursors.length > 1 ? "no more " + table : "none"));
      } else {
        const cols = columns(Object.keys(page.rows[0]));
        body.replaceChildren(el("div", { class: "scroll" }, el("table", {},
          el("caption", { class: "sr-only" }, title),
          el("thead", {}, el("tr", {}, ...cols.map((c) => el("th", { scope: "col" },
            c.replace(/_us$/, "").replace(/_/g, " "))))),
          el("tbody", {}, ...page.rows.map((row) => el("tr", {},
            ...cols.map((c) => cell(c, row[c]))))))));
      }
      pager.hidden = cursors.length === 1 && !nextCursor;
      prev.disabled = cursors.length <= 1;
      next.disabled = !nextCursor;
      pageNo.textContent = `page ${cursors.length}`;
    } catch (err) {
      body.replaceChildren(el("p", { class: "error" },
        `cannot load the ${table}: ` + (err as Error).message));
    }
  }
  prev.addEventListener("click", () => {
    if (cursors.length > 1) {
      cursors.pop();
      void load();
    }
  });
  next.addEventListener("click", () => {
    if (nextCursor) {
      cursors.push(nextCursor);
      void load();
    }
  });
  return {
    section: el("section", { "aria-labelledby": hid }, el("h2", { id: hid }, title), body, pager),
    load: () => void load(),
  };
}

export function resultSections(s: Session, onFills: (rows: FillRow[]) => void): {
  sections: HTMLElement[]; tables: HTMLElement[]; update: (s: Session) => void;
} {
  if (s.kind !== "backtest" && s.kind !== "paper") {
    return { sections: [], tables: [], update: () => undefined };
  }
  const id = s.id;
  const metrics = el("div", { id: "metrics" }, el("p", { class: "muted" },
    "results are written when the run ends"));
  const equityInfo = el("p", { class: "muted", id: "equity-info", "aria-live": "polite" });
  const equityBox = el("div", { id: "equity", class: "chart", role: "img",
    "aria-label": "equity curve" });
  equityBox.hidden = true;
  const compare = el("div", { id: "compare-with" });
  const orders = pagedTable(id, "orders", "Orders");
  const fillsTable = pagedTable(id, "fills", "Fills");
  let loaded = false;

  async function loadSummary(): Promise<void> {
    try {
      const r = await api<ResultSummary>("GET", `/api/sessions/${encodeURIComponent(id)}/results`);
      const dl = el("dl", { class: "facts", id: "metrics-list" });
      for (const [k, v] of Object.entries(r.summary)) {
        dl.append(el("dt", {}, metricName(k)), el("dd", { "data-metric": k }, metricValue(k, v)));
      }
      dl.append(el("dt", {}, "Run ended"), el("dd", { "data-metric": "status" }, r.status),
        el("dt", {}, "Orders"), el("dd", { "data-metric": "orders" }, count(r.orders)),
        el("dt", {}, "Fills"), el("dd", { "data-metric": "fills" }, count(r.fills)),
        el("dt", {}, "Equity rows"), el("dd", { "data-metric": "equity" }, count(r.equity)),
        el("dt", {}, "Written"), el("dd", {}, timeEl(r.written_at)),
        el("dt", {}, "Results hash"), el("dd", {}, el("code", { title: r.hash },
          r.hash.slice(0, 16) + "…")));
      metrics.replaceChildren(dl);
    } catch (err) {
      metrics.replaceChildren(el("p", { class: "error" },
        "cannot load the results: " + (err as Error).message));
    }
  }

  async function loadEquity(): Promise<void> {
    equityInfo.textContent = "loading the equity curve…";
    try {
      const { rows, more } = await allRows<EquityRow>(
        `/api/sessions/${encodeURIComponent(id)}/equity`, MAX_EQUITY_ROWS);
      if (!rows.length) {
        equityInfo.textContent = "no equity rows were written";
        return;
      }
      const points = equityPoints(rows);
      equityBox.hidden = false;
      const chart = createChart(equityBox, {
        autoSize: true,
        timeScale: { timeVisible: true, secondsVisible: true },
        localization: {
          timeFormatter: (t: Time) => utc(new Date((t as number) * 1000), true),
          priceFormatter: (p: number) => price(Math.round(p * 100) / 100),
        },
      });
      chart.addSeries(LineSeries, { lineWidth: 2, color: "#2457c5" }).setData(points);
      chart.timeScale().fitContent();
      equityBox.dataset.rows = String(rows.length);
      equityBox.dataset.points = String(points.length);
      const first = rows[0].equity;
      const last = rows[rows.length - 1].equity;
      equityInfo.textContent = `${count(rows.length)} rows` +
        (points.length < rows.length ? `, ${count(points.length)} instants` : "") +
        `; equity ${price(first)} → ${price(last)}` +
        (more ? `; only the first ${count(rows.length)} rows are drawn` : "");
    } catch (err) {
      equityInfo.textContent = "cannot load the equity curve: " + (err as Error).message;
    }
  }

  async function loadFills(): Promise<void> {
    try {
      const { rows } = await allRows<FillRow>(`/api/sessions/${encodeURIComponent(id)}/fills`,
        MAX_FILL_MARKERS);
      onFills(rows);
    } catch (err) {
      equityInfo.textContent = "cannot load the fills: " + (err as Error).message;
    }
  }

  async function loadCompare(): Promise<void> {
    if (s.kind !== "backtest") return;
    const source = dataSession(s);
    try {
      const page = await api<SessionList>("GET", "/api/sessions" +
        query({ kind: "backtest", status: "completed,stopped", limit: 200 }));
      const others = page.sessions.filter((o) => o.id !== id && dataSession(o) === source);
      if (!others.length) {
        compare.replaceChildren(el("p", { class: "muted" },
          "no other finished backtest of the same recording to compare with"));
        return;
      }
      const link = el("a", { href: "#", id: "compare-link", class: "button" }, "Compare");
      const chosen = new Set<string>();
      const refresh = (): void => {
        link.setAttribute("href",
          "/ui/compare?ids=" + [id, ...chosen].map(encodeURIComponent).join(","));
        link.setAttribute("aria-disabled", chosen.size ? "false" : "true");
        link.classList.toggle("disabled", !chosen.size);
      };
      link.addEventListener("click", (e) => { if (!chosen.size) e.preventDefault(); });
      const boxes = others.map((o) => {
        const box = el("input", { type: "checkbox", value: o.id, "data-compare": o.id });
        box.addEventListener("change", () => {
          if (box.checked) chosen.add(o.id);
          else chosen.delete(o.id);
          refresh();
        });
        const run = o.config.strategy_run as { strategy?: string; params?: unknown } | null;
        return el("li", {}, el("label", { class: "inline" }, box,
          ` ${o.id.slice(0, 8)} · ${run?.strategy ?? "?"} ${JSON.stringify(run?.params ?? {})}` +
          ` · ${o.status}`));
      });
      refresh();
      compare.replaceChildren(el("p", { class: "muted" },
        "Other backtests of the same recording; tick one or more:"),
      el("ul", { class: "plain" }, ...boxes), link);
    } catch (err) {
      compare.replaceChildren(el("p", { class: "error" },
        "cannot list the other backtests: " + (err as Error).message));
    }
  }

  function update(now: Session): void {
    if (loaded || ACTIVE.has(now.status)) return;
    loaded = true;
    void loadSummary();
    void loadEquity();
    void loadFills();
    orders.load();
    fillsTable.load();
    void loadCompare();
  }

  const sections = [
    el("section", { "aria-labelledby": "metrics-h" }, el("h2", { id: "metrics-h" }, "Results"),
      metrics),
    el("section", { "aria-labelledby": "equity-h" }, el("h2", { id: "equity-h" }, "Equity curve"),
      equityInfo, equityBox),
  ];
  const tables = [orders.section, fillsTable.section];
  if (s.kind === "backtest") {
    tables.push(el("section", { "aria-labelledby": "compare-h" },
      el("h2", { id: "compare-h" }, "Compare"), compare));
  }
  return { sections, tables, update };
}
