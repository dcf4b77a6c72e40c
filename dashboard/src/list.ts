// The sessions list at "/": start form, filters, sort, server-side paging, live rows.

import { api, ApiError, query, type Session, type SessionList } from "./api";
import { ACTIVE, count, el, statusBadge, timeEl } from "./format";
import { Live, liveText } from "./live";
import { startForm } from "./start";

const STATUSES = ["pending", "running", "stopping", "stopped", "completed", "failed"];
const KINDS = ["collect", "backtest", "paper"];
const PAGE_SIZES = [10, 20, 50, 100, 200];

interface Filters {
  status: string;
  kind: string;
  symbol: string;
  order: "newest" | "oldest";
  limit: number;
}

function readFilters(): Filters {
  const q = new URLSearchParams(location.search);
  const limit = Number(q.get("limit"));
  return {
    status: STATUSES.includes(q.get("status") ?? "") ? (q.get("status") as string) : "",
    kind: KINDS.includes(q.get("kind") ?? "") ? (q.get("kind") as string) : "",
    symbol: (q.get("symbol") ?? "").trim().toUpperCase(),
    order: q.get("order") === "oldest" ? "oldest" : "newest",
    limit: PAGE_SIZES.includes(limit) ? limit : 50,
  };
}

function matches(s: Session, f: Filters): boolean {
  return (
    !s.deleted &&
    (!f.status || s.status === f.status) &&
    (!f.kind || s.kind === f.kind) &&
    (!f.symbol || s.symbols.includes(f.symbol))
  );
}

function select(name: string, label: string, options: [string, string][], value: string) {
  const sel = el("select", { name, id: "f-" + name });
  for (const [v, text] of options) {
    const opt = el("option", { value: v }, text);
    if (v === value) opt.selected = true;
    sel.append(opt);
  }
  return { field: el("label", { for: "f-" + name }, label, sel), input: sel };
}

