// The session page at /ui/sessions/{id}: header and stats (live), the price chart
// (buckets summed by the server; zooming loads finer ones), the order book at the
// chart's cursor, the transition history, and panels for routes this server has.

import {
  CandlestickSeries,
  type IChartApi,
  type ISeriesApi,
  type ISeriesMarkersPluginApi,
  LineSeries,
  type SeriesMarker,
  type MouseEventParams,
  type Time,
  type UTCTimestamp,
  createChart,
  createSeriesMarkers,
} from "lightweight-charts";
import { api, ApiError, dataSession, query, type Book, type Bucket, type Chart,
  type FillRow, type Gap, type Quality, type Session, type SessionEvent } from "./api";
import { ACTIVE, count, duration, el, price, statusBadge, timeEl, utc, width } from "./format";
import { Live, liveText } from "./live";
import { optionalPanels } from "./panels";
import { resultSections } from "./results";

const POINTS = 600;
const CHART_REFRESH_MS = 2000; // a running session's chart follows its trades this often

function sec(us: number): UTCTimestamp {
  return (us / 1e6) as UTCTimestamp;
}

function iso(us: number): string {
  return new Date(Math.floor(us / 1000)).toISOString().replace("Z", "") +
    String(Math.floor(us % 1000)).padStart(3, "0") + "Z";
}

