// The push channel (GET /api/sessions/stream, Server-Sent Events) with its fallback:
// while the channel is down the page polls, and says so; when it is back, it stops.

import type { Session } from "./api";

export const POLL_MS = 2000;
const RECONNECT_MS = 3000;

export class Live {
  live = false;
  private source: EventSource | null = null;
  private timer: number | undefined;
  private reconnect: number | undefined;

  constructor(
    private readonly onSession: (s: Session) => void,
    private readonly onState: (live: boolean) => void,
    private readonly poll: () => Promise<void>,
  ) {}

  start(): void {
    this.open();
    this.timer = window.setInterval(() => {
      if (!this.live) void this.poll();
    }, POLL_MS);
  }

  stop(): void {
    window.clearInterval(this.timer);
    window.clearTimeout(this.reconnect);
    this.source?.close();
  }

  private open(): void {
    const source = new EventSource("/api/sessions/stream");
    this.source = source;
    source.addEventListener("ready", () => {
      // Catch up once (what changed while nobody listened); from here on every
      // change arrives pushed and nothing is polled.
      this.live = true;
      void this.poll().then(() => {
        if (this.live && this.source === source) this.onState(true);
      });
    });
    source.addEventListener("session", (event) => {
      this.onSession(JSON.parse((event as MessageEvent<string>).data) as Session);
    });
    source.addEventListener("error", () => {
      const was = this.live;
      this.live = false;
      if (was || source.readyState !== EventSource.CONNECTING) this.onState(false);
      if (source.readyState === EventSource.CLOSED) {
        // The browser gave up (an answer that is not a stream): try again ourselves.
        source.close();
        this.reconnect = window.setTimeout(() => this.open(), RECONNECT_MS);
      }
    });
    if (!this.live) this.onState(false);
  }
}

export function liveText(live: boolean): string {
  return live
    ? "live"
    : `live updates unavailable: polling every ${POLL_MS / 1000} s until they are back`;
}
