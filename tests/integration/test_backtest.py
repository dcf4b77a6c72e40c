"""Backtest sessions under the supervisor: replay, results, stop, failures, validation."""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Callable, Coroutine
from pathlib import Path
from typing import Any

import pytest

from tests.integration.test_faults import base_settings, wait_status
from ticktape.domain import OwnerLossPolicy, Reason, Session, SessionStatus, validate_spec
from ticktape.errors import ValidationError
from ticktape.runners import default_runners
from ticktape.service import paper_spec
from ticktape.strategies import (
    Context,
    Strategy,
    StrategyRegistry,
    TradeTick,
    default_registry,
    results_hash,
    run_backtest,
    validate_backtest,
    validate_paper,
)
from ticktape.testing import Instance, eventually, instances, record_source, sim_blocks

Run = Callable[[Coroutine[Any, Any, Any]], Any]
SYMBOLS = ("BTC_USDT", "ETH_USDT")
MM = {"strategy": "market_maker", "params": {"qty": 0.5, "max_inventory": 2.0}}


class Explodes(Strategy):
    """Raises on its 500th trade."""

    name = "explodes"

    def on_start(self, ctx: Context) -> None:
        self.n = 0

    def on_trade(self, ctx: Context, trade: TradeTick) -> None:
        self.n += 1
        if self.n == 500:
            raise RuntimeError("boom at trade 500")


def registry() -> StrategyRegistry:
    reg = default_registry()
    reg.register(Explodes, origin="test")
    return reg


async def start_backtest(node: Instance, source: Session, **fields: Any) -> Session:
    body = {"source_session": source.id, **MM, **fields}
    owner_loss = body.pop("on_owner_loss", "fail")
    spec = validate_backtest(body, registry())
    session_spec = await node.service.backtest_spec(spec, on_owner_loss=OwnerLossPolicy(owner_loss))
    return await node.service.create(session_spec)


def reference_hash(blocks: list[Any], **fields: Any) -> tuple[str, int]:
    """The same strategy run straight over the recorded blocks, never through a store."""
    body = {"source_session": "x", **MM, **fields}
    spec = validate_backtest(body, registry())
    strategy = registry().create(spec.strategy, spec.params, spec.form)
    result = run_backtest(strategy, blocks, SYMBOLS, spec.sim_config("sim"), seed=spec.seed)
    return result.hash, result.ticks


async def stored_hash(node: Instance, session_id: str) -> str:
    lines: dict[str, list[str]] = {}
    for table in ("orders", "fills"):
        rows = await node.raw.results.rows(session_id, table, limit=10_000)  # type: ignore[arg-type]
        lines[table] = [r.body for r in rows]
    return results_hash(
        (json.loads(x) for x in lines["orders"]), (json.loads(x) for x in lines["fills"])
    )


@pytest.fixture
def play(run: Run, tmp_path: Path) -> Callable[[Callable[[Any], Any]], None]:
    def go(body: Callable[[Any], Any]) -> None:
        async def main() -> None:
            # a replay thread competes with the heartbeat for the GIL: leases of a few
            # seconds, so a loaded test machine does not reap a healthy run
            settings = dataclasses.replace(
                base_settings(tmp_path), lease_s=5.0, heartbeat_interval_s=0.5
            )
            # the built-ins and a strategy that fails, for these tests
            async with instances(settings, default_runners(registry())) as add:

                async def add_node(name: str = "a", **overrides: Any) -> Instance:
                    node: Instance = await add(name, **overrides)
                    return node

                await body(add_node)

        run(main())

    return go


