"""Feed benchmarks: parse + book throughput, and recovery time after dropped connections.

1. ``parse``: the connectors' hot path without sockets — a message's JSON is
   parsed, normalized and gathered into columnar batches; a depth message is
   also applied to the local book and a top-``depth`` snapshot taken after it.
   Per exchange, for trade messages and depth messages, in this one process.
2. ``wire``: the same through a real local WebSocket: a fake exchange in a
   *separate process* sends pre-encoded messages as fast as it can; this process
   runs the real connector and counts the rows it yields per second.
4. ``store`` (run first): the whole session path into SQLite — the fake in a
   separate process sends ``--messages`` messages as fast as it can; the real
   connector, the real collect runner (buffer, flusher, gap rows) and a real
   SQLite store take them; the rate is stored rows per second from the order to
   send until the store holds them all. Then ``lag``: the same path with the fake
   paced at ``--lag-rate`` messages/s for ``--lag-seconds``; receive→commit lag
   is measured per row (store acknowledgement time minus the row's receive time).
3. ``recover``: a fake exchange (in this process) keeps its book moving; the
   bench drops every connection ``--drops`` times and measures, per drop, the
   time until the feed has reconnected, resubscribed and resynced its book (the
   ``resynced`` event), with the connector's production backoff.

Prints figures and, last, one JSON line.

    .venv/bin/python bench/feeds.py
    .venv/bin/python bench/feeds.py --messages 300000 --drops 100
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import platform
import statistics
import subprocess
import sys
import time
from typing import Any

from ticktape.domain import DataType
from ticktape.feeds.binance import (
    BinanceEndpoints,
    BinanceFeed,
    parse_agg_trade,
    parse_depth_update,
    unwrap,
)
from ticktape.feeds.book import LocalBook
from ticktape.feeds.contract import (
    BookBuilder,
    EventKind,
    FeedBooks,
    FeedEvent,
    FeedTrades,
    TradeBuilder,
)
from ticktape.feeds.fakes import FakeBinance, FakeMexc
from ticktape.feeds.mexc import MexcEndpoints, MexcFeed, parse_deals, parse_depth
from ticktape.feeds.settings import StreamSettings

DEPTH = 10

# ---------------------------------------------------------------------- messages


def _enc(obj: object) -> str:
    return json.dumps(obj, separators=(",", ":"))


def binance_trades(n: int) -> list[str]:
    return [
        _enc(
            {
                "e": "aggTrade", "E": 1_700_000_000_000 + i // 50, "s": "BTCUSDT", "a": i,
                "p": f"{40000 + i % 50 / 10:.1f}", "q": f"{0.001 * (1 + i % 7):.3f}",
                "f": i, "l": i, "T": 1_700_000_000_000 + i // 50, "m": i % 2 == 1,
            }
        )
        for i in range(1, n + 1)
    ]  # fmt: skip


def binance_depth(n: int) -> list[str]:
    out = []
    for i in range(1, n + 1):
        bid = 40000 - (1 + i % 40) / 10
        ask = 40000 + (1 + (i * 7) % 40) / 10
        out.append(
            _enc(
                {
                    "e": "depthUpdate", "E": 1_700_000_000_000 + i, "T": 1_700_000_000_000 + i,
                    "s": "BTCUSDT", "U": 3 * i - 2, "u": 3 * i, "pu": 3 * i - 3,
                    "b": [[f"{bid:.1f}", str(i % 13)], [f"{bid - 5:.1f}", str(i % 5)]],
                    "a": [[f"{ask:.1f}", str(1 + i % 11)]],
                }
            )
        )  # fmt: skip
    return out


def mexc_trades(n: int) -> list[str]:
    return [
        _enc(
            {
                "channel": "push.deal", "symbol": "BTC_USDT", "ts": 1_700_000_000_000 + i // 50,
                "data": {"M": 2, "O": 1, "T": 1 + i % 2, "p": 40000 + i % 50 / 2,
                         "t": 1_700_000_000_000 + i // 50, "v": 1 + i % 9},
            }
        )
        for i in range(1, n + 1)
    ]  # fmt: skip


def mexc_depth(n: int) -> list[str]:
    out = []
    for i in range(1, n + 1):
        bid = 40000 - (1 + i % 40) / 2
        ask = 40000 + (1 + (i * 7) % 40) / 2
        data = {
            "asks": [[ask, 1 + i % 11, 1]],
            "bids": [[bid, i % 13, 1], [bid - 5, i % 5, 1]],
            "version": i,
        }
        out.append(_enc({"channel": "push.depth", "data": data, "symbol": "BTC_USDT",
                         "ts": 1_700_000_000_000 + i}))  # fmt: skip
    return out


# ---------------------------------------------------------------------- 1. parse


def parse_rate(kind: str, exchange: str, raws: list[str]) -> float:
    """Messages per second through parse → normalize → batch (→ book → snapshot)."""
    trades = TradeBuilder("bench", "X")
    books = BookBuilder("bench", "X", DEPTH)
    book = LocalBook()
    book.reset([(39990.0 - i, 1.0) for i in range(100)], [(40010.0 + i, 1.0) for i in range(100)])
    batch = 1000
    seq = 0
    started = time.perf_counter()
    for raw in raws:
        recv = time.time_ns() // 1000
        d = json.loads(raw)
        if kind == "trades":
            if exchange == "binance":
                t = parse_agg_trade(unwrap(d))
                trades.add(t.ts_us, t.agg_id, t.price, t.qty, t.side, recv)
            else:
                for deal in parse_deals(d):
                    seq += 1
                    trades.add(deal.ts_us, seq, deal.price, deal.qty, deal.side, recv)
            if len(trades) >= batch:
                trades.take(0)
        else:
            if exchange == "binance":
                ev = parse_depth_update(unwrap(d))
                bids, asks, ts = ev.bids, ev.asks, ev.ts_us
            else:
                push = parse_depth(d)
                bids, asks, ts = push.bids, push.asks, push.ts_us
            for p, q in bids:
                book.set_bid(p, q)
            for p, q in asks:
                book.set_ask(p, q)
            top_bids, top_asks = book.top(DEPTH)
            books.add(ts, top_bids, top_asks, recv)
            if len(books) >= batch:
                books.take(0)
    return len(raws) / (time.perf_counter() - started)


# ---------------------------------------------------------------------- 2. wire


async def serve_fake(exchange: str) -> None:
    """Child process: a fake exchange that blasts pre-encoded messages on command."""
    fx: FakeBinance | FakeMexc = FakeBinance() if exchange == "binance" else FakeMexc()
    await fx.start()
    print(fx.port, flush=True)
    prepared: tuple[str, list[bytes], float] = ("", [], 0.0)
    loop = asyncio.get_running_loop()
    while True:
        line = await loop.run_in_executor(None, sys.stdin.readline)
        if not line.strip():
            break
        command, *args = line.split()
        symbol = "BTCUSDT" if exchange == "binance" else "BTC_USDT"
        if command == "wait":  # "wait KIND": subscribed (a book: in sync), then answer
            await fx.wait_subscribed((symbol,), (args[0],))
            if args[0] == "depth":
                for _ in range(5):
                    for raw in fx.encoded_depth(symbol, 1):
                        for c in fx.conns:
                            await c.ws.send(raw)
                    await asyncio.sleep(0.1)
            print("ready", flush=True)
            continue
        if command == "prep":  # "prep KIND N [RATE]": encode the messages, send nothing yet
            kind, n = args[0], int(args[1])
            rate = float(args[2]) if len(args) > 2 else 0.0  # messages/s; 0: as fast as it can
            if kind == "depth":  # from the fake's own book, so its snapshots agree with them
                raws = fx.encoded_depth(symbol, n)
            else:
                raws = (binance_trades if exchange == "binance" else mexc_trades)(n)
            # Encoded before the clock starts: making 100,000 JSON messages takes the fake
            # 0.5-2 s, which the receiving process's rate must not include.
            prepared = (kind, [text_frame(t) for t in raws], rate)
            print("prepared", flush=True)
            continue
        if command == "go":  # send what was prepared
            kind, frames, rate = prepared
        else:
            raise ValueError(f"unknown command {line!r}")
        # Only to a subscribed connection: the client may have sent its subscription
        # without the fake having read it yet (sending to nobody once made the wire
        # stage report 0 rows with a negative duration).
        await fx.wait_subscribed((symbol,), (kind,))
        conns = [c for c in fx.conns if any(k == kind for _, k in c.subs)]
        cpu = time.process_time()
        sent = await blast(conns, frames, rate)  # paced in steps of 100 messages
        print(f"{sent:.0f} {time.process_time() - cpu:.3f}", flush=True)  # rate, CPU s
    await fx.stop()


def text_frame(text: str) -> bytes:
    """One unmasked, final text frame (RFC 6455 §5.2), as a server sends it."""
    data = text.encode()
    n = len(data)
    if n < 126:
        return bytes((0x81, n)) + data
    if n < 2**16:
        return bytes((0x81, 126)) + n.to_bytes(2, "big") + data
    return bytes((0x81, 127)) + n.to_bytes(8, "big") + data


async def blast(conns: list[Any], frames: list[bytes], rate: float = 0.0, step: int = 100) -> float:
    """Send encoded ``frames`` to the fake's connections as fast as the sockets take them
    (or at ``rate`` messages/s, in steps of ``step``); the rate achieved, messages/s.

    The frames are written ``step`` at a time straight to each connection's transport,
    waiting while the client reads slower (``drain``): the library's ``send`` per
    message made the fake, not the client measured, the limit.
    """
    started = time.perf_counter()
    for i in range(0, len(frames), step):
        chunk = b"".join(frames[i : i + step])
        for c in conns:
            if not c.ws.transport.is_closing():
                c.ws.transport.write(chunk)
                await c.ws.drain()
        if rate:
            ahead = started + (i + step) / rate - time.perf_counter()
            if ahead > 0:
                await asyncio.sleep(ahead)
    return len(frames) / (time.perf_counter() - started)


async def wire_rate(exchange: str, kind: str, n: int) -> float:
    """Rows per second the real connector yields while a fake in another process blasts."""
    child = await asyncio.create_subprocess_exec(
        sys.executable,
        __file__,
        "--serve-fake",
        exchange,
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
    )
    assert child.stdout is not None and child.stdin is not None
    try:
        port = int(await child.stdout.readline())
        base = f"ws://127.0.0.1:{port}"
        data_type = DataType.TRADES if kind == "trades" else DataType.ORDERBOOK
        settings = StreamSettings(stale_after_s=30.0)
        feed: BinanceFeed | MexcFeed
        if exchange == "binance":
            ends = BinanceEndpoints(
                f"{base}/public/ws", f"{base}/market/ws", f"http://127.0.0.1:{port}"
            )
            feed = BinanceFeed(
                "bench", ("BTCUSDT",), data_types=(data_type,), depth=DEPTH,
                settings=settings, endpoints=ends, subscribe_interval_s=0.0,
            )  # fmt: skip
        else:
            feed = MexcFeed(
                "bench", ("BTC_USDT",), data_types=(data_type,), depth=DEPTH,
                settings=settings, endpoints=MexcEndpoints(f"{base}/edge", f"http://127.0.0.1:{port}"),
            )  # fmt: skip
        stop = asyncio.Event()
        rows = 0
        first = last = 0.0
        synced = asyncio.Event()
        done = asyncio.Event()

        async def consume() -> None:
            nonlocal rows, last
            async for item in feed.items(stop):
                if isinstance(item, FeedEvent) and item.kind is EventKind.SUBSCRIBED:
                    synced.set()
                elif isinstance(item, FeedTrades | FeedBooks):
                    rows += len(item)
                    last = time.perf_counter()
                    if rows >= n:
                        done.set()

        task = asyncio.create_task(consume())
        await synced.wait()
        if kind == "depth":  # the book must be in sync before depth rows come out
            await asyncio.sleep(0.5)
            raise_if_dead(task)
        await order(child, f"prep {kind} {n}", b"prepared")
        first = time.perf_counter()  # from the order to blast: rows arrive in batches
        child.stdin.write(b"go\n")
        await child.stdin.drain()
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(done.wait(), 120)
        stop.set()
        await asyncio.wait_for(task, 10)
        c = feed.counters
        counts = (
            f"{rows} rows from {c.messages} messages in {last - first:.2f}s; "
            f"breaks {c.sequence_breaks}, resyncs {c.resyncs}, "
            f"malformed {sum(c.malformed.values())}"
        )
        if rows < n or last <= first:  # a rate of what did not arrive would be nonsense
            raise RuntimeError(f"wire {exchange} {kind}: {n} rows expected, {counts}")
        sender_rate = float((await asyncio.wait_for(child.stdout.readline(), 30)).split()[0])
        print(f"  ({exchange} {kind}: the fake sent {sender_rate:,.0f} messages/s; {counts})")
        return rows / (last - first)
    finally:
        with contextlib.suppress(Exception):
            child.stdin.write(b"\n")
            await child.stdin.drain()
        try:
            await asyncio.wait_for(child.wait(), 5)
        except TimeoutError:
            child.kill()
            await child.wait()


async def store_rate(
    exchange: str, kind: str, n: int, workdir: str, pace: float = 0.0
) -> dict[str, float]:
    """Messages → connector → collect runner → SQLite; rows/s and per-row receive→commit lag."""
    import numpy as np

    from ticktape.config import FeedEndpoints, Settings
    from ticktape.domain import (
        Session,
        SessionConfig,
        SessionKind,
        SessionStatus,
        new_session_id,
        utcnow,
    )
    from ticktape.feeds.contract import now_us
    from ticktape.metrics import Metrics
    from ticktape.runners.collect import CollectRunner
    from ticktape.runtime.handle import RunHandle
    from ticktape.store import open_store

    child = await asyncio.create_subprocess_exec(
        sys.executable, __file__, "--serve-fake", exchange,
        stdin=subprocess.PIPE, stdout=subprocess.PIPE,
    )  # fmt: skip
    assert child.stdout is not None and child.stdin is not None
    url = f"sqlite:///{workdir}/{exchange}-{kind}-{int(pace)}.db"
    store = open_store(url)
    try:
        await store.open()
        port = int(await child.stdout.readline())
        base = f"ws://127.0.0.1:{port}"
        settings = Settings(
            store_url=url,
            feeds=FeedEndpoints(
                binance_ws_url=base,
                binance_rest_url=f"http://127.0.0.1:{port}",
                mexc_ws_url=f"{base}/edge",
                mexc_rest_url=f"http://127.0.0.1:{port}",
                stale_after_s=30.0,
                mexc_full_depth=False,  # the fake sends incremental push.depth here
            ),
        )
        symbol = "BTCUSDT" if exchange == "binance" else "BTC_USDT"
        data_type = DataType.TRADES if kind == "trades" else DataType.ORDERBOOK
        owner = "bench"
        created = await store.sessions.create_session(
            Session(
                new_session_id(), SessionKind.COLLECT, SessionStatus.PENDING, (symbol,),
                exchange, (data_type,), SessionConfig(book_depth=DEPTH), utcnow(),
            ),
            actor=owner,
        )  # fmt: skip
        session = await store.sessions.transition(
            created.id, expected_version=created.version, to_status=SessionStatus.RUNNING,
            actor=owner, reason="started", owner=owner,
            lease_expires_at=utcnow() + __import__("datetime").timedelta(hours=1),
        )  # fmt: skip
        lags: list[np.ndarray[Any, Any]] = []
        inner_write = store.ticks.write_sessions

        async def timed_write(writes: Any, *, owner: str) -> Any:
            result = await inner_write(writes, owner=owner)
            acked = now_us()
            lags.extend(acked - b.recv_us for w in writes for b in w if b.recv_us is not None)
            return result

        store.ticks.write_sessions = timed_write  # type: ignore[method-assign]
        handle = RunHandle(session.id)
        runner = CollectRunner(store, settings, Metrics(), owner)
        task = asyncio.create_task(runner.run(session, handle))
        child.stdin.write(f"wait {'trades' if kind == 'trades' else 'depth'}\n".encode())
        await child.stdin.drain()
        assert (await asyncio.wait_for(child.stdout.readline(), 30)).strip() == b"ready"
        await asyncio.sleep(0.5)
        before = await store.ticks.count(session.id)
        await order(child, f"prep {kind} {n} {pace}", b"prepared")
        lags.clear()
        sched = sched_times()
        started = time.perf_counter()
        cpu = time.process_time()  # this process: connector, runner and SQLite (the fake is apart)
        child.stdin.write(b"go\n")
        await child.stdin.drain()
        deadline = started + 300
        while time.perf_counter() < deadline:
            counts = await store.ticks.count(session.id)
            stored = (counts.trades - before.trades) + (counts.orderbook - before.orderbook)
            if stored >= n:
                break
            raise_if_dead(task)  # type: ignore[arg-type]
            await asyncio.sleep(0.05)
        elapsed = time.perf_counter() - started
        cpu_s = time.process_time() - cpu
        threads = {
            name: (on - sched[name][0], wait - sched[name][1])
            for name, (on, wait) in sched_times().items()
            if name in sched
        }
        if stored < n:
            raise RuntimeError(f"store {exchange} {kind}: {n} rows expected, {stored} stored")
        sender_rate, sender_cpu_s = map(
            float, (await asyncio.wait_for(child.stdout.readline(), 60)).split()
        )
        handle.stop.set()
        await asyncio.wait_for(task, 30)
        lag_ms = np.concatenate(lags) / 1000.0 if lags else np.zeros(1)
        where = "; ".join(
            f"{name} thread {on:.2f} s on a CPU, {wait:.2f} s waiting for one, "
            f"{max(0.0, elapsed - on - wait):.2f} s asleep"
            for name, (on, wait) in sorted(threads.items())
        )
        out = {
            "rows_per_s": stored / elapsed,
            "rows_per_cpu_s": stored / cpu_s,
            "cpu_s": cpu_s,
            "cpu_share": cpu_s / elapsed,  # CPU seconds per wall second of this process
            "sender_cpu_s": sender_cpu_s,
            **{f"{name}_runqueue_s": wait for name, (_, wait) in threads.items()},
            **{f"{name}_on_cpu_s": on for name, (on, _) in threads.items()},
            "stored": float(stored),
            "sender_msgs_per_s": sender_rate,
            "lag_p50_ms": float(np.percentile(lag_ms, 50)),
            "lag_p99_ms": float(np.percentile(lag_ms, 99)),
            "lag_max_ms": float(lag_ms.max()),
        }
        print(
            f"  ({exchange} {kind} into SQLite{f' paced at {pace:,.0f}/s' if pace else ''}: "
            f"{stored:,} rows in {elapsed:.2f}s, {cpu_s:.2f} CPU s here "
            f"({stored / cpu_s:,.0f} rows per CPU s, {cpu_s / elapsed:.0%} of a CPU); "
            f"the fake sent {sender_rate:,.0f} msgs/s using {sender_cpu_s:.2f} CPU s)"
        )
        if where:
            print(f"  (of the {elapsed:.2f} s: {where})")
        return out
    finally:
        with contextlib.suppress(Exception):
            child.stdin.write(b"\n")
            await child.stdin.drain()
        try:
            await asyncio.wait_for(child.wait(), 5)
        except TimeoutError:
            child.kill()
            await child.wait()
        await store.close()


async def order(child: asyncio.subprocess.Process, line: str, answer: bytes) -> None:
    """Send the fake a command line and wait for its ``answer``."""
    assert child.stdin is not None and child.stdout is not None
    child.stdin.write(f"{line}\n".encode())
    await child.stdin.drain()
    got = (await asyncio.wait_for(child.stdout.readline(), 120)).strip()
    if got != answer:
        raise RuntimeError(f"the fake answered {got!r} to {line!r}")


def sched_times() -> dict[str, tuple[float, float]]:
    """Per thread of this process that matters (the event loop's and the SQLite writer's):
    seconds on a CPU and seconds runnable but waiting for one (Linux schedstat); {} elsewhere.
    What is neither is sleep: idle, waiting for the socket or for the GIL."""
    import threading

    out = {}
    for thread in threading.enumerate():
        if thread is threading.main_thread():
            name = "loop"
        elif thread.name.startswith("ticktape-sqlite-writer"):
            name = "writer"
        else:
            continue
        try:
            with open(f"/proc/self/task/{thread.native_id}/schedstat") as f:
                on_ns, wait_ns, _ = f.read().split()
        except (OSError, ValueError):
            continue
        out[name] = (int(on_ns) / 1e9, int(wait_ns) / 1e9)
    return out


def raise_if_dead(task: asyncio.Task[None]) -> None:
    if task.done():
        task.result()


# ---------------------------------------------------------------------- 3. recover


async def recovery_times(exchange: str, drops: int) -> list[float]:
    """Seconds from each drop to the book's ``resynced`` event.

    Production settings, except that every drop counts as an isolated one: the
    backoff restarts from its first step (in production it does so only after a
    connection served ``healthy_after_s``; drops seconds apart back off further) and
    the per-IP connection and REST budgets are lifted (a local fake has none; with a
    real exchange, drops this close together would wait for them: ``feeds/limits.py``).
    """
    unlimited = (10**9, 1.0)
    isolated = StreamSettings(healthy_after_s=0.0, connect_limit=unlimited, rest_limit=unlimited)
    fx: FakeBinance | FakeMexc = FakeBinance() if exchange == "binance" else FakeMexc()
    await fx.start()
    symbol = "BTCUSDT" if exchange == "binance" else "BTC_USDT"
    feed: BinanceFeed | MexcFeed
    if exchange == "binance":
        assert isinstance(fx, FakeBinance)
        ends = BinanceEndpoints(fx.ws_public, fx.ws_market, fx.http_url)
        feed = BinanceFeed("bench", (symbol,), depth=DEPTH, endpoints=ends, settings=isolated)
    else:
        assert isinstance(fx, FakeMexc)
        feed = MexcFeed(  # isolated drops too (without, the backoff grew to 30 s per drop)
            "bench", (symbol,), depth=DEPTH, endpoints=MexcEndpoints(fx.ws_url, fx.http_url),
            settings=isolated,
        )  # fmt: skip
    stop = asyncio.Event()
    resynced: asyncio.Queue[float] = asyncio.Queue()
    booked = asyncio.Event()

    async def consume() -> None:
        async for item in feed.items(stop):
            if isinstance(item, FeedEvent) and item.kind is EventKind.RESYNCED:
                resynced.put_nowait(time.perf_counter())
            elif isinstance(item, FeedBooks):
                booked.set()

    async def market() -> None:  # a live market: the book moves every 10 ms
        while not stop.is_set():
            await fx.send_depth(symbol, 1)
            if isinstance(fx, FakeBinance):
                await fx.send_trades(symbol, 1)
            else:
                await fx.send_deals(symbol, 1)
            await asyncio.sleep(0.01)

    task = asyncio.create_task(consume())
    mover = asyncio.create_task(market())
    times = []
    try:
        await asyncio.wait_for(booked.wait(), 30)
        for _ in range(drops):
            dropped = time.perf_counter()
            await fx.drop()
            times.append(await asyncio.wait_for(resynced.get(), 60) - dropped)
    finally:
        stop.set()
        await asyncio.wait_for(task, 10)
        mover.cancel()
        await asyncio.gather(mover, return_exceptions=True)
        await fx.stop()
    return times


def pct(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawTextHelpFormatter
    )
    parser.add_argument("--messages", type=int, default=200_000, help="messages per parse/wire run")
    parser.add_argument("--drops", type=int, default=50, help="dropped connections per exchange")
    parser.add_argument("--lag-rate", type=float, default=10_000, help="messages/s for lag")
    parser.add_argument("--lag-seconds", type=float, default=10, help="length of the lag run")
    parser.add_argument(
        "--stages",
        default="store,parse,wire,recover",
        help="comma-separated: store (incl. lag), parse, wire, recover",
    )
    parser.add_argument("--serve-fake", choices=("binance", "mexc"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    stages = set(args.stages.split(","))
    if args.serve_fake:
        asyncio.run(serve_fake(args.serve_fake))
        return
    load = os.getloadavg()[0]
    machine = f"{platform.machine()}, {os.cpu_count()} cpus, Python {platform.python_version()}"
    result: dict[str, Any] = {
        "machine": machine,
        "load_avg_1m_at_start": round(load, 2),
        "messages": args.messages,
        "depth": DEPTH,
    }
    print(f"machine: {machine}; load average (1 min) at start: {load:.2f}")
    if "store" in stages:
        import tempfile

        with tempfile.TemporaryDirectory() as workdir:
            for kind in ("trades", "depth"):
                for exchange in ("binance", "mexc"):
                    got = asyncio.run(store_rate(exchange, kind, args.messages, workdir))
                    result[f"store_{exchange}_{kind}_rows_per_s"] = round(got["rows_per_s"])
                    result[f"store_{exchange}_{kind}_rows_per_cpu_s"] = round(got["rows_per_cpu_s"])
                    result[f"store_{exchange}_{kind}_cpu_share"] = round(got["cpu_share"], 3)
                    print(
                        f"into SQLite {exchange:8} {kind:6}: {got['rows_per_s']:12,.0f} rows/s, "
                        f"{got['rows_per_cpu_s']:,.0f} rows per CPU second of this process "
                        f"(busy {got['cpu_share']:.0%} of a CPU)"
                    )
            for exchange in ("binance", "mexc"):
                n = int(args.lag_rate * args.lag_seconds)
                got = asyncio.run(store_rate(exchange, "trades", n, workdir, args.lag_rate))
                for q in ("p50", "p99", "max"):
                    result[f"lag_{exchange}_{q}_ms"] = round(got[f"lag_{q}_ms"], 2)
                result[f"lag_{exchange}_sent_msgs_per_s"] = round(got["sender_msgs_per_s"])
                print(
                    f"receive->commit {exchange:8} at {got['sender_msgs_per_s']:,.0f} msg/s: "
                    f"p50 {got['lag_p50_ms']:.1f} ms, p99 {got['lag_p99_ms']:.1f} ms, "
                    f"max {got['lag_max_ms']:.1f} ms"
                )
    gens = {"trades": (binance_trades, mexc_trades), "depth": (binance_depth, mexc_depth)}
    for kind, (b_gen, m_gen) in gens.items() if "parse" in stages else ():
        for exchange, gen in (("binance", b_gen), ("mexc", m_gen)):
            raws = gen(args.messages)
            rate = parse_rate(kind, exchange, raws)
            result[f"parse_{exchange}_{kind}_msgs_per_s"] = round(rate)
            print(f"parse+book  {exchange:8} {kind:6}: {rate:12,.0f} messages/s")
    for kind in ("trades", "depth") if "wire" in stages else ():
        for exchange in ("binance", "mexc"):
            rate = asyncio.run(wire_rate(exchange, kind, args.messages))
            result[f"wire_{exchange}_{kind}_rows_per_s"] = round(rate)
            print(f"over a WebSocket {exchange:8} {kind:6}: {rate:12,.0f} rows/s")
    for exchange in ("binance", "mexc") if "recover" in stages else ():
        times = asyncio.run(recovery_times(exchange, args.drops))
        p50, p95 = statistics.median(times), pct(times, 0.95)
        result[f"recover_{exchange}_p50_s"] = round(p50, 4)
        result[f"recover_{exchange}_p95_s"] = round(p95, 4)
        result[f"recover_{exchange}_max_s"] = round(max(times), 4)
        print(
            f"reconnect+resubscribe+resync {exchange:8}: p50 {p50:.3f}s p95 {p95:.3f}s "
            f"max {max(times):.3f}s over {len(times)} drops"
        )
    print(json.dumps(result))


if __name__ == "__main__":
    main()