export function sessionPage(main: HTMLElement, id: string): void {
  document.title = "ticktape: session " + id.slice(0, 8);
  let session: Session | null = null;
  let dataId = id; // where the market data lives: a backtest's source recording
  main.replaceChildren(el("p", { class: "muted", id: "loading" }, "loading session…"));

  // ---------------------------------------------------------------- header
  const title = el("h1", {}, "Session ", el("code", {}, id));
  const message = el("div", { id: "message", role: "status", "aria-live": "polite" });
  const liveNote = el("span", { class: "muted", id: "updated", "aria-live": "polite" });
  const facts = el("dl", { class: "facts", id: "facts" });
  const actions = el("div", { class: "actions" });

  function fact(name: string, ...value: (Node | string)[]): HTMLElement[] {
    return [el("dt", {}, name), el("dd", { "data-fact": name.toLowerCase() }, ...value)];
  }

  function renderHeader(s: Session): void {
    const started = s.started_at ? new Date(s.started_at).getTime() : null;
    const ended = s.ended_at ? new Date(s.ended_at).getTime() : Date.now();
    facts.replaceChildren(
      ...fact("Status", statusBadge(s.status)),
      ...fact("Kind", s.kind),
      ...fact("Exchange", s.exchange),
      ...fact("Symbols", s.symbols.join(", ")),
      ...fact("Data", s.data_types.join(", ")),
      ...fact("Owner", s.owner ?? "none"),
      ...fact("Created", timeEl(s.created_at)),
      ...fact("Started", timeEl(s.started_at)),
      ...fact("Ended", timeEl(s.ended_at)),
      ...fact("Ran for", started === null ? "—" : duration(ended - started)),
      ...fact("Trades", count(s.stats.trades)),
      ...fact("Order books", count(s.stats.orderbook)),
      ...fact("Errors", count(s.stats.errors)),
      ...(typeof s.stats.progress === "number"
        ? fact("Progress", `${(s.stats.progress * 100).toFixed(1)} %` +
          (typeof s.stats.ticks_total === "number" ? ` of ${count(s.stats.ticks_total)} ticks`
            : "") +
          (typeof s.stats.eta_s === "number" ? `, ${duration(s.stats.eta_s * 1000)} left` : ""))
        : []),
      ...(s.reason ? fact("Reason", s.reason) : []),
    );
    const state = ACTIVE.has(s.status) ? (s.status === "stopping" ? "stopping" : "stop") : "";
    if (actions.dataset.state === state) return; // keep the button (and its focus)
    actions.dataset.state = state;
    actions.replaceChildren();
    if (state) {
      const stop = el("button", { type: "button", id: "stop" },
        s.status === "stopping" ? "Stopping…" : "Stop session");
      stop.disabled = s.status === "stopping";
      stop.addEventListener("click", async () => {
        stop.disabled = true;
        try {
          const now = await api<Session>("POST", `/api/sessions/${encodeURIComponent(id)}/stop`);
          say(`session is ${now.status}`);
          update(now);
        } catch (err) {
          say("stop failed: " + (err as Error).message, true);
          stop.disabled = false;
        }
      });
      actions.append(stop);
    }
  }

  function say(text: string, error = false): void {
    message.textContent = text;
    message.className = error ? "error" : "ok";
    message.setAttribute("role", error ? "alert" : "status");
  }

  // ---------------------------------------------------------------- chart
  const symbolSelect = el("select", { id: "chart-symbol" });
  const styleSelect = el("select", { id: "chart-style" },
    el("option", { value: "line" }, "line (close)"), el("option", { value: "candles" }, "candles"));
  const resetZoom = el("button", { type: "button", class: "secondary", id: "chart-reset" },
    "Whole session");
  const chartInfo = el("p", { class: "muted", id: "chart-info", "aria-live": "polite" });
  const cursorInfo = el("p", { class: "muted", id: "cursor-info", "aria-live": "polite" },
    "Focus the chart and use the arrow keys to move its cursor (Shift: ten points, " +
    "Home/End: first/last); the order book follows.");
  const chartBox = el("div", { id: "chart", class: "chart", role: "group", tabindex: "0",
    "aria-roledescription": "chart",
    "aria-label": "price chart of the recorded trades; arrow keys move the cursor",
    "aria-describedby": "cursor-info" });
  const chartSection = el("section", { "aria-labelledby": "chart-h" },
    el("h2", { id: "chart-h" }, "Price"),
    el("div", { class: "controls" },
      el("label", { for: "chart-symbol" }, "Symbol", symbolSelect),
      el("label", { for: "chart-style" }, "Style", styleSelect), resetZoom),
    chartInfo, chartBox, cursorInfo);

  let chart: IChartApi | null = null;
  let series: ISeriesApi<"Line"> | ISeriesApi<"Candlestick"> | null = null;
  let overview: Chart | null = null; // the whole session at coarse buckets
  let shown: Bucket[] = [];
  let zoomed: { start: number; end: number } | null = null; // µs, when detail is loaded
  let applying = false;
  let zoomTimer: number | undefined;
  let lastChartLoad = 0;
  let marks: ISeriesMarkersPluginApi<Time> | null = null;
  let fills: FillRow[] = []; // a backtest's or paper session's fills, marked on the price
  let gaps: Gap[] = []; // the recording's gaps (quality report), marked on the price
  let cursorUs: number | null = null; // the keyboard cursor's bucket

  function ensureChart(): IChartApi {
    if (chart) return chart;
    chart = createChart(chartBox, {
      autoSize: true,
      layout: { attributionLogo: true },
      timeScale: { timeVisible: true, secondsVisible: true },
      localization: {
        timeFormatter: (t: Time) => utc(new Date((t as number) * 1000), true),
        priceFormatter: (p: number) => price(p),
      },
    });
    chart.subscribeCrosshairMove(onCursor);
    chart.subscribeClick(onCursor);
    chart.timeScale().subscribeVisibleTimeRangeChange(onRange);
    return chart;
  }

  function makeSeries(): void {
    const c = ensureChart();
    if (series) c.removeSeries(series);
    series = styleSelect.value === "candles"
      ? c.addSeries(CandlestickSeries, {})
      : c.addSeries(LineSeries, { lineWidth: 2, pointMarkersVisible: true });
    marks = createSeriesMarkers(series, []);
  }

  /** The shown bucket a time falls in (the last starting at or before it). */
  function bucketAt(us: number): Bucket | null {
    if (!shown.length) return null;
    let lo = 0;
    let hi = shown.length - 1;
    if (us < shown[0].t_us) return shown[0];
    while (lo < hi) {
      const mid = (lo + hi + 1) >> 1;
      if (shown[mid].t_us <= us) lo = mid;
      else hi = mid - 1;
    }
    return shown[lo];
  }

  /** Fills (arrows: up a buy, down a sell) and gaps (squares) on the price chart, each
   * at the bucket its time falls in. */
  function applyMarkers(): void {
    if (!marks) return;
    const symbol = symbolSelect.value;
    const list: SeriesMarker<Time>[] = [];
    let nFills = 0;
    let nGaps = 0;
    for (const f of fills) {
      const b = f.symbol === symbol ? bucketAt(f.ts_us) : null;
      if (!b) continue;
      nFills++;
      const buy = f.side === "buy";
      list.push({ time: sec(b.t_us), position: buy ? "belowBar" : "aboveBar",
        shape: buy ? "arrowUp" : "arrowDown", color: buy ? "#1e6b3a" : "#b3261e",
        id: "fill-" + f.fill_id });
    }
    for (const g of gaps) {
      const b = g.symbol === symbol ? bucketAt(Date.parse(g.start) * 1000) : null;
      if (!b) continue;
      nGaps++;
      list.push({ time: sec(b.t_us), position: "aboveBar", shape: "square", color: "#f0a500",
        text: `gap ${g.duration_s.toFixed(1)} s (${g.cause})` });
    }
    list.sort((a, b) => (a.time as number) - (b.time as number));
    marks.setMarkers(list);
    chartBox.dataset.fills = String(nFills);
    chartBox.dataset.gaps = String(nGaps);
  }

  // ---------------------------------------------------------------- keyboard cursor
  function moveCursor(key: string, shift: boolean): boolean {
    if (!shown.length || !chart || !series) return false;
    let at = cursorUs === null ? shown.length - 1
      : shown.findIndex((b) => b.t_us >= (cursorUs as number));
    if (at < 0) at = shown.length - 1;
    const step = shift ? 10 : 1;
    if (key === "ArrowLeft") at = cursorUs === null ? at : at - step;
    else if (key === "ArrowRight") at = cursorUs === null ? at : at + step;
    else if (key === "Home") at = 0;
    else if (key === "End") at = shown.length - 1;
    else return false;
    at = Math.max(0, Math.min(shown.length - 1, at));
    const b = shown[at];
    cursorUs = b.t_us;
    chartBox.dataset.cursor = String(b.t_us);
    const range = chart.timeScale().getVisibleLogicalRange();
    if (range && (at < range.from || at > range.to)) {
      const half = (range.to - range.from) / 2;
      applying = true;
      chart.timeScale().setVisibleLogicalRange({ from: at - half, to: at + half });
      window.setTimeout(() => { applying = false; }, 0);
    }
    chart.setCrosshairPosition(b.close, sec(b.t_us), series);
    cursorInfo.textContent = `cursor at ${utc(new Date(b.t_us / 1000), true)}: ` +
      `close ${price(b.close)}, ${count(b.count)} trades (point ${count(at + 1)} of ` +
      `${count(shown.length)})`;
    bookPinned = true;
    window.clearTimeout(bookTimer);
    bookTimer = window.setTimeout(() => void loadBook(b.t_us), 150);
    return true;
  }

  chartBox.addEventListener("keydown", (event) => {
    if (moveCursor(event.key, event.shiftKey)) event.preventDefault();
  });

  function draw(buckets: Bucket[]): void {
    if (!series) makeSeries();
    shown = buckets;
    applying = true;
    if (styleSelect.value === "candles") {
      (series as ISeriesApi<"Candlestick">).setData(buckets.map((b) => ({
        time: sec(b.t_us), open: b.open, high: b.high, low: b.low, close: b.close })));
    } else {
      (series as ISeriesApi<"Line">).setData(
        buckets.map((b) => ({ time: sec(b.t_us), value: b.close })));
    }
    chartBox.dataset.points = String(buckets.length);
    applyMarkers();
    window.setTimeout(() => { applying = false; }, 0);
  }

  function describe(c: Chart, detail: boolean): void {
    if (!c.buckets.length) {
      chartInfo.textContent = session && ACTIVE.has(session.status)
        ? "no trades recorded yet for " + c.symbol
        : "no trades were recorded for " + c.symbol;
      return;
    }
    chartInfo.textContent =
      `${count(c.buckets.length)} points, ${width(c.width_us)} each, ` +
      `${count(c.trades)} trades` + (detail ? " (zoomed: finer detail loaded)" : "") +
      (c.truncated ? "; range too long: only the first points are shown" : "");
  }

  async function loadOverview(): Promise<void> {
    if (!session) return;
    lastChartLoad = Date.now();
    try {
      const c = await api<Chart>("GET", `/api/sessions/${encodeURIComponent(dataId)}/chart` +
        query({ symbol: symbolSelect.value, points: POINTS }));
      overview = c;
      zoomed = null;
      chartBox.hidden = !c.buckets.length;
      describe(c, false);
      if (c.buckets.length) {
        draw(c.buckets);
        chart?.timeScale().fitContent();
        if (!bookPinned) void loadBook(c.buckets[c.buckets.length - 1].t_us);
      }
    } catch (err) {
      chartInfo.textContent = "cannot load the chart: " + (err as Error).message;
    }
  }

  // Zoom: when the visible range is a small part of what is loaded, ask the server
  // for that range at finer buckets and splice them into the overview.
  function onRange(): void {
    if (applying || !overview || !overview.buckets.length) return;
    window.clearTimeout(zoomTimer);
    zoomTimer = window.setTimeout(loadDetail, 300);
  }

  async function loadDetail(): Promise<void> {
    const range = chart?.timeScale().getVisibleRange();
    if (!range || !overview || !overview.start || !overview.end) return;
    const start = Math.max(Math.floor((range.from as number) * 1e6),
      Date.parse(overview.start) * 1000);
    const end = Math.min(Math.ceil((range.to as number) * 1e6) + 1,
      Date.parse(overview.end) * 1000 + 1000);
    const full = Date.parse(overview.end) * 1000 - Date.parse(overview.start) * 1000;
    if (end <= start || (end - start) > full * 0.6 || overview.width_us <= 1) return;
    if (zoomed && zoomed.start <= start && end <= zoomed.end) return;
    try {
      const c = await api<Chart>("GET", `/api/sessions/${encodeURIComponent(dataId)}/chart` +
        query({ symbol: overview.symbol, points: POINTS, start: iso(start), end: iso(end) }));
      if (c.width_us >= overview.width_us) return;
      zoomed = { start, end };
      const outside = overview.buckets.filter((b) => b.t_us < start || b.t_us >= end);
      const merged = [...outside, ...c.buckets].sort((a, b) => a.t_us - b.t_us);
      const visible = chart?.timeScale().getVisibleRange();
      draw(merged);
      if (visible) {
        applying = true;
        chart?.timeScale().setVisibleRange(visible);
        window.setTimeout(() => { applying = false; }, 0);
      }
      describe(c, true);
    } catch (err) {
      chartInfo.textContent = "cannot load detail: " + (err as Error).message;
    }
  }

  symbolSelect.addEventListener("change", () => { bookPinned = false; void loadOverview(); });
  styleSelect.addEventListener("change", () => { makeSeries(); draw(shown); });
  resetZoom.addEventListener("click", () => void loadOverview());

  // ---------------------------------------------------------------- order book
  const bookInfo = el("p", { class: "muted", id: "book-info", "aria-live": "polite" });
  const bookBody = el("div", { id: "book", class: "book" });
  const bookSection = el("section", { "aria-labelledby": "book-h" },
    el("h2", { id: "book-h" }, "Order book at the cursor"), bookInfo, bookBody);
  let bookTimer: number | undefined;
  let bookPinned = false;
  let bookAsked = 0;

  function onCursor(param: MouseEventParams<Time>): void {
    if (param.time === undefined || param.sourceEvent === undefined) return; // a key moved it
    const at = Math.round((param.time as number) * 1e6);
    cursorUs = bucketAt(at)?.t_us ?? null; // the keys go on from where the pointer left it
    bookPinned = true; // the user chose a time: a chart refresh no longer moves the book
    window.clearTimeout(bookTimer);
    bookTimer = window.setTimeout(() => void loadBook(at), 200);
  }

  async function loadBook(atUs: number): Promise<void> {
    if (!session || !session.data_types.includes("orderbook")) {
      bookInfo.textContent = "this session does not record order books";
      bookBody.replaceChildren();
      return;
    }
    const asked = ++bookAsked;
    try {
      const data = await api<{ orderbook: Book[] }>("GET",
        `/api/sessions/${encodeURIComponent(dataId)}/orderbook` +
        query({ symbol: symbolSelect.value, start: iso(atUs), limit: 1 }));
      if (asked !== bookAsked) return;
      const book = data.orderbook[0];
      bookInfo.dataset.at = book ? book.ts : "";
      if (!book) {
        bookInfo.textContent = `no order book recorded at or after ${utc(new Date(atUs / 1000), true)}`;
        bookBody.replaceChildren();
        return;
      }
      bookInfo.replaceChildren(`${book.symbol}, first snapshot at or after the cursor: `,
        timeEl(book.ts, true));
      bookBody.replaceChildren(depthTable("Bids", book.bids, "bid"),
        depthTable("Asks", book.asks, "ask"));
    } catch (err) {
      bookInfo.textContent = "cannot load the order book: " + (err as Error).message;
    }
  }

  function depthTable(name: string, levels: [number, number][], cls: string): HTMLElement {
    let total = 0;
    return el("table", { class: "depth " + cls },
      el("caption", {}, name),
      el("thead", {}, el("tr", {}, el("th", { class: "num", scope: "col" }, "Price"),
        el("th", { class: "num", scope: "col" }, "Quantity"),
        el("th", { class: "num", scope: "col" }, "Cumulative"))),
      el("tbody", {}, ...levels.map(([p, q]) => {
        total += q;
        return el("tr", {}, el("td", { class: "num" }, price(p)),
          el("td", { class: "num" }, price(q)), el("td", { class: "num" }, price(total)));
      })));
  }

  // ---------------------------------------------------------------- transitions
  const timeline = el("ol", { id: "timeline", class: "timeline" });
  const historySection = el("section", { "aria-labelledby": "history-h" },
    el("h2", { id: "history-h" }, "Transition history"), timeline);
  let eventsVersion = -1;

  async function loadEvents(): Promise<void> {
    try {
      const data = await api<{ events: SessionEvent[] }>("GET",
        `/api/sessions/${encodeURIComponent(id)}/events`);
      if (!data.events.length) {
        timeline.replaceChildren(el("li", { class: "muted" }, "no transitions recorded"));
        return;
      }
      timeline.replaceChildren(...data.events.map((e) => el("li", {},
        timeEl(e.at, true), " ",
        e.from_status ? statusBadge(e.from_status) : el("span", { class: "muted" }, "created"),
        " → ", statusBadge(e.to_status), " ",
        el("span", { class: "reason" }, e.reason), " ",
        el("span", { class: "muted" }, "by " + e.actor),
        e.detail ? el("div", { class: "muted detail" }, e.detail) : null)));
    } catch (err) {
      timeline.replaceChildren(el("li", { class: "error" },
        "cannot load the history: " + (err as Error).message));
    }
  }

  // ---------------------------------------------------------------- gaps and export
  const gapsBody = el("div", { id: "gaps" }, el("p", { class: "muted" }, "loading…"));
  const gapsHeading = el("h2", { id: "gaps-h" }, "Gaps in the recording");
  const gapsSection = el("section", { "aria-labelledby": "gaps-h" }, gapsHeading, gapsBody);
  const exportSection = el("section", { "aria-labelledby": "export-h", id: "export" });

  async function loadGaps(): Promise<void> {
    try {
      const q = await api<Quality>("GET", `/api/sessions/${encodeURIComponent(dataId)}/quality`);
      gaps = q.streams.flatMap((st) => st.gap_rows);
      gapsBody.dataset.gaps = String(gaps.length);
      applyMarkers();
      if (!gaps.length) {
        gapsBody.replaceChildren(el("p", { class: "muted" },
          "no gaps: the data quality report found none"));
        return;
      }
      gapsBody.replaceChildren(el("p", { class: "muted" },
        `${count(gaps.length)} gaps, marked on the price chart with squares`),
      el("div", { class: "scroll" }, el("table", {},
        el("thead", {}, el("tr", {}, ...["Symbol", "Data", "From", "To", "Seconds", "Cause",
          "Lost", "Detail"].map((h) => el("th", { scope: "col" }, h)))),
        el("tbody", {}, ...gaps.map((g) => el("tr", {},
          el("td", {}, g.symbol), el("td", {}, g.data_type), el("td", {}, timeEl(g.start, true)),
          el("td", {}, timeEl(g.end, true)), el("td", { class: "num" }, price(g.duration_s)),
          el("td", {}, g.cause), el("td", { class: "num" }, g.lost === null ? "unknown"
            : count(g.lost)), el("td", { class: "wrap" }, g.detail)))))));
    } catch (err) {
      gapsBody.replaceChildren(el("p", { class: "error" },
        "cannot load the quality report: " + (err as Error).message));
    }
  }

  function renderExport(s: Session): void {
    const base = `/api/sessions/${encodeURIComponent(dataId)}/export`;
    const what = dataId === id ? "this session's recording"
      : `the replayed recording (session ${dataId.slice(0, 8)})`;
    exportSection.replaceChildren(el("h2", { id: "export-h" }, "Export"),
      el("p", { class: "muted" }, `Download ${what}, oldest row first.`),
      el("div", { class: "actions export" }, ...s.data_types.flatMap((data) =>
        (["csv", "parquet"] as const).map((format) => el("a", {
          class: "button secondary", href: base + query({ format, data }),
          download: `${dataId}-${data}.${format}`, "data-export": `${data}.${format}`,
        }, `${data === "orderbook" ? "Order books" : "Trades"} (${format === "csv" ? "CSV"
          : "Parquet"})`)))));
  }

  // ---------------------------------------------------------------- live updates
  let results: { update: (s: Session) => void } | null = null;
  function update(s: Session): void {
    if (s.id !== id) return;
    if (session && s.version < session.version) return;
    const before = session;
    session = s;
    renderHeader(s);
    if (s.version !== eventsVersion) {
      eventsVersion = s.version;
      void loadEvents();
    }
    const moreTrades = !before || s.stats.trades !== before.stats.trades;
    const ended = before && ACTIVE.has(before.status) && !ACTIVE.has(s.status);
    results?.update(s);
    if (ended) void loadGaps();
    if (dataId !== id) return; // a backtest's price is its finished source's: drawn once
    if ((moreTrades || ended) && !zoomed && Date.now() - lastChartLoad >= CHART_REFRESH_MS) {
      void loadOverview();
    } else if (ended) {
      window.setTimeout(() => { if (!zoomed) void loadOverview(); }, CHART_REFRESH_MS);
    }
  }

  async function poll(): Promise<void> {
    try {
      update(await api<Session>("GET", `/api/sessions/${encodeURIComponent(id)}`));
    } catch (err) {
      say("cannot refresh the session: " + (err as Error).message, true);
    }
  }

  async function start(): Promise<void> {
    let s: Session;
    try {
      s = await api<Session>("GET", `/api/sessions/${encodeURIComponent(id)}`);
    } catch (err) {
      const text = err instanceof ApiError && err.status === 404
        ? `no session has the id ${id}` : "cannot load the session: " + (err as Error).message;
      main.replaceChildren(el("h1", {}, "Session not found"),
        el("p", { class: "error", role: "alert", id: "message" }, text),
        el("p", {}, el("a", { href: "/" }, "← all sessions")));
      return;
    }
    symbolSelect.replaceChildren(...s.symbols.map((x) => el("option", { value: x }, x)));
    dataId = dataSession(s);
    if (dataId !== id) {
      chartSection.querySelector("h2")?.replaceChildren("Price of the replayed recording (",
        el("a", { href: "/ui/sessions/" + encodeURIComponent(dataId) }, dataId.slice(0, 8)),
        ")");
      gapsHeading.textContent = "Gaps in the replayed recording";
    }
    const extra = resultSections(s, (rows) => { fills = rows; applyMarkers(); });
    results = extra;
    renderExport(s);
    main.replaceChildren(
      el("p", {}, el("a", { href: "/" }, "← all sessions")),
      title,
      el("section", { "aria-labelledby": "summary-h", class: "summary" },
        el("h2", { id: "summary-h" }, "Summary ", liveNote), facts, actions, message),
      ...extra.sections, chartSection, bookSection, ...extra.tables, gapsSection, exportSection, historySection,
    );
    void loadGaps();
    eventsVersion = -1;
    update(s);
    void loadOverview();
    optionalPanels(main, s);
    const live = new Live(update, (on) => {
      liveNote.textContent = "(" + liveText(on) + ")";
      liveNote.dataset.live = on ? "yes" : "no";
    }, poll);
    live.start();
    // "Ran for" of a running session moves with the clock, not only with changes.
    window.setInterval(() => { if (session && ACTIVE.has(session.status)) renderHeader(session); },
      1000);
  }

  void start();
}