def test_a_backtest_replays_its_source_and_stores_results_equal_to_a_direct_run(
    play: Callable[..., None],
) -> None:
    blocks = sim_blocks(30_000)

    async def body(add: Any) -> None:
        node = await add()
        source = await record_source(node.raw, blocks)
        session = await start_backtest(node, source)
        done = await wait_status(node, session.id, SessionStatus.COMPLETED, timeout_s=60)
        assert done.reason == Reason.SOURCE_EXHAUSTED
        # stats: every tick of the source replayed, by kind
        assert (done.stats.trades, done.stats.orderbook) == (
            source.stats.trades,
            source.stats.orderbook,
        )
        summary = await node.raw.results.summary(session.id)
        assert summary is not None and summary.status == "completed"
        expected, ticks = reference_hash(blocks)
        assert ticks == source.stats.records_collected
        assert summary.hash == expected
        assert await stored_hash(node, session.id) == expected
        assert summary.fills > 0  # the market maker traded: the hash covers real fills

    play(body)


def test_a_stopped_backtest_keeps_its_results_up_to_the_stop(
    play: Callable[..., None],
) -> None:
    blocks = sim_blocks(20_000, rate_per_s=100.0)  # 100 s of exchange time per symbol

    async def body(add: Any) -> None:
        node = await add()
        source = await record_source(node.raw, blocks)
        session = await start_backtest(node, source, speed=10.0)  # ~10 s of replay

        async def replaying() -> bool:
            s = await node.raw.sessions.get_session(session.id)
            return s.stats.records_collected > 0

        await eventually(replaying, timeout_s=30, what="replay progress in the stats")
        await node.service.stop(session.id)
        done = await wait_status(node, session.id, SessionStatus.STOPPED, timeout_s=30)
        summary = await node.raw.results.summary(session.id)
        assert summary is not None and summary.status == "stopped"
        replayed = done.stats.records_collected
        assert 0 < replayed < source.stats.records_collected
        # the results are those of a run over exactly the ticks it replayed
        events = await node.raw.results.rows(session.id, "equity", limit=10_000)
        assert events  # sampled at least at the end

    play(body)


def test_results_are_appended_while_the_replay_runs_and_equal_a_direct_run(
    play: Callable[..., None],
) -> None:
    blocks = sim_blocks(20_000, rate_per_s=100.0)  # 100 s of exchange time per symbol

    async def body(add: Any) -> None:
        node = await add(result_batch_rows=50)
        source = await record_source(node.raw, blocks)
        session = await start_backtest(node, source, speed=20.0)  # ~5 s of replay

        async def partial_results() -> bool:
            found = await node.raw.results.summary(session.id)
            return found is not None and found.status == "partial" and found.fills > 0

        await eventually(partial_results, timeout_s=30, what="results appended mid-replay")
        done = await wait_status(node, session.id, SessionStatus.COMPLETED, timeout_s=60)
        summary = await node.raw.results.summary(session.id)
        assert summary is not None and summary.status == "completed"
        expected, _ticks = reference_hash(blocks, speed=20.0)
        assert summary.hash == expected == await stored_hash(node, session.id)
        assert done.stats.records_collected == source.stats.records_collected

    play(body)


def test_a_results_store_failure_ends_the_run_with_the_reason_never_a_hang(
    play: Callable[..., None],
) -> None:
    blocks = sim_blocks(20_000, rate_per_s=100.0)

    async def body(add: Any) -> None:
        node = await add(result_batch_rows=50)
        source = await record_source(node.raw, blocks)
        node.store.fail("append_results", times=None, when=lambda part, **_: part.orders_at > 0)
        session = await start_backtest(node, source, speed=20.0)
        done = await wait_status(node, session.id, SessionStatus.FAILED, timeout_s=60)
        events = await node.raw.sessions.list_events(session.id)
        assert "results could not be stored" in (events[-1].detail or "")
        # the first part stays: rows of whole parts, marked partial
        summary = await node.raw.results.summary(session.id)
        assert summary is not None and summary.status == "partial" and summary.orders > 0
        assert done.stats.records_collected < source.stats.records_collected

    play(body)


