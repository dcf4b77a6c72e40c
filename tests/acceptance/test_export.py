"""Export round trip and cursor paging, through a real server: export → read back with
pyarrow / csv → equal to the data routes, row for row; the routes page with next_cursor."""

from __future__ import annotations

import csv
import io
import subprocess
import sys
from datetime import datetime
from pathlib import Path
from typing import Any

import httpx
import pyarrow.parquet as pq
import pytest

from tests.acceptance.helpers import start_collect, wait_for
from ticktape.testing import ServerProcess

PAGE = 700  # small pages: many of them, ties at a page edge included


def _paged(c: httpx.Client, sid: str, kind: str, **params: Any) -> list[dict[str, Any]]:
    rows: list[dict[str, Any]] = []
    cursor = None
    pages = 0
    while True:
        query = {"limit": PAGE, **params, **({"cursor": cursor} if cursor else {})}
        response = c.get(f"/api/sessions/{sid}/{kind}", params=query)
        assert response.status_code == 200, response.text
        body = response.json()
        rows += body[kind]
        pages += 1
        cursor = body["next_cursor"]
        if cursor is None:
            assert body["count"] < PAGE or body["count"] == PAGE
            break
        assert body["count"] == PAGE
    return rows


@pytest.fixture
def recorded(client: httpx.Client) -> str:
    session = start_collect(client, rate_per_s=4000, book_depth=4, book_every=3)
    wait_for(client, session["id"], lambda s: s["stats"]["trades"] > 5000, what="5000 trades")
    stopped = client.post(f"/api/sessions/{session['id']}/stop", params={"wait": "true"})
    assert stopped.json()["status"] == "stopped"
    sid: str = session["id"]
    return sid


def _trade_key(t: dict[str, Any]) -> tuple[Any, ...]:
    return (
        t["symbol"],
        datetime.fromisoformat(t["ts"]),
        t["trade_id"],
        t["price"],
        t["qty"],
        t["side"],
        datetime.fromisoformat(t["recv"]),  # the local receive time is kept (never null here)
    )


def test_cursor_pages_cover_every_row_once(client: httpx.Client, recorded: str) -> None:
    session = client.get(f"/api/sessions/{recorded}").json()
    trades = _paged(client, recorded, "trades")
    assert len(trades) == session["stats"]["trades"]
    assert len({(t["symbol"], t["trade_id"]) for t in trades}) == len(trades)
    books = _paged(client, recorded, "orderbook")
    assert len(books) == session["stats"]["orderbook"]
    eth = _paged(client, recorded, "trades", symbol="ETH_USDT")
    assert eth == [t for t in trades if t["symbol"] == "ETH_USDT"]
    bad = client.get(f"/api/sessions/{recorded}/trades", params={"cursor": "not-a-cursor"})
    assert bad.status_code == 422 and bad.json()["error"]["field"] == "cursor"


def test_trades_export_round_trips_in_csv_and_parquet(client: httpx.Client, recorded: str) -> None:
    expected = [_trade_key(t) for t in _paged(client, recorded, "trades")]
    response = client.get(f"/api/sessions/{recorded}/export", params={"format": "parquet"})
    assert response.status_code == 200
    assert response.headers["content-type"] == "application/vnd.apache.parquet"
    table = pq.read_table(io.BytesIO(response.content))
    assert str(table.schema.field("ts").type) == "timestamp[us, tz=UTC]"
    assert str(table.schema.field("recv").type) == "timestamp[us, tz=UTC]"
    got = [
        (r["symbol"], r["ts"], r["trade_id"], r["price"], r["qty"], r["side"], r["recv"])
        for r in table.to_pylist()
    ]
    assert got == expected
    response = client.get(f"/api/sessions/{recorded}/export", params={"format": "csv"})
    assert response.headers["content-type"].startswith("text/csv")
    rows = list(csv.DictReader(io.StringIO(response.text)))
    got = [
        (
            r["symbol"],
            datetime.fromisoformat(r["ts"]),
            int(r["trade_id"]),
            float(r["price"]),
            float(r["qty"]),
            r["side"],
            datetime.fromisoformat(r["recv"]),
        )
        for r in rows
    ]
    assert got == expected


def test_orderbook_export_round_trips(client: httpx.Client, recorded: str) -> None:
    books = _paged(client, recorded, "orderbook")
    expected = []
    for b in books:
        row: list[Any] = [
            b["symbol"],
            datetime.fromisoformat(b["ts"]),
            datetime.fromisoformat(b["recv"]),
        ]
        for i in range(4):
            row += [b["bids"][i][0], b["bids"][i][1], b["asks"][i][0], b["asks"][i][1]]
        expected.append(tuple(row))
    params = {"format": "parquet", "data": "orderbook"}
    table = pq.read_table(
        io.BytesIO(client.get(f"/api/sessions/{recorded}/export", params=params).content)
    )
    assert str(table.schema.field("recv").type) == "timestamp[us, tz=UTC]"
    assert [tuple(r.values()) for r in table.to_pylist()] == expected
    params = {"format": "csv", "data": "orderbook"}
    text = client.get(f"/api/sessions/{recorded}/export", params=params).text
    rows = list(csv.reader(io.StringIO(text)))
    assert rows[0][:7] == [
        "symbol",
        "ts",
        "recv",
        "bid_price_1",
        "bid_qty_1",
        "ask_price_1",
        "ask_qty_1",
    ]
    got = [
        tuple(
            [
                r[0],
                datetime.fromisoformat(r[1]),
                datetime.fromisoformat(r[2]),
                *(float(v) for v in r[3:]),
            ]
        )
        for r in rows[1:]
    ]
    assert got == expected


def test_export_errors_are_clear(client: httpx.Client, recorded: str) -> None:
    unknown = client.get("/api/sessions/00000000-0000-4000-8000-000000000000/export")
    assert unknown.status_code == 404
    bad = client.get(f"/api/sessions/{recorded}/export", params={"format": "xlsx"})
    assert bad.status_code == 422


def test_cli_export_writes_a_parquet_file(
    server: ServerProcess, client: httpx.Client, recorded: str, tmp_path: Path
) -> None:
    target = tmp_path / "out.parquet"
    done = subprocess.run(
        [
            *(str(Path(sys.executable).with_name("ticktape")), "export", recorded),
            *("-f", "parquet", "-o", str(target), "--url", server.url),
        ],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0, done.stderr
    session = client.get(f"/api/sessions/{recorded}").json()
    assert pq.read_table(target).num_rows == session["stats"]["trades"]
    assert not (tmp_path / "out.parquet.part").exists()


def test_quality_of_a_simulated_session(client: httpx.Client, recorded: str) -> None:
    session = client.get(f"/api/sessions/{recorded}").json()
    report = client.get(f"/api/sessions/{recorded}/quality").json()
    streams = {(q["symbol"], q["data_type"]): q for q in report["streams"]}
    assert set(streams) == {
        (s, d) for s in ("BTC_USDT", "ETH_USDT") for d in ("trades", "orderbook")
    }
    assert (
        sum(q["rows"] for (_, d), q in streams.items() if d == "trades")
        == (session["stats"]["trades"])
    )
    assert (
        sum(q["rows"] for (_, d), q in streams.items() if d == "orderbook")
        == (session["stats"]["orderbook"])
    )
    for q in streams.values():
        assert (q["gaps"], q["lost"], q["coverage_pct"], q["out_of_order"]) == (0, 0, 100.0, 0)
        assert q["latency"]["p50_ms"] is not None  # receive times are stored for sim too
        assert q["rate_per_s"] > 0
