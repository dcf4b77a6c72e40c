"""A seal's fence text (``Seal.fence`` on QuestDB): the numbers the log keeps, and the
tick floor the seal counted from, which the log does not keep."""

from __future__ import annotations

import json

import pytest

from ticktape.errors import StoreError
from ticktape.store.questdb import Fence


def test_a_fence_with_a_floor_reads_back_with_it_and_its_numbers_leave_the_floor_out() -> None:
    fence = Fence(3, 17, 15, 2, floor=1_700_000_000_000_000)
    assert Fence.load(fence.dump()) == fence
    assert fence.numbers() == [3, 17, 15, 2]  # what the log's ``fences`` column keeps


def test_a_fence_without_a_floor_is_the_numbers_as_before() -> None:
    assert Fence(3, 17, 15, 2).dump() == json.dumps([3, 17, 15, 2])
    assert Fence.load("[3, 17, 15]") == Fence(3, 17, 15, None, None)  # an older build's
    assert Fence.load("[3, 17, 15, 2]").floor is None


@pytest.mark.parametrize("text", ['{"fence": [3, 17, 15, 2]}', '{"floor": 5}', "[1, 2]", "x"])
def test_a_malformed_fence_text_is_a_store_error(text: str) -> None:
    with pytest.raises(StoreError):
        Fence.load(text)
