"""The managed QuestDB server starts on free loopback ports, answers SQL, and stops for good.

Needs Java and the pinned jar (fetched with ``mvn`` on first use, then cached); it is
skipped with the reason when either cannot be had. One server start (~3 s) in all.
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable
from pathlib import Path

import psycopg
import pytest

from ticktape import questdb_server as qs

pytestmark = pytest.mark.questdb


def _gone(pid: int) -> bool:
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except FileNotFoundError:
        return True
    return stat.rsplit(")", 1)[-1].split()[0] in ("Z", "X")


def test_start_select_stop(own_questdb: Callable[..., qs.ServerHandle]) -> None:
    handle = own_questdb(
        ("pg.select.cache.enabled", "false"),
        pg_idle_timeout_s=4.0,
        extra_jvm_options=("-Dticktape.test=1",),
    )
    config = handle.config
    try:
        assert handle.store_url == (
            f"questdb://127.0.0.1:{config.pg_port}?ilp=http://127.0.0.1:{config.http_port}"
        )
        with psycopg.connect(handle.pg_conninfo, autocommit=True) as conn:
            assert conn.execute("SELECT 1").fetchone() == (1,)

        state = json.loads((config.root / qs.STATE_FILE).read_text())
        assert state["pid"] == handle.pid
        assert state["version"] == qs.QUESTDB_VERSION
        assert state["pg_port"] == config.pg_port
        assert int((config.root / qs.PID_FILE).read_text()) == handle.pid
        assert os.getpgid(handle.pid) == handle.pid  # detached: its own process group
        argv = Path(f"/proc/{handle.pid}/cmdline").read_bytes().split(b"\0")
        assert b"-Dticktape.test=1" in argv

        info = qs.status(config.root)
        assert info["running"] and info["healthy"]
        assert info["store_url"] == handle.store_url
        with pytest.raises(qs.QuestDBServerError, match="already runs"):
            qs.start(config)
        # a restart (bench/chaos.py) starts it again as it runs: every setting kept
        again = qs.running_config(config.root)
        assert again.server_properties() == config.server_properties()
        assert again.server_properties()["pg.net.connection.timeout"] == "4000"
        assert again.extra_jvm_options == ("-Dticktape.test=1",)
        assert (again.ports, again.heap, again.version) == (
            config.ports,
            config.heap,
            config.version,
        )
    finally:
        handle.stop()

    assert _gone(handle.pid)
    assert not (config.root / qs.PID_FILE).exists()
    assert qs.status(config.root)["running"] is False
    assert qs.stop(config.root) is False  # idempotent
    with pytest.raises(qs.QuestDBServerError, match="no QuestDB runs"):
        qs.running_config(config.root)