export function sessionsPage(main: HTMLElement): void {
  document.title = "ticktape: sessions";
  let filters = readFilters();
  let cursors: (string | null)[] = [null]; // the cursor of each page up to the current one
  let nextCursor: string | null = null;
  let shown: Session[] = [];
  const rows = new Map<string, HTMLTableRowElement>();

  // ---------------------------------------------------------------- start form
  const start = startForm((s) => upsert(s));
  const say = start.say;

  // ---------------------------------------------------------------- filters
  const fStatus = select("status", "Status",
    [["", "any"], ...STATUSES.map((s): [string, string] => [s, s])], filters.status);
  const fKind = select("kind", "Kind",
    [["", "any"], ...KINDS.map((k): [string, string] => [k, k])], filters.kind);
  const fOrder = select("order", "Sort",
    [["newest", "newest first"], ["oldest", "oldest first"]], filters.order);
  const fLimit = select("limit", "Per page",
    PAGE_SIZES.map((n): [string, string] => [String(n), String(n)]), String(filters.limit));
  const fSymbol = el("input", { type: "search", name: "symbol", id: "f-symbol",
    placeholder: "e.g. BTC_USDT", size: "12", value: filters.symbol });
  const filterForm = el("form", { id: "filters", role: "search", "aria-label": "filter sessions" },
    fStatus.field, fKind.field,
    el("label", { for: "f-symbol" }, "Symbol", fSymbol),
    fOrder.field, fLimit.field,
    el("button", { type: "submit", class: "secondary" }, "Apply"));

  function applyFilters(): void {
    filters = {
      status: fStatus.input.value,
      kind: fKind.input.value,
      symbol: fSymbol.value.trim().toUpperCase(),
      order: fOrder.input.value === "oldest" ? "oldest" : "newest",
      limit: Number(fLimit.input.value),
    };
    const q = query({ status: filters.status, kind: filters.kind, symbol: filters.symbol,
      order: filters.order === "oldest" ? "oldest" : null,
      limit: filters.limit === 50 ? null : filters.limit });
    history.replaceState(null, "", "/" + q);
    cursors = [null];
    void load();
  }
  for (const input of [fStatus.input, fKind.input, fOrder.input, fLimit.input]) {
    input.addEventListener("change", applyFilters);
  }
  filterForm.addEventListener("submit", (event) => {
    event.preventDefault();
    applyFilters();
  });

  // ---------------------------------------------------------------- table
  const updated = el("span", { class: "muted", id: "updated", "aria-live": "polite" });
  const listError = el("div", { id: "list-error", class: "error", role: "alert" });
  const tbody = el("tbody", { id: "sessions" },
    el("tr", {}, el("td", { colspan: "11", class: "muted" }, "loading…")));
  const table = el("table", { class: "sessions" },
    el("caption", { class: "sr-only" }, "Sessions"),
    el("thead", {}, el("tr", {},
      ...["Id", "Kind", "Exchange", "Status", "Symbols"].map((h) => el("th", { scope: "col" }, h)),
      ...["Trades", "Order books", "Errors"].map((h) =>
        el("th", { scope: "col", class: "num" }, h)),
      el("th", { scope: "col" }, "Created"),
      el("th", { scope: "col" }, "Reason"),
      el("th", { scope: "col" }, el("span", { class: "sr-only" }, "Actions")))),
    tbody);
  const prev = el("button", { type: "button", class: "secondary", id: "prev" }, "← Previous");
  const next = el("button", { type: "button", class: "secondary", id: "next" }, "Next →");
  const pageNo = el("span", { class: "muted", id: "page-no" });
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

  main.replaceChildren(
    el("h1", {}, "Sessions"),
    start.section,
    el("section", { "aria-labelledby": "list-h" },
      el("h2", { id: "list-h" }, "Sessions ", updated), filterForm, listError,
      el("div", { class: "scroll" }, table),
      el("nav", { class: "pager", "aria-label": "pages" }, prev, pageNo, next)),
  );

  function cellsOf(tr: HTMLTableRowElement): HTMLTableCellElement[] {
    return Array.from(tr.cells);
  }

  function fillRow(tr: HTMLTableRowElement, s: Session): void {
    const c = cellsOf(tr);
    c[3].replaceChildren(statusBadge(s.status));
    c[5].textContent = count(s.stats.trades);
    c[6].textContent = count(s.stats.orderbook);
    c[7].textContent = count(s.stats.errors);
    c[9].textContent = s.reason ?? "";
    const want = ACTIVE.has(s.status) ? (s.status === "stopping" ? "stopping" : "stop") : "";
    if (c[10].dataset.state !== want) {
      c[10].dataset.state = want;
      c[10].replaceChildren();
      if (want) {
        const stop = el("button", { type: "button", class: "secondary",
          "aria-label": `stop session ${s.id}` }, want === "stopping" ? "Stopping…" : "Stop");
        stop.disabled = want === "stopping";
        stop.addEventListener("click", () => void stopSession(s.id, stop));
        c[10].append(stop);
      }
    }
  }

  function makeRow(s: Session): HTMLTableRowElement {
    const link = el("a", { href: "/ui/sessions/" + encodeURIComponent(s.id) },
      el("code", { title: s.id }, s.id.slice(0, 8)));
    const tr = el("tr", { "data-id": s.id },
      el("td", {}, link), el("td", {}, s.kind), el("td", {}, s.exchange), el("td", {}),
      el("td", { class: "wrap" }, s.symbols.join(", ")),
      el("td", { class: "num" }), el("td", { class: "num" }), el("td", { class: "num" }),
      el("td", {}, timeEl(s.created_at)), el("td", { class: "wrap" }), el("td", {}));
    fillRow(tr, s);
    return tr;
  }

  function render(): void {
    rows.clear();
    if (!shown.length) {
      const none = cursors.length > 1 ? "no more sessions" : "no sessions match";
      tbody.replaceChildren(el("tr", {}, el("td", { colspan: "11", class: "muted empty" }, none)));
    } else {
      tbody.replaceChildren(...shown.map((s) => {
        const tr = makeRow(s);
        rows.set(s.id, tr);
        return tr;
      }));
    }
    prev.disabled = cursors.length <= 1;
    next.disabled = !nextCursor;
    pageNo.textContent = `page ${cursors.length}`;
  }

  function upsert(s: Session): void {
    const at = shown.findIndex((x) => x.id === s.id);
    if (at >= 0) {
      if (s.version < shown[at].version) return; // an older state arrived late
      if (s.deleted && !matches(s, filters)) {
        shown.splice(at, 1);
        render();
        return;
      }
      shown[at] = s;
      const tr = rows.get(s.id);
      if (tr) fillRow(tr, s);
      return;
    }
    // A session not on this page: one created after everything shown belongs at the
    // top of the first page (newest first); any other belongs to another page.
    const newest = shown.length ? shown[0].created_at : "";
    if (cursors.length === 1 && filters.order === "newest" && matches(s, filters) &&
        Date.parse(s.created_at) > (newest ? Date.parse(newest) : 0)) {
      shown.unshift(s);
      render();
    }
  }

  async function load(): Promise<void> {
    const q = query({
      status: filters.status, kind: filters.kind, symbol: filters.symbol,
      order: filters.order, limit: filters.limit, cursor: cursors[cursors.length - 1],
    });
    try {
      const page = await api<SessionList>("GET", "/api/sessions" + q);
      shown = page.sessions;
      nextCursor = page.next_cursor;
      listError.textContent = "";
      render();
    } catch (err) {
      listError.textContent = "cannot load the sessions: " + (err as Error).message;
      if (err instanceof ApiError && err.status === 422) {
        shown = [];
        nextCursor = null;
        render();
      }
    }
  }

  async function stopSession(id: string, button: HTMLButtonElement): Promise<void> {
    button.disabled = true;
    try {
      const s = await api<Session>("POST", `/api/sessions/${encodeURIComponent(id)}/stop`);
      say(`session ${id} is ${s.status}`);
      upsert(s);
    } catch (err) {
      say("stop failed: " + (err as Error).message, true);
      button.disabled = false;
    }
  }

  const live = new Live((s) => { upsert(s); start.changed(s); }, (on) => {
    updated.textContent = "(" + liveText(on) + ")";
    updated.dataset.live = on ? "yes" : "no";
  }, load);
  void load();
  live.start();
}