def test_a_strategy_that_raises_fails_its_session_with_the_traceback(
    play: Callable[..., None],
) -> None:
    blocks = sim_blocks(5_000)

    async def body(add: Any) -> None:
        node = await add()
        source = await record_source(node.raw, blocks)
        session = await start_backtest(node, source, strategy="explodes", params={})
        done = await wait_status(node, session.id, SessionStatus.FAILED, timeout_s=60)
        assert done.reason == Reason.STRATEGY_ERROR
        events = await node.raw.sessions.list_events(session.id)
        assert "boom at trade 500" in (events[-1].detail or "")
        summary = await node.raw.results.summary(session.id)
        assert summary is not None and summary.status == "strategy_error"
        # the instance is fine: another backtest runs to its end
        other = await start_backtest(node, source)
        await wait_status(node, other.id, SessionStatus.COMPLETED, timeout_s=60)

    play(body)


def test_a_backtest_is_refused_unless_its_source_is_a_finished_recording(
    play: Callable[..., None],
) -> None:
    async def body(add: Any) -> None:
        node = await add()
        recorded = await record_source(node.raw, sim_blocks(2_000))
        with pytest.raises(ValidationError, match="'no-such-session' not found"):
            await start_backtest(node, recorded.evolve(id="no-such-session"))
        live = await node.create(rate_per_s=50.0)
        with pytest.raises(ValidationError, match=r"is still (pending|running)"):
            await start_backtest(node, live)
        backtest = await start_backtest(node, recorded)
        with pytest.raises(ValidationError, match="is a backtest session"):
            await start_backtest(node, backtest)
        with pytest.raises(ValidationError, match="DOGE_USDT were not recorded"):
            await start_backtest(node, recorded, symbols=["DOGE_USDT"])
        empty = await record_source(node.raw, [])
        with pytest.raises(ValidationError, match="no recorded ticks"):
            await start_backtest(node, empty)
        with pytest.raises(ValidationError, match="not_a_strategy"):
            await start_backtest(node, recorded, strategy="not_a_strategy")
        with pytest.raises(ValidationError, match="qty"):
            await start_backtest(node, recorded, params={"qty": -1})

    play(body)


def test_stored_results_round_trip_their_hash(play: Callable[..., None]) -> None:
    """What the runner writes is what a reader hashes: canonical lines, byte for byte."""
    blocks = sim_blocks(10_000)

    async def body(add: Any) -> None:
        node = await add()
        source = await record_source(node.raw, blocks)
        session = await start_backtest(node, source)
        await wait_status(node, session.id, SessionStatus.COMPLETED, timeout_s=60)
        summary = await node.raw.results.summary(session.id)
        assert summary is not None
        assert await stored_hash(node, session.id) == summary.hash

    play(body)


def test_two_backtests_run_at_once_do_not_mix(play: Callable[..., None]) -> None:
    blocks = sim_blocks(10_000)

    async def body(add: Any) -> None:
        node = await add()
        source = await record_source(node.raw, blocks)
        a = await start_backtest(node, source)
        b = await start_backtest(node, source, params={"qty": 0.25, "max_inventory": 1.0})
        for s in (a, b):
            await wait_status(node, s.id, SessionStatus.COMPLETED, timeout_s=60)
        ha = (await node.raw.results.summary(a.id)).hash  # type: ignore[union-attr]
        hb = (await node.raw.results.summary(b.id)).hash  # type: ignore[union-attr]
        assert ha == reference_hash(blocks)[0]
        assert hb == reference_hash(blocks, params={"qty": 0.25, "max_inventory": 1.0})[0]
        assert ha != hb

    play(body)


