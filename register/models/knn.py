"""k-nearest-neighbour search for the flow network (indices only, no gradients).

Two exact methods with the same answer up to ties:

* ``"torch"``: chunked squared distances ``|q_i - r_j|^2`` and ``topk``; any device
  (the CUDA path). Memory ``O(chunk * M)``.
* ``"tree"``: ``scipy.spatial.cKDTree`` per batch item; CPU only. On 2 CPU cores it is
  10-100x faster than ``"torch"`` from a few thousand points on (``O(N log M)`` instead of
  ``O(N M)``), so ``"auto"`` uses it for CPU tensors.
"""

from __future__ import annotations

import numpy as np
import torch

# Rows per chunk are chosen so that one (chunk, M) distance block holds about this many entries.
_CHUNK_ENTRIES = 1 << 22


def knn(
    query: torch.Tensor, ref: torch.Tensor, k: int, *, method: str = "auto", workers: int = 1
) -> torch.Tensor:
    """Indices of the ``k`` nearest points of ``ref`` to each point of ``query``, nearest first.

    Args:
        query: ``(B, N, D)`` points; ref: ``(B, M, D)`` points (same units, same device).
        k: neighbours per query point (at most ``M``).
        method: ``"auto"`` (``"tree"`` on CPU, ``"torch"`` elsewhere), ``"tree"`` or ``"torch"``.
        workers: threads of the k-d tree queries (``"tree"`` only).

    Returns:
        ``(B, N, k)`` int64 indices into ``ref``'s second axis, on ``query``'s device.
    """
    if k > ref.shape[1]:
        raise ValueError(f"k = {k} neighbours requested among only {ref.shape[1]} points")
    if method == "auto":
        method = "tree" if query.device.type == "cpu" else "torch"
    if method == "tree":
        return _knn_tree(query, ref, k, workers)
    if method == "torch":
        return _knn_torch(query, ref, k)
    raise ValueError(f"unknown kNN method {method!r}; choose auto, tree or torch")


def _knn_torch(query: torch.Tensor, ref: torch.Tensor, k: int) -> torch.Tensor:
    q, r = query.detach(), ref.detach()
    step = max(1, _CHUNK_ENTRIES // max(r.shape[1], 1))
    rr = (r * r).sum(-1)[:, None, :]  # (B, 1, M)
    out = []
    for start in range(0, q.shape[1], step):
        qc = q[:, start : start + step]
        # |q - r|^2 = |q|^2 + |r|^2 - 2 <q, r>; |q|^2 is constant per row and does not change the order.
        d2 = torch.baddbmm(rr, qc, r.transpose(1, 2), alpha=-2.0)
        out.append(d2.topk(k, dim=-1, largest=False, sorted=True).indices)
    return torch.cat(out, dim=1)


def _knn_tree(query: torch.Tensor, ref: torch.Tensor, k: int, workers: int) -> torch.Tensor:
    from scipy.spatial import cKDTree

    q = query.detach().to("cpu", torch.float64).numpy()
    r = ref.detach().to("cpu", torch.float64).numpy()
    out = np.empty((q.shape[0], q.shape[1], k), dtype=np.int64)
    for b in range(q.shape[0]):
        _, idx = cKDTree(r[b]).query(q[b], k=k, workers=workers)
        out[b] = idx.reshape(q.shape[1], k)
    return torch.from_numpy(out).to(query.device)


def gather(values: torch.Tensor, index: torch.Tensor) -> torch.Tensor:
    """``values[b, index[b, ...]]`` per batch item.

    Args:
        values: ``(B, M, C)``; index: ``(B, N)`` or ``(B, N, k)`` int64 indices into ``M``.

    Returns:
        ``(B, N, C)`` or ``(B, N, k, C)``.
    """
    bsz, m, c = values.shape
    # One index_select on the flattened batch (1.6x faster on CPU than advanced indexing).
    offset = (torch.arange(bsz, device=index.device) * m).view(-1, *([1] * (index.dim() - 1)))
    flat = values.reshape(bsz * m, c).index_select(0, (index + offset).reshape(-1))
    return flat.view(*index.shape, c)
