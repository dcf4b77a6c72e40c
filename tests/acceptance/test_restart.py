"""Crash recovery: SIGKILL the server while a session runs, then start it again."""

from __future__ import annotations

import httpx

from tests.acceptance.helpers import assert_valid_history, start_collect, stored_counts, wait_for
from tests.oracle import check_served
from ticktape.testing import ServerProcess


def test_sigkill_then_restart_finalises_the_session_as_owner_lost(server: ServerProcess) -> None:
    with httpx.Client(base_url=server.url, timeout=30.0) as c:
        created = start_collect(c, rate_per_s=5000)
        # wait until a heartbeat has published progress: data has been flushed
        wait_for(
            c, created["id"], lambda s: s["stats"]["records_collected"] > 0, what="a flushed batch"
        )
    server.kill()
    server.start()  # same instance name (host:port): it reaps its dead incarnation at once
    with httpx.Client(base_url=server.url, timeout=30.0) as c:
        session = c.get(f"/api/sessions/{created['id']}").json()
        assert session["status"] == "failed", session
        assert session["reason"] == "owner_lost"
        rows = stored_counts(c, created["id"])
        assert rows["trades"] > 0
        # reaped: no runner finished it, so no tally; the killed owner's unflushed tail is
        # lost — but what is stored is the feed's, contiguous, once, and the stats say so
        check_served(c, created["id"], tail_lost=True, tally=False)
        assert_valid_history(c, created["id"])
