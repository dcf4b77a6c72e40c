"""QuestDB's symbol lookups that missed are counted in ``/metrics``.

A by-id read of the session log that does not find an id reads it again by its string
value (``LogLookups``, docs/questdb.md). How often, and how often the session was there
after all (QuestDB's lookup missed it), is
``ticktape_questdb_symbol_misses_total{outcome="rechecked"|"confirmed"}``, read from
the store at each scrape of the real route.
"""

from __future__ import annotations

from typing import Any

import httpx
import pytest

from tests.conftest import Run
from ticktape.api import create_app
from ticktape.config import Settings
from ticktape.store.questdb import QuestDBStore
from ticktape.testing import draft_session, instances

pytestmark = pytest.mark.questdb


def _misses(text: str) -> dict[str, float]:
    """outcome → value of every ``ticktape_questdb_symbol_misses_total`` sample."""
    found = {}
    for line in text.splitlines():
        if line.startswith("ticktape_questdb_symbol_misses_total{"):
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
