// The compare view at /ui/compare?ids=a,b[,c…]: two or more backtests side by side —
// their summary metrics in one table and their equity curves overlaid on one chart.
// The URL names the backtests, so it can be shared.

import { LineSeries, type Time, createChart } from "lightweight-charts";
import { allRows, api, ApiError, dataSession, type EquityRow, type ResultSummary,
  type Session } from "./api";
import { count, el, price, utc } from "./format";
import { equityPoints, metricName, metricValue } from "./results";

const COLORS = ["#2457c5", "#b3261e", "#1e6b3a", "#8a4baf", "#c77700", "#00838f"];
const MAX_EQUITY_ROWS = 200_000;

interface Run {
  session: Session;
  results: ResultSummary | null;
  error: string | null;
}

export function comparePage(main: HTMLElement): void {
  document.title = "ticktape: compare backtests";
  const raw = new URLSearchParams(location.search).get("ids") ?? "";
  const ids = [...new Set(raw.split(",").map((x) => x.trim()).filter((x) => x))];
  const message = el("div", { id: "message", role: "status", "aria-live": "polite" });
  const back = el("p", {}, el("a", { href: "/" }, "← all sessions"));
  if (ids.length < 2) {
    main.replaceChildren(back, el("h1", {}, "Compare backtests"),
      el("p", { class: "error", role: "alert", id: "message" },
        "name two or more backtests to compare: /ui/compare?ids=<id>,<id>"));
    return;
  }
  const table = el("div", { id: "compare-table" }, el("p", { class: "muted" }, "loading…"));
  const legend = el("ul", { id: "compare-legend", class: "plain legend" });
  const chartInfo = el("p", { class: "muted", id: "compare-info", "aria-live": "polite" });
  const chartBox = el("div", { id: "compare-chart", class: "chart", role: "img",
    "aria-label": "equity curves of the compared backtests, overlaid" });
  main.replaceChildren(back, el("h1", {}, `Compare ${count(ids.length)} backtests`), message,
    el("section", { "aria-labelledby": "cmp-metrics-h" },
      el("h2", { id: "cmp-metrics-h" }, "Summary metrics"), table),
    el("section", { "aria-labelledby": "cmp-equity-h" },
      el("h2", { id: "cmp-equity-h" }, "Equity curves"), chartInfo, legend, chartBox));

  async function loadRun(id: string): Promise<Run | string> {
    let session: Session;
    try {
      session = await api<Session>("GET", `/api/sessions/${encodeURIComponent(id)}`);
    } catch (err) {
      return err instanceof ApiError && err.status === 404
        ? `no session has the id ${id}` : `cannot load session ${id}: ${(err as Error).message}`;
    }
    if (session.kind !== "backtest" && session.kind !== "paper") {
      return { session, results: null, error: `a ${session.kind} session has no results` };
    }
    try {
      const results = await api<ResultSummary>("GET",
        `/api/sessions/${encodeURIComponent(id)}/results`);
      return { session, results, error: null };
    } catch (err) {
      return { session, results: null, error: (err as Error).message };
    }
  }

  async function start(): Promise<void> {
    const found = await Promise.all(ids.map(loadRun));
    const missing = found.filter((r): r is string => typeof r === "string");
    const runs = found.filter((r): r is Run => typeof r !== "string");
    if (missing.length) {
      message.textContent = missing.join("; ");
      message.className = "error";
      message.setAttribute("role", "alert");
    }
    const sources = new Set(runs.map((r) => dataSession(r.session)));
    if (sources.size > 1) {
      message.append(el("p", { class: "muted" },
        "Note: these runs replay different recordings, so their figures are not like for like."));
    }
    renderTable(runs);
    await drawEquity(runs);
  }

  function head(r: Run, i: number): HTMLElement {
    return el("th", { scope: "col", "data-id": r.session.id },
      el("span", { class: "swatch", style: `background:${COLORS[i % COLORS.length]}` }),
      el("a", { href: "/ui/sessions/" + encodeURIComponent(r.session.id) },
        el("code", { title: r.session.id }, r.session.id.slice(0, 8))));
  }

  function renderTable(runs: Run[]): void {
    if (!runs.length) {
      table.replaceChildren(el("p", { class: "muted" }, "nothing to compare"));
      return;
    }
    const keys: string[] = [];
    for (const r of runs) {
      for (const k of Object.keys(r.results?.summary ?? {})) if (!keys.includes(k)) keys.push(k);
    }
    const runOf = (r: Run): Record<string, unknown> =>
      (r.session.config.strategy_run as Record<string, unknown> | null) ?? {};
    const rows: [string, string, (r: Run) => string][] = [
      ["strategy", "Strategy", (r) => String(runOf(r).strategy ?? "—")],
      ["params", "Parameters", (r) => JSON.stringify(runOf(r).params ?? {})],
      ["source", "Recording", (r) => dataSession(r.session).slice(0, 8)],
      ["status", "Status", (r) => r.session.status],
      ...keys.map((k): [string, string, (r: Run) => string] => [k, metricName(k),
        (r) => r.results ? metricValue(k, r.results.summary[k]) : (r.error ?? "—")]),
      ["orders", "Orders", (r) => r.results ? count(r.results.orders) : "—"],
      ["fills", "Fills", (r) => r.results ? count(r.results.fills) : "—"],
    ];
    table.replaceChildren(el("div", { class: "scroll" }, el("table", { class: "compare" },
      el("caption", { class: "sr-only" }, "summary metrics, one column per backtest"),
      el("thead", {}, el("tr", {}, el("th", { scope: "col" }, "Metric"),
        ...runs.map((r, i) => head(r, i)))),
      el("tbody", {}, ...rows.map(([key, name, value]) => el("tr", { "data-metric": key },
        el("th", { scope: "row" }, name),
        ...runs.map((r) => el("td", { class: "num" }, value(r)))))))));
  }

  async function drawEquity(runs: Run[]): Promise<void> {
    const withResults = runs.filter((r) => r.results);
    if (!withResults.length) {
      chartInfo.textContent = "no equity curves: none of these runs has results";
      return;
    }
    chartInfo.textContent = "loading the equity curves…";
    const chart = createChart(chartBox, {
      autoSize: true,
      timeScale: { timeVisible: true, secondsVisible: true },
      localization: {
        timeFormatter: (t: Time) => utc(new Date((t as number) * 1000), true),
        priceFormatter: (p: number) => price(Math.round(p * 100) / 100),
      },
    });
    let drawn = 0;
    for (const [i, r] of runs.entries()) {
      if (!r.results) continue;
      const color = COLORS[i % COLORS.length];
      try {
        const { rows, more } = await allRows<EquityRow>(
          `/api/sessions/${encodeURIComponent(r.session.id)}/equity`, MAX_EQUITY_ROWS);
        const points = equityPoints(rows);
        chart.addSeries(LineSeries, { lineWidth: 2, color, title: r.session.id.slice(0, 8) })
          .setData(points);
        drawn++;
        legend.append(el("li", { "data-id": r.session.id, "data-rows": String(rows.length),
          "data-points": String(points.length) },
        el("span", { class: "swatch", style: `background:${color}` }),
        `${r.session.id.slice(0, 8)}: ${count(rows.length)} equity rows` +
          (more ? " (only the first drawn)" : "")));
      } catch (err) {
        legend.append(el("li", { class: "error" },
          `${r.session.id.slice(0, 8)}: cannot load the equity curve: ${(err as Error).message}`));
      }
    }
    chart.timeScale().fitContent();
    chartBox.dataset.series = String(drawn);
    chartInfo.textContent = `${count(drawn)} equity curves on one time axis`;
  }

  void start();
}
