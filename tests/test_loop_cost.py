"""``benchmarks.loop_cost`` drives the real ``Connection`` (the counts themselves need valgrind)."""

import pytest

from benchmarks.loop_cost import LOADS, run_load


@pytest.mark.parametrize("load", LOADS)
def test_each_load_answers_every_message(load):
    assert run_load(load, 500) == 500
