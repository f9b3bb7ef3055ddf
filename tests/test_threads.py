"""Torch's thread count is changed only for a block and restored after it, also on errors: the
small-problem single-thread rule of the matching and a batch pair's ``threads`` leave the
process as they found it."""

from __future__ import annotations

import pytest
import torch

from register.core.threads import torch_threads
from register.ot.matching import robust_match


@pytest.fixture
def two_threads():
    before = torch.get_num_threads()
    torch.set_num_threads(2)
    yield
    torch.set_num_threads(before)


def test_the_count_is_set_inside_and_restored_after(two_threads):
    with torch_threads(1):
        assert torch.get_num_threads() == 1
    assert torch.get_num_threads() == 2
    with torch_threads(None):
        assert torch.get_num_threads() == 2


def test_the_count_is_restored_when_the_block_raises(two_threads):
    with pytest.raises(RuntimeError), torch_threads(1):
        raise RuntimeError("inside")
    assert torch.get_num_threads() == 2


def test_a_small_matching_runs_on_one_thread_and_restores_the_count(two_threads, monkeypatch):
    seen = []
    import register.ot.matching as matching

    original = matching.sinkhorn

    def spy(*args, **kwargs):
        seen.append(torch.get_num_threads())
        return original(*args, **kwargs)

    monkeypatch.setattr(matching, "sinkhorn", spy)
    g = torch.Generator().manual_seed(0)
    x, y = (
        torch.rand(200, 3, generator=g, dtype=torch.float64),
        torch.rand(180, 3, generator=g, dtype=torch.float64),
    )
    robust_match(x, y, blur=0.05, reach=0.3, backend="dense")
    assert seen and set(seen) == {1}
    assert torch.get_num_threads() == 2
