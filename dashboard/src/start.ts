// The start form of the sessions list, for every kind:
//   collect   exchange, symbols, duration, rate, depth, data types
//   backtest  a finished recording to replay, a strategy and its parameters, speed
//   paper     the collect fields (its live recording) plus a strategy and its parameters
// Strategy parameter fields are generated from GET /api/strategies' JSON schemas. The
// form checks nothing the API checks: what the API refuses is shown as its message.

import { api, query, type ParamSchema, type Session, type SessionList,
  type Strategy } from "./api";
import { count, el, price, utc } from "./format";

type Kind = "collect" | "backtest" | "paper";

const BUTTON: Record<Kind, string> = {
  collect: "Start collecting",
  backtest: "Start backtest",
  paper: "Start paper trading",
};

interface ParamField {
  name: string;
  schema: ParamSchema;
  input: HTMLInputElement | HTMLSelectElement;
  label: HTMLElement;
}

function group(kinds: Kind[], legend: string, ...children: HTMLElement[]): HTMLFieldSetElement {
  const box = el("fieldset", { class: "group", "data-kinds": kinds.join(" ") },
    el("legend", { class: "sr-only" }, legend), ...children);
  return box;
}

function hint(schema: ParamSchema): string {
  const parts: string[] = [];
  if (schema.description) parts.push(schema.description);
  const bounds: string[] = [];
  if (schema.exclusiveMinimum !== undefined) bounds.push(`> ${price(schema.exclusiveMinimum)}`);
  if (schema.minimum !== undefined) bounds.push(`≥ ${price(schema.minimum)}`);
  if (schema.exclusiveMaximum !== undefined) bounds.push(`< ${price(schema.exclusiveMaximum)}`);
  if (schema.maximum !== undefined) bounds.push(`≤ ${price(schema.maximum)}`);
  if (bounds.length) parts.push(bounds.join(", "));
  if (schema.type === "integer") parts.push("a whole number");
  return parts.join("; ");
}

/** The input for one parameter, prefilled with its default. */
function paramField(name: string, schema: ParamSchema): ParamField {
  const id = "p-" + name;
  const title = schema.title ?? name;
  const help = hint(schema);
  const helpId = id + "-hint";
  let input: HTMLInputElement | HTMLSelectElement;
  if (Array.isArray(schema.enum)) {
    input = el("select", { id, name: id });
    schema.enum.forEach((v, i) => {
      const opt = el("option", { value: String(i) }, String(v));
      if (v === schema.default) opt.selected = true;
      input.append(opt);
    });
  } else if (schema.type === "boolean") {
    input = el("input", { type: "checkbox", id, name: id });
    input.checked = schema.default === true;
  } else if (schema.type === "number" || schema.type === "integer") {
    input = el("input", { type: "text", inputmode: "decimal", id, name: id, size: "8",
      autocomplete: "off" });
    if (typeof schema.default === "number") input.value = String(schema.default);
  } else {
    input = el("input", { type: "text", id, name: id, size: "12", autocomplete: "off" });
    if (schema.default !== undefined && schema.default !== null) {
      input.value = String(schema.default);
    }
  }
  if (help) input.setAttribute("aria-describedby", helpId);
  const label = schema.type === "boolean"
    ? el("label", { for: id, class: "param" },
      el("span", {}, title), el("span", { class: "inline" }, input, " yes"),
      help ? el("small", { class: "muted", id: helpId }, help) : null)
    : el("label", { for: id, class: "param" }, title, input,
      help ? el("small", { class: "muted", id: helpId }, help) : null);
  return { name, schema, input, label };
}

/** A parameter's value as the API should see it; undefined leaves the default. Text
 * that is not a number is sent as typed, for the API to refuse with its own message. */
function paramValue(f: ParamField): unknown {
  const { input, schema } = f;
  if (Array.isArray(schema.enum)) return schema.enum[Number(input.value)];
  if (schema.type === "boolean") return (input as HTMLInputElement).checked;
  const text = input.value.trim();
  if (text === "") return undefined;
  if (schema.type === "number" || schema.type === "integer") {
    const n = Number(text.replace(/,/g, ""));
    return Number.isFinite(n) ? n : text;
  }
  return text;
}

