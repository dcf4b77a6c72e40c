"""Random faults against the Binance connector: every trade is recorded or counted lost.

A seeded sequence of drops, silences, skipped trade ids, skipped depth updates,
stale snapshots and malformed messages, with trades and depth events between
them. At the end: no trade twice, every trade id the exchange produced is either
recorded or inside a gap's ``lost`` count, no book row lies inside a book gap,
and the book is the exchange's.
"""

from __future__ import annotations

import dataclasses
import random
from collections.abc import Callable, Coroutine
from typing import Any

from tests.integration.feeds.helpers import FAST, Recorder
from ticktape.domain import DataType
from ticktape.feeds.binance import BinanceEndpoints, BinanceFeed
from ticktape.feeds.fakes import FakeBinance

SYM = "BTCUSDT"
KINDS = ("trades", "depth")
Run = Callable[[Coroutine[Any, Any, Any]], Any]


def test_random_faults_lose_nothing_silently(run: Run) -> None:
    rng = random.Random(20261130)

    async def scenario() -> None:
        settings = dataclasses.replace(FAST, stale_after_s=0.6)
        async with FakeBinance() as fx:
            ends = BinanceEndpoints(fx.ws_public, fx.ws_market, fx.http_url)
            feed = BinanceFeed("s", (SYM,), depth=5, settings=settings, endpoints=ends)
            async with Recorder(feed) as rec:
                await fx.wait_subscribed((SYM,), KINDS)
                first_id = fx.symbols[SYM].next_agg
                for _ in range(25):
                    fault = rng.choice(["drop", "silent", "skip", "skip_depth", "stale", "junk"])
                    if fault == "drop":
                        await fx.drop()
                    elif fault == "silent":
                        await fx.go_silent()  # the client finds the links stale and replaces them
                    elif fault == "skip":
                        fx.skip_trades(SYM, rng.randint(1, 5))
                    elif fault == "skip_depth":
                        fx.skip_depth(SYM, rng.randint(1, 3))
                    elif fault == "stale":
                        fx.stale_snapshot(SYM)
                        fx.skip_depth(SYM, 1)
                    else:
                        await fx.send_raw("{junk")
                    await fx.wait_subscribed((SYM,), KINDS)
                    await fx.send_trades(SYM, rng.randint(1, 20))
                    await fx.send_depth(SYM, rng.randint(1, 5))
                last_id = fx.symbols[SYM].next_agg - 1

                def caught_up() -> bool:
                    got = rec.trades(SYM)
                    return bool(got) and got[-1][1] == fx.symbols[SYM].next_agg - 1

                await rec.keep_moving(lambda: fx.send_trades(SYM, 1), caught_up)
                await rec.keep_moving(
                    lambda: fx.send_depth(SYM, 1),
                    lambda: bool(rec.books(SYM)) and rec.books(SYM)[-1][1:] == fx.book(SYM, 5),
                )
                last_id = fx.symbols[SYM].next_agg - 1

            ids = [r[1] for r in rec.trades(SYM)]
            assert ids == sorted(set(ids))  # no trade twice, in order
            missing = set(range(first_id, last_id + 1)) - set(ids)
            trade_gaps = rec.gaps(DataType.TRADES)
            assert sum(g.lost or 0 for g in trade_gaps) == len(missing)
            # Binance numbers its trades: a loss is known, except before the first trade seen.
            first_ts = rec.trades(SYM)[0][0]
            assert all(g.lost is not None for g in trade_gaps if g.end_us > first_ts)
            book_gaps = rec.gaps(DataType.ORDERBOOK)
            for ts, _, _ in rec.books(SYM):
                assert not any(g.start_us < ts < g.end_us for g in book_gaps)
            assert len(trade_gaps) + len(book_gaps) > 10  # the faults really hit

    run(scenario())
