"""A shutdown's phase lines have one form, written by the supervisor and the QuestDB
store alike, and read by bench/shutdown.py: ``stop phase <name>: k=v ...``."""

from __future__ import annotations

import logging

import pytest

from ticktape.phases import log_phase


def test_a_phase_line_names_the_phase_and_its_figures(caplog: pytest.LogCaptureFixture) -> None:
    log = logging.getLogger("ticktape.test.phases")
    with caplog.at_level(logging.INFO, logger=log.name):
        log_phase(log, "seal gather", at_s=7.8049, queued=14, why="idle")
    assert [r.getMessage() for r in caplog.records] == [
        "stop phase seal gather: at_s=7.80 queued=14 why=idle"
    ]


def test_no_line_below_info(caplog: pytest.LogCaptureFixture) -> None:
    log = logging.getLogger("ticktape.test.phases")
    with caplog.at_level(logging.WARNING, logger=log.name):
        log_phase(log, "stops", sessions=1000)
    assert caplog.records == []
