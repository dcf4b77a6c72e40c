"""``ticktape.testing.sigstop`` returns only once every thread of the process has stopped.

The frozen-QuestDB tests send a request right after the freeze and expect no answer;
``os.kill`` alone returns before a busy process on a loaded machine has stopped.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from collections.abc import Iterator

import pytest

from ticktape.testing import sigstop, stopped

# several threads, all busy: each must be seen stopped, not only the main one
BUSY = """
import threading
def spin():
    while True:
        pass
for _ in range(3):
    threading.Thread(target=spin, daemon=True).start()
print("ready", flush=True)
spin()
"""


@pytest.fixture
def busy() -> Iterator[subprocess.Popen[str]]:
    proc = subprocess.Popen([sys.executable, "-c", BUSY], stdout=subprocess.PIPE, text=True)
    try:
        assert proc.stdout is not None and proc.stdout.readline() == "ready\n"
        yield proc
    finally:
        os.kill(proc.pid, signal.SIGCONT)
        proc.kill()
        proc.wait(10)
        assert proc.stdout is not None
        proc.stdout.close()


def test_sigstop_returns_with_every_thread_stopped(busy: subprocess.Popen[str]) -> None:
    assert not stopped(busy.pid)  # spinning
    assert len(os.listdir(f"/proc/{busy.pid}/task")) == 4
    sigstop(busy.pid)
    assert stopped(busy.pid)
    os.kill(busy.pid, signal.SIGCONT)


def test_a_process_that_is_gone_is_not_reported_stopped() -> None:
    proc = subprocess.Popen([sys.executable, "-c", "pass"])
    proc.wait(10)
    assert not stopped(proc.pid)
    with pytest.raises(ProcessLookupError):
        sigstop(proc.pid)