export interface StartForm {
  section: HTMLElement;
  say: (text: string, error?: boolean) => void;
  /** A session changed: a recording that just ended becomes a backtest source. */
  changed: (s: Session) => void;
}

export function startForm(onStarted: (s: Session) => void): StartForm {
  const message = el("div", { id: "message", role: "status", "aria-live": "polite" });
  const kind = el("select", { name: "kind", id: "s-kind" },
    el("option", { value: "collect" }, "collect (record market data)"),
    el("option", { value: "backtest" }, "backtest (replay a recording)"),
    el("option", { value: "paper" }, "paper (trade a live feed)"));
  const exchange = el("select", { name: "exchange", id: "s-exchange" });
  const symbols = el("input", { type: "text", name: "symbols", value: "BTC_USDT,ETH_USDT",
    size: "24", required: "", autocomplete: "off" });
  const duration = el("input", { type: "text", name: "duration", placeholder: "30s, 5m, 2h",
    size: "10" });
  const rate = el("input", { type: "number", name: "rate", value: "20", min: "0", step: "any",
    class: "narrow" });
  const depth = el("input", { type: "number", name: "depth", value: "3", min: "1", max: "20",
    class: "narrow" });
  const trades = el("input", { type: "checkbox", name: "trades", checked: "" });
  const books = el("input", { type: "checkbox", name: "orderbook", checked: "" });
  const record = group(["collect", "paper"], "Recording",
    el("label", { for: "s-exchange" }, "Exchange", exchange),
    el("label", {}, "Symbols (comma-separated)", symbols),
    el("label", {}, "Duration (empty = until stopped)", duration),
    el("label", {}, "Trades/s per symbol (sim)", rate),
    el("label", {}, "Book depth", depth),
    el("fieldset", {}, el("legend", {}, "Data"),
      el("label", { class: "inline" }, trades, " trades"),
      el("label", { class: "inline" }, books, " order book")));

  const source = el("select", { name: "source", id: "s-source" },
    el("option", { value: "" }, "loading…"));
  const speed = el("input", { type: "text", inputmode: "decimal", name: "speed", id: "s-speed",
    value: "0", size: "6" });
  const replay = group(["backtest"], "Replay",
    el("label", { for: "s-source" }, "Recording to replay", source),
    el("label", { for: "s-speed" }, "Speed (0 = as fast as possible, N = N × real time)",
      speed));

  const strategy = el("select", { name: "strategy", id: "s-strategy" },
    el("option", { value: "" }, "loading…"));
  const formSelect = el("select", { name: "form", id: "s-form" });
  const formField = el("label", { for: "s-form" }, "Form", formSelect);
  const about = el("p", { class: "muted about", id: "s-about" });
  const params = el("fieldset", { id: "s-params", class: "params" });
  const trading = group(["backtest", "paper"], "Strategy",
    el("label", { for: "s-strategy" }, "Strategy", strategy), formField, about, params);

  const button = el("button", { type: "submit" }, BUTTON.collect);
  const form = el("form", { id: "start", "aria-label": "start a session" },
    el("label", { for: "s-kind" }, "Kind", kind), record, replay, trading, button);

  const section = el("section", { "aria-labelledby": "start-h" },
    el("h2", { id: "start-h" }, "Start a session"), form, message);

  let strategies: Strategy[] = [];
  let fields: ParamField[] = [];

  function say(text: string, error = false): void {
    message.textContent = text;
    message.className = error ? "error" : "ok";
    message.setAttribute("role", error ? "alert" : "status");
  }

  function showKind(): void {
    const k = kind.value as Kind;
    for (const g of [record, replay, trading]) {
      const on = (g.dataset.kinds ?? "").split(" ").includes(k);
      g.hidden = !on;
      g.disabled = !on; // a hidden required field must not block the form
    }
    button.textContent = BUTTON[k];
    if (k === "backtest") void loadSources();
  }

  function showStrategy(): void {
    const s = strategies.find((x) => x.name === strategy.value);
    fields = [];
    if (!s) {
      about.textContent = "";
      params.replaceChildren();
      formField.hidden = true;
      return;
    }
    about.textContent = s.description;
    formSelect.replaceChildren(...s.forms.map((f) => el("option", { value: f }, f)));
    formField.hidden = s.forms.length < 2;
    const props = Object.entries(s.params_schema.properties ?? {});
    fields = props.map(([name, schema]) => paramField(name, schema));
    params.replaceChildren(el("legend", {}, `Parameters of ${s.name}`),
      ...(fields.length ? fields.map((f) => f.label)
        : [el("p", { class: "muted" }, "this strategy has no parameters")]));
  }

  async function loadSources(): Promise<void> {
    const keep = source.value;
    try {
      const page = await api<SessionList>("GET", "/api/sessions" +
        query({ status: "completed,stopped,failed", limit: 200 }));
      const found = page.sessions.filter((s) => s.kind !== "backtest");
      if (!found.length) {
        source.replaceChildren(el("option", { value: "" }, "no finished recordings yet"));
        return;
      }
      source.replaceChildren(...found.map((s) => el("option", { value: s.id },
        `${s.id.slice(0, 8)} · ${s.kind} · ${s.exchange} · ${s.symbols.join(", ")} · ` +
        `${count(s.stats.trades)} trades · ended ` +
        (s.ended_at ? utc(new Date(s.ended_at)) : "—"))));
      if (keep && found.some((s) => s.id === keep)) source.value = keep;
    } catch (err) {
      say("cannot list the recordings: " + (err as Error).message, true);
    }
  }

  kind.addEventListener("change", showKind);
  strategy.addEventListener("change", showStrategy);

  form.addEventListener("submit", async (event) => {
    event.preventDefault();
    const k = kind.value as Kind;
    let body: Record<string, unknown>;
    const strategyFields = (): Record<string, unknown> => {
      const values: Record<string, unknown> = {};
      for (const f of fields) {
        const v = paramValue(f);
        if (v !== undefined) values[f.name] = v;
      }
      const s = strategies.find((x) => x.name === strategy.value);
      return {
        strategy: strategy.value,
        params: values,
        ...(s && s.forms.length > 1 ? { form: formSelect.value } : {}),
      };
    };
    if (k === "backtest") {
      const text = speed.value.trim();
      const n = Number(text);
      body = {
        kind: "backtest",
        source_session: source.value,
        ...strategyFields(),
        ...(text === "" ? {} : { speed: Number.isFinite(n) ? n : text }),
      };
    } else {
      const dataTypes = [];
      if (trades.checked) dataTypes.push("trades");
      if (books.checked) dataTypes.push("orderbook");
      body = {
        kind: k,
        exchange: exchange.value || "sim",
        symbols: symbols.value.split(",").map((x) => x.trim()).filter((x) => x),
        data_types: dataTypes,
        duration: duration.value.trim() || null,
        rate_per_s: Number(rate.value),
        book_depth: Number(depth.value),
        ...(k === "paper" ? strategyFields() : {}),
      };
    }
    button.disabled = true;
    try {
      const s = await api<Session>("POST", "/api/sessions", body);
      say(`started session ${s.id}`);
      onStarted(s);
    } catch (err) {
      say("start failed: " + (err as Error).message, true);
    } finally {
      button.disabled = false;
    }
  });

  void api<{ exchanges: string[] }>("GET", "/api/exchanges").then(
    (data) => {
      exchange.replaceChildren(...data.exchanges.map((x) => el("option", { value: x }, x)));
    },
    (err: Error) => say("cannot list the exchanges: " + err.message, true),
  );
  void api<{ strategies: Strategy[] }>("GET", "/api/strategies").then(
    (data) => {
      strategies = data.strategies;
      strategy.replaceChildren(...strategies.map((s) => el("option", { value: s.name }, s.name)));
      if (!strategies.length) {
        strategy.replaceChildren(el("option", { value: "" }, "no strategies registered"));
      }
      showStrategy();
    },
    (err: Error) => say("cannot list the strategies: " + err.message, true),
  );

  let sourcesTimer: number | undefined;
  function changed(s: Session): void {
    // A recording that ended is a new source: refresh the list (once per burst).
    if (kind.value !== "backtest" || s.kind === "backtest") return;
    if (!["completed", "stopped", "failed"].includes(s.status)) return;
    window.clearTimeout(sourcesTimer);
    sourcesTimer = window.setTimeout(() => void loadSources(), 300);
  }

  showKind();
  return { section, say, changed };
}
