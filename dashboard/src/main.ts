// The dashboard's entry: one page, the view named by the URL.
//   /                    sessions list
//   /ui/sessions/{id}    one session (a URL to share)
//   /ui/compare?ids=a,b  backtests side by side (a URL to share)

import { api, setToken, token } from "./api";
import { comparePage } from "./compare";
import { el } from "./format";
import { sessionsPage } from "./list";
import { sessionPage } from "./session";

async function health(): Promise<void> {
  const box = document.getElementById("health");
  if (!box) return;
  try {
    const h = await api<{ instance: string; store: string; store_ok: boolean;
      store_error: string | null }>("GET", "/health");
    box.textContent = `instance ${h.instance} · store ${h.store}` +
      (h.store_ok ? "" : ` · store failing: ${h.store_error ?? "unknown"}`);
    box.className = h.store_ok ? "muted" : "error";
  } catch (err) {
    box.textContent = (err as Error).message;
    box.className = "error";
  }
}

function route(): void {
  const main = document.getElementById("main") as HTMLElement;
  const path = location.pathname.replace(/\/+$/, "") || "/";
  const m = /^\/ui\/sessions\/([^/]+)$/.exec(path);
  if (m) {
    sessionPage(main, decodeURIComponent(m[1]));
  } else if (path === "/ui/compare") {
    comparePage(main);
  } else if (path === "/" || path === "/ui") {
    sessionsPage(main);
  } else {
    main.replaceChildren(el("h1", {}, "Not found"),
      el("p", {}, "No page here. ", el("a", { href: "/" }, "All sessions")));
  }
}

function tokenField(): void {
  const input = document.getElementById("token") as HTMLInputElement | null;
  if (!input) return;
  input.value = token();
  input.addEventListener("change", () => setToken(input.value));
}

tokenField();
void health();
route();
