"""QuestDB's symbol lookups that missed are counted in ``/metrics``.

A by-id read of the session log that does not find an id reads it again by its string
value (``LogLookups``, docs/questdb.md), and so does a seal's count of a tick table for
a session it found no row of. How often, and how often the rows were there after all
(QuestDB's lookup missed them), is ``ticktape_questdb_symbol_misses_total{table=
"session_log"|"trades"|"orderbook", outcome="rechecked"|"confirmed"}``, read from the
store at each scrape of the real route.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import httpx
import pytest

from tests.conftest import Run
from tests.integration.questdb_fencing import start
from ticktape.api import create_app
from ticktape.config import Settings
from ticktape.feeds.sim import SimExchange
from ticktape.store.questdb import QuestDBStore, QuestDBTickStore
from ticktape.testing import draft_session, instances

pytestmark = pytest.mark.questdb


def _misses(text: str, table: str = "session_log") -> dict[str, float]:
    """outcome → value of every ``ticktape_questdb_symbol_misses_total`` sample of
    ``table``."""
    found = {}
    for line in text.splitlines():
        if line.startswith("ticktape_questdb_symbol_misses_total{"):
            if f'table="{table}"' not in line:
                continue
            outcome = line.split('outcome="', 1)[1].split('"', 1)[0]
            found[outcome] = float(line.split()[-1])
    return found


def test_symbol_misses_are_counted_in_metrics(qdb_url: str, run: Run[Any]) -> None:
    settings = Settings(store_url=qdb_url, allowed_hosts=("localhost",))

    async def scenario() -> None:
        async with instances(settings) as add:
            instance = await add("misses")
            store = instance.raw.inner
            assert isinstance(store, QuestDBStore)
            app = create_app(settings, service=instance.service, metrics=instance.metrics)
            transport = httpx.ASGITransport(app=app)
            async with httpx.AsyncClient(transport=transport, base_url="http://localhost") as http:
                session = await store.sessions.create_session(draft_session(), actor="t")
                zero = {"rechecked": 0.0, "confirmed": 0.0}
                assert _misses((await http.get("/metrics")).text) == zero
                hidden = session.id

                def drop(rows: list[tuple[Any, ...]]) -> list[tuple[Any, ...]]:
                    return [r for r in rows if str(r[0]) != hidden]

                store.log_lookups.on_lookup = drop  # the documented testing hook
                # found by its string: one id rechecked, and there after all
                assert (await http.get(f"/api/sessions/{hidden}")).status_code == 200
                store.log_lookups.on_lookup = None
                # really unknown: rechecked, not found
                assert (await http.get("/api/sessions/no-such-session")).status_code == 404
                expected = {
                    "rechecked": float(store.log_lookups.rechecked),
                    "confirmed": float(store.log_lookups.confirmed),
                }
                assert expected["confirmed"] >= 1
                assert expected["rechecked"] >= expected["confirmed"] + 1
                assert _misses((await http.get("/metrics")).text) == expected

    run(scenario())


def test_a_seals_tick_table_misses_are_counted_in_metrics_by_table(
    qdb_url: str, run: Run[Any], make_session: Callable[..., Any]
) -> None:
    """A seal whose count reads of both tick tables miss a session (the testing hook
    drops its rows, as QuestDB's lookup does), and of an empty session (rechecked, none
    found): each tick table's figures in ``/metrics``; the session log's stay apart."""
    settings = Settings(store_url=qdb_url, allowed_hosts=("localhost",))

    async def scenario() -> None:
        async with instances(settings) as add:
            instance = await add("tick-misses")
            ticks = instance.raw.inner.ticks
            assert isinstance(ticks, QuestDBTickStore)
            app = create_app(settings, service=instance.service, metrics=instance.metrics)
            transport = httpx.ASGITransport(app=app)
            async with httpx.AsyncClient(transport=transport, base_url="http://localhost") as http:
                zero = {"rechecked": 0.0, "confirmed": 0.0}
                text = (await http.get("/metrics")).text
                assert _misses(text, "trades") == _misses(text, "orderbook") == zero
                session = await start(instance.raw, make_session, "lost")
                empty = await start(instance.raw, make_session, "lost")
                feed = SimExchange(session.id, ("BTC_USDT",), rate_per_s=0)
                await instance.raw.ticks.write(feed.next_block(), owner="lost")
                await instance.raw.ticks.wait_visible(30)
                log_before = _misses((await http.get("/metrics")).text)

                def drop(table: str, rows: list[tuple[Any, ...]]) -> list[tuple[Any, ...]]:
                    return [r for r in rows if str(r[0]) != session.id]

                ticks.on_count_rows = drop  # the documented testing hook
                try:
                    await ticks.seal(session.id, acknowledged=True)  # one read a table
                    await ticks.seal(empty.id, acknowledged=True)
                finally:
                    ticks.on_count_rows = None
                text = (await http.get("/metrics")).text
                for table in ("trades", "orderbook"):
                    assert _misses(text, table) == {"rechecked": 2.0, "confirmed": 1.0}
                assert _misses(text) == log_before

    run(scenario())