@pytest.mark.questdb
def test_the_same_backtest_gives_the_same_results_hash_on_sqlite_and_questdb(
    run: Run, tmp_path: Path, request: pytest.FixtureRequest
) -> None:
    from tests.conftest import _drop_tables, isolated_questdb_url, questdb_available

    if not questdb_available():
        pytest.skip("no Java >= 17 / mvn here: QuestDB cannot run")
    questdb = isolated_questdb_url(request.getfixturevalue("questdb_url"))
    request.addfinalizer(lambda: _drop_tables(questdb))
    blocks = sim_blocks(40_000)
    fields = {"strategy": "market_maker", "params": {"qty": 0.3, "max_inventory": 1.5}}

    async def backtest_on(url: str) -> tuple[str, str, Session]:
        settings = dataclasses.replace(
            base_settings(tmp_path), store_url=url, lease_s=10.0, heartbeat_interval_s=1.0
        )
        async with instances(settings) as add:
            node: Instance = await add("a")
            source = await record_source(node.raw, blocks)
            session = await start_backtest(node, source, **fields)
            done = await wait_status(node, session.id, SessionStatus.COMPLETED, timeout_s=120)
            summary = await node.raw.results.summary(session.id)
            assert summary is not None
            return summary.hash, await stored_hash(node, session.id), done

    sqlite_hash, sqlite_stored, sqlite_done = run(backtest_on(f"sqlite:///{tmp_path}/same.db"))
    questdb_hash, questdb_stored, questdb_done = run(backtest_on(questdb))
    expected, _ticks = reference_hash(blocks, **fields)
    assert sqlite_hash == questdb_hash == expected
    assert sqlite_stored == questdb_stored == expected  # recomputed from what each store returns
    assert sqlite_done.stats == questdb_done.stats


# --------------------------------------------------------------------------- paper


async def start_paper(node: Instance, **fields: Any) -> Session:
    strategy_fields = {**MM, **{k: v for k, v in fields.items() if k in ("strategy", "params")}}
    recording = validate_spec(
        kind="collect",
        symbols=list(SYMBOLS),
        duration=fields.get("duration", "2s"),
        rate_per_s=fields.get("rate_per_s", 1000.0),
        seed=5,
    )
    spec = validate_paper({"symbols": list(SYMBOLS), "seed": 5, **strategy_fields}, registry())
    return await node.service.create(paper_spec(recording, spec))


def test_a_paper_session_records_and_a_backtest_of_it_reproduces_its_orders_and_fills(
    play: Callable[..., None],
) -> None:
    async def body(add: Any) -> None:
        node = await add()
        paper = await start_paper(node)
        done = await wait_status(node, paper.id, SessionStatus.COMPLETED, timeout_s=60)
        assert done.stats.records_collected > 0  # it recorded what it saw, as collect does
        events = await node.raw.sessions.list_events(paper.id)
        assert not [e for e in events if e.reason == Reason.COUNT_MISMATCH]
        live = await node.raw.results.summary(paper.id)
        assert live is not None and live.fills > 0
        rerun = await start_backtest(node, done, seed=5)
        await wait_status(node, rerun.id, SessionStatus.COMPLETED, timeout_s=60)
        replayed = await node.raw.results.summary(rerun.id)
        assert replayed is not None
        assert (replayed.orders, replayed.fills) == (live.orders, live.fills)
        assert replayed.hash == live.hash  # 100 % of its orders and fills, byte for byte
        for table in ("orders", "fills"):
            a = await node.raw.results.rows(paper.id, table, limit=10_000)  # type: ignore[arg-type]
            b = await node.raw.results.rows(rerun.id, table, limit=10_000)  # type: ignore[arg-type]
            assert [r.body for r in a] == [r.body for r in b]

    play(body)


def test_a_paper_strategy_that_raises_fails_its_session(play: Callable[..., None]) -> None:
    async def body(add: Any) -> None:
        node = await add()
        paper = await start_paper(node, strategy="explodes", params={}, duration="30s")
        done = await wait_status(node, paper.id, SessionStatus.FAILED, timeout_s=60)
        assert done.reason == Reason.STRATEGY_ERROR
        events = await node.raw.sessions.list_events(paper.id)
        assert "boom at trade 500" in (events[-1].detail or "")
        assert done.stats.records_collected > 0  # what it recorded is kept and counted

    play(body)
