"""Which MEXC book procedure a session gets: full-depth snapshots when they are deep enough."""

from __future__ import annotations

from collections.abc import Callable

import pytest

from ticktape.config import FeedEndpoints
from ticktape.domain import Session, SessionConfig
from ticktape.feeds.factory import build_feed
from ticktape.feeds.mexc import MexcFeed


@pytest.mark.parametrize(
    ("depth", "full_depth_on", "limit"),
    [
        (1, True, 5),
        (5, True, 5),
        (10, True, 10),
        (15, True, 20),
        (20, True, 20),
        (21, True, None),
        (50, True, None),
        (5, False, None),
    ],
)
def test_mexc_uses_sub_depth_full_when_the_depth_allows(
    make_session: Callable[..., Session], depth: int, full_depth_on: bool, limit: int | None
) -> None:
    session = make_session(exchange="mexc", config=SessionConfig(book_depth=depth))
    built = build_feed(session, FeedEndpoints(mexc_full_depth=full_depth_on))
    assert isinstance(built.connector, MexcFeed)
    assert built.connector.full_limit == limit


def test_the_full_depth_setting_is_on_unless_turned_off() -> None:
    assert FeedEndpoints.from_env({}).mexc_full_depth is True
    assert FeedEndpoints.from_env({"TICKTAPE_MEXC_FULL_DEPTH": "0"}).mexc_full_depth is False
    assert FeedEndpoints.from_env({"TICKTAPE_MEXC_FULL_DEPTH": "1"}).mexc_full_depth is True
    with pytest.raises(SystemExit, match="TICKTAPE_MEXC_FULL_DEPTH"):
        FeedEndpoints.from_env({"TICKTAPE_MEXC_FULL_DEPTH": "maybe"})
