"""The test harness's ``ticktape serve`` process never outlives a failed start.

A server that is not healthy in time (a QuestDB slow to answer under load) made
``ServerProcess.start`` raise and left the server running, bound to its port and
writing to the store, through every later test.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from ticktape.testing import ServerProcess


def test_a_server_not_healthy_in_time_is_stopped_by_the_failed_start(tmp_path: Path) -> None:
    server = ServerProcess(f"sqlite:///{tmp_path}/t.db", tmp_path, start_timeout_s=0.0)
    try:
        with pytest.raises(RuntimeError, match="not healthy"):
            server.start()
        assert server.proc is not None
        assert server.proc.poll() is not None, "the failed start left its server running"
    finally:
        if server.proc is not None and server.proc.poll() is None:
            server.proc.kill()
            server.proc.wait()
