"""Torch's intra-op thread count as a context: set around a call and restored after it.

The count is process-wide (``torch.set_num_threads``), so code that changes it for a block must
put it back, or a later call in the same process (another pair on the same batch worker, the
caller's own work) runs with the wrong count. Every change of the count in ``register`` goes
through :func:`torch_threads`.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager


@contextmanager
def torch_threads(threads: int | None) -> Iterator[None]:
    """Run the block with ``threads`` torch threads (``None``: leave the count as it is), then
    restore the count found on entry, also when the block raises."""
    import torch

    before = torch.get_num_threads()
    if threads is None or threads == before:
        yield
        return
    torch.set_num_threads(threads)
    try:
        yield
    finally:
        torch.set_num_threads(before)
