// Panels for routes that other parts of ticktape add (today: the data-quality report
// in full). A panel appears only when this server's OpenAPI schema has
// its route, and shows exactly what the route answers: nothing is made up, and no
// request is made to a route that does not exist.

import { api, type Session } from "./api";
import { el } from "./format";

interface Panel {
  path: string; // as written in the OpenAPI schema
  title: string;
  kinds: string[] | null; // session kinds it applies to; null: all
}

const PANELS: Panel[] = [
  // Results, equity, orders and fills have their own views (results.ts).
  { path: "/api/sessions/{session_id}/quality", title: "Data quality", kinds: ["collect", "paper"] },
];

let schema: Promise<Set<string>> | null = null;

function routes(): Promise<Set<string>> {
  schema ??= api<{ paths: Record<string, unknown> }>("GET", "/openapi.json").then(
    (doc) => new Set(Object.keys(doc.paths)),
    () => new Set<string>(),
  );
  return schema;
}

function scalar(v: unknown): string {
  if (v === null || v === undefined) return "—";
  if (typeof v === "number") return new Intl.NumberFormat("en-US", { maximumFractionDigits: 8 }).format(v);
  if (typeof v === "object") return JSON.stringify(v);
  return String(v);
}

/** An object as a key/value list; arrays of objects as tables (first 200 rows). */
function view(data: unknown): HTMLElement {
  if (Array.isArray(data)) {
    if (!data.length) return el("p", { class: "muted" }, "none");
    const cols = Object.keys(data[0] as object);
    return el("div", { class: "scroll" }, el("table", {},
      el("thead", {}, el("tr", {}, ...cols.map((c) => el("th", { scope: "col" }, c)))),
      el("tbody", {}, ...data.slice(0, 200).map((row) => el("tr", {},
        ...cols.map((c) => el("td", {}, scalar((row as Record<string, unknown>)[c]))))))));
  }
  if (data && typeof data === "object") {
    const dl = el("dl", { class: "facts" });
    for (const [k, v] of Object.entries(data as Record<string, unknown>)) {
      dl.append(el("dt", {}, k),
        el("dd", {}, Array.isArray(v) || (v && typeof v === "object") ? view(v) : scalar(v)));
    }
    return dl;
  }
  return el("p", {}, scalar(data));
}

export function optionalPanels(main: HTMLElement, s: Session): void {
  void routes().then((have) => {
    for (const panel of PANELS) {
      if (!have.has(panel.path) || (panel.kinds && !panel.kinds.includes(s.kind))) continue;
      const body = el("div", {}, el("p", { class: "muted" }, "loading…"));
      const hid = "panel-" + panel.title.toLowerCase().replace(/\W+/g, "-");
      main.append(el("section", { "aria-labelledby": hid, "data-panel": panel.path },
        el("h2", { id: hid }, panel.title), body));
      const url = panel.path.replace("{session_id}", encodeURIComponent(s.id));
      api<unknown>("GET", url).then(
        (data) => body.replaceChildren(view(data)),
        (err: Error) => body.replaceChildren(el("p", { class: "muted" }, err.message)),
      );
    }
  });
}
