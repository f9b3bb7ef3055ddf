import math

import pytest
import torch

from register.kernels.dense import barycentre_dense, softmin_dense
from register.ot import robust_match


def _clouds(n=300, m=250, seed=0):
    g = torch.Generator().manual_seed(seed)
    return torch.rand(n, 3, generator=g) - 0.5, torch.rand(m, 3, generator=g) - 0.5


def test_softmin_matches_direct_formula():
    x, y = _clouds(40, 30)
    h = torch.randn(30, generator=torch.Generator().manual_seed(1))
    eps = 0.01
    cost = ((x[:, None] - y[None]) ** 2).sum(-1) / 2
    expected = -eps * torch.logsumexp(h[None] - cost / eps, dim=1)
    torch.testing.assert_close(softmin_dense(eps, x, y, h), expected, rtol=1e-4, atol=1e-6)
    avg, lse = barycentre_dense(eps, x, y, h, y)
    w = torch.softmax(h[None] - cost / eps, dim=1)
    torch.testing.assert_close(avg, w @ y, rtol=1e-4, atol=1e-5)
    torch.testing.assert_close(lse, torch.logsumexp(h[None] - cost / eps, dim=1), rtol=1e-4, atol=1e-4)


def test_balanced_matching_of_permuted_copy_is_the_permutation():
    x, _ = _clouds(400)
    perm = torch.randperm(400, generator=torch.Generator().manual_seed(3))
    shift = torch.tensor([0.02, -0.01, 0.015])
    y = (x + shift)[perm]
    m = robust_match(x, y, blur=0.002, max_iter=100)
    torch.testing.assert_close(m.targets, x + shift, atol=2e-3, rtol=0)
    assert (m.confidence - 1).abs().max() < 0.05


def test_unbalanced_gives_outliers_low_confidence():
    x, _ = _clouds(300)
    outliers = torch.rand(100, 3, generator=torch.Generator().manual_seed(4)) * 4 + 3  # far away
    m = robust_match(torch.cat([x, outliers]), x.clone(), blur=0.01, reach=0.1, max_iter=100)
    assert m.confidence[:300].mean() > 0.8
    assert m.confidence[300:].max() < 0.05


def test_point_order_does_not_change_matches():
    x, y = _clouds()
    px = torch.randperm(len(x), generator=torch.Generator().manual_seed(5))
    py = torch.randperm(len(y), generator=torch.Generator().manual_seed(6))
    m1 = robust_match(x, y, blur=0.02, reach=0.3)
    m2 = robust_match(x[px], y[py], blur=0.02, reach=0.3)
    torch.testing.assert_close(m1.targets[px], m2.targets, atol=1e-4, rtol=0)
    torch.testing.assert_close(m1.confidence[px], m2.confidence, atol=1e-4, rtol=0)


def test_units_are_respected():
    """Scaling the data and every length by the same factor scales the matches."""
    x, y = _clouds()
    m1 = robust_match(x, y, blur=0.02, reach=0.3)
    m2 = robust_match(x * 100, y * 100, blur=2.0, reach=30.0)
    torch.testing.assert_close(m1.targets * 100, m2.targets, atol=1e-3, rtol=0)
    assert math.isclose(m1.cost * 1e4, m2.cost, rel_tol=1e-3)


@pytest.mark.parametrize("reach", [math.inf, 0.2])
def test_keops_agrees_with_dense(reach):
    pytest.importorskip("pykeops")
    x, y = _clouds(200, 150)
    try:
        mk = robust_match(x, y, blur=0.05, reach=reach, backend="keops")
    except Exception as exc:  # KeOps needs a working compiler
        pytest.skip(f"KeOps unavailable here: {exc}")
    md = robust_match(x, y, blur=0.05, reach=reach, backend="dense")
    torch.testing.assert_close(mk.targets, md.targets, atol=1e-4, rtol=0)
    torch.testing.assert_close(mk.confidence, md.confidence, atol=1e-4, rtol=0)


def test_block_partition_covers_every_point_once_in_small_tight_blocks():
    """The k-d blocks hold each point exactly once, at most ``size`` per block, and round-trip."""
    from register.kernels.partition import make_blocks

    x, _ = _clouds(1000, 1)
    blocks = make_blocks(x, size=32)
    assert blocks.points.shape[1] <= 32 and blocks.valid.sum() == 1000
    assert torch.equal(torch.sort(blocks.order).values, torch.arange(1000))
    torch.testing.assert_close(blocks.scatter(blocks.gather(x, 0.0)), x)
    # Boxes are tight: a block's box is well below the cloud's (balanced median splits).
    assert float((blocks.hi - blocks.lo).max(1).values.mean()) < 0.5


@pytest.mark.parametrize("blur", [0.5, 0.05, 0.01])
def test_block_reductions_equal_the_full_sums(blur):
    """Block-sparse soft-min and barycentres vs all N x M terms in float64, with log-weights that
    vary by far more than the truncation (so the certificate, not the distance, decides)."""
    from register.kernels.blocks import BlockReducer

    g = torch.Generator().manual_seed(2)
    t = torch.rand(3000, generator=g) * 6
    x = torch.stack([torch.cos(t), torch.sin(t), t / 6], 1) * 0.4  # a curve: most pairs are far
    y = x[torch.randperm(3000, generator=g)] + 0.01 * torch.randn(3000, 3, generator=g)
    h = 30 * torch.rand(3000, generator=g)
    eps = blur**2
    reducer = BlockReducer(x, y)
    s = h.double()[None] - ((x.double()[:, None] - y.double()[None]) ** 2).sum(-1) / (2 * eps)
    exact = torch.logsumexp(s, 1)
    assert (reducer.softmin(eps, h) / -eps - exact).abs().max() < 1e-3
    avg, lse = reducer.barycentre(eps, h, y)
    exact_avg = torch.softmax(s, 1) @ y.double()
    assert (avg.double() - exact_avg).abs().max() < 1e-4 and (lse - exact).abs().max() < 1e-3
    # The other direction: rows y among x.
    hx = torch.linspace(0, 5, 3000)
    s_t = hx.double()[None] - ((y.double()[:, None] - x.double()[None]) ** 2).sum(-1) / (2 * eps)
    assert (reducer.softmin(eps, hx, rows_are_x=False) / -eps - torch.logsumexp(s_t, 1)).abs().max() < 1e-3
    if blur <= 0.05:
        assert reducer.pairs_kept < 0.5 * reducer.pairs_total  # really skipped pairs
    # Calls at the same eps reuse the last row maxima as shifts: exact for log-weights that moved
    # a little, and for ones that moved by far more than the float32 range (rows redone).
    for moved in (h + 0.1 * torch.randn(3000, generator=g), h + 200 * torch.rand(3000, generator=g)):
        s = moved.double()[None] - ((x.double()[:, None] - y.double()[None]) ** 2).sum(-1) / (2 * eps)
        avg, lse = reducer.barycentre(eps, moved, y)
        assert (lse - torch.logsumexp(s, 1)).abs().max() < 1e-3
        assert (avg.double() - torch.softmax(s, 1) @ y.double()).abs().max() < 1e-4


@pytest.mark.parametrize("reach", [math.inf, 0.1])
def test_sparse_backend_agrees_with_dense_on_a_structured_cloud(reach, monkeypatch):
    """Multiscale block-sparse Sinkhorn (forced onto several levels) vs dense, on a curve."""
    monkeypatch.setattr("register.ot.matching.SPARSE_MIN_ENTRIES", 0)  # no dense shortcut
    from register.ot.multiscale import sinkhorn_multiscale
    from register.ot.unbalanced import sinkhorn

    g = torch.Generator().manual_seed(0)
    t = torch.rand(1500, generator=g) * 6
    x = torch.stack([torch.cos(t), torch.sin(t), t / 6], 1) * 0.3
    y = x[torch.randperm(1500, generator=g)] * 1.05 + 0.02
    a = b = torch.full((1500,), 1 / 1500)
    kw = {"blur": 0.01, "reach": reach, "diameter": 1.0, "max_iter": 300}
    dense = sinkhorn(x, y, a, b, **kw)
    sparse, reducer, _ = sinkhorn_multiscale(x, y, a, b, coarse_clusters=50, **kw)
    assert reducer.pairs_kept < reducer.pairs_total // 2  # really truncated
    eps = kw["blur"] ** 2
    shift = (dense.f - sparse.f).mean() if math.isinf(reach) else 0.0  # balanced: f + c, g - c
    assert (dense.f - sparse.f - shift).abs().max() < 0.5 * eps
    assert (dense.g - sparse.g + shift).abs().max() < 0.5 * eps
    m_dense = robust_match(x, y, blur=0.01, reach=reach, max_iter=300)
    m_sparse = robust_match(x, y, blur=0.01, reach=reach, max_iter=300, backend="sparse")
    assert (m_dense.targets - m_sparse.targets).norm(dim=1).max() < 2e-3
    assert (m_dense.confidence - m_sparse.confidence).abs().max() < 1e-2


@pytest.mark.parametrize("backend", ["dense", "sparse"])
def test_warm_start_from_a_converged_matching_stays_there(backend, monkeypatch):
    """Warm-started from its own converged potentials, a matching converges quickly to the same
    targets (the warm state round-trips through the data-unit normalisation)."""
    monkeypatch.setattr("register.ot.matching.SPARSE_MIN_ENTRIES", 0)  # no dense shortcut
    g = torch.Generator().manual_seed(5)
    t = torch.rand(800, generator=g) * 6
    x = torch.stack([torch.cos(t), torch.sin(t), t / 6], 1) * 30.0  # data units, not normalised
    y = x[torch.randperm(800, generator=g)] * 1.05 + 2.0
    kw = {"blur": 3.0, "reach": 20.0, "max_iter": 2000, "tol": 1e-3, "backend": backend}
    cold = robust_match(x, y, **kw)
    assert cold.converged
    warm = robust_match(x, y, **kw, warm=cold.warm)
    assert warm.converged and warm.iterations <= max(3, cold.iterations // 5)
    assert (warm.targets - cold.targets).norm(dim=1).max() < 1e-2
    assert (warm.confidence - cold.confidence).abs().max() < 1e-2


def test_sparse_backend_solves_small_problems_densely():
    """Below ``SPARSE_MIN_ENTRIES`` kernel entries the sparse backend gives the dense result."""
    x, y = _clouds(300, 250)
    sparse = robust_match(x, y, blur=0.05, reach=0.3, backend="sparse")
    dense = robust_match(x, y, blur=0.05, reach=0.3, backend="dense")
    torch.testing.assert_close(sparse.targets, dense.targets)
    torch.testing.assert_close(sparse.confidence, dense.confidence)


@pytest.mark.parametrize("reach", [math.inf, 0.2])
def test_geomloss_backend_agrees_with_dense(reach):
    """GeomLoss's solver (tensorized at this size) does one update per temperature of the same
    schedule: our solver with one final iteration gives nearly the same matches (a swapped or
    rescaled potential would move targets by ~0.1 here)."""
    pytest.importorskip("geomloss")
    x, y = _clouds(200, 150)
    kw = {"blur": 0.1, "reach": reach, "scaling": 0.9}
    mg = robust_match(x, y, backend="geomloss", **kw)
    md = robust_match(x, y, backend="dense", max_iter=1, **kw)
    assert not mg.converged  # no convergence test in GeomLoss's schedule: never claimed
    torch.testing.assert_close(mg.targets, md.targets, atol=6e-3, rtol=0)
    torch.testing.assert_close(mg.confidence, md.confidence, atol=0.1, rtol=0)  # unconverged row masses


def test_auto_backend_choice_and_its_reason():
    """CPU: dense for small problems, the block-sparse solver above the threshold; CUDA: dense,
    then KeOps. The reason names the sizes; an unknown backend is an error naming the option."""
    from register.errors import InputError
    from register.kernels.select import SPARSE_MIN_ENTRIES_CPU, choose_backend

    small = int(SPARSE_MIN_ENTRIES_CPU**0.5) - 1
    assert choose_backend(small, small, "cpu").name == "dense"
    choice = choose_backend(30_000, 30_000, "cpu")
    assert choice.name == "sparse" and "30000x30000" in choice.reason
    assert choose_backend(30_000, 30_000, "cuda").name == "keops"
    assert choose_backend(1000, 1000, "cuda:1").name == "dense"
    assert choose_backend(30_000, 30_000, "cpu", "dense").name == "dense"
    with pytest.raises(InputError, match="pipeline.backend = 'fast': unknown backend"):
        choose_backend(10, 10, "cpu", "fast")


def test_nested_block_partitions_share_one_order_and_nest():
    """Row and column blocks come from one k-d partition: same point order, and every small
    leaf lies inside one large leaf, each of the requested size at most."""
    from register.kernels.partition import kd_leaves, kd_nested_leaves

    x, _ = _clouds(1000, 1)
    order, (coarse, fine) = kd_nested_leaves(x, (64, 16))
    assert torch.equal(torch.sort(order).values, torch.arange(1000))
    assert int(torch.bincount(coarse).max()) <= 64 and int(torch.bincount(fine).max()) <= 16
    assert bool((coarse.diff() >= 0).all()) and bool((fine.diff() >= 0).all())
    parents = torch.zeros(int(fine.max()) + 1, dtype=torch.int64).scatter_reduce_(0, fine, coarse, "amax")
    assert torch.equal(parents[fine], coarse)  # one large leaf per small leaf
    # The coarse leaves are those of a partition at that size alone (same splits).
    alone_order, alone = kd_leaves(x, 64)
    assert torch.equal(torch.sort(order[coarse == 3]).values, torch.sort(alone_order[alone == 3]).values)


def _curve_pair(n: int, seed: int):
    """A curve (most pairs far apart) and a shuffled, jittered copy."""
    g = torch.Generator().manual_seed(seed)
    t = torch.rand(n, generator=g) * 6
    x = torch.stack([torch.cos(t), torch.sin(t), t / 6], 1) * 0.4
    y = x[torch.randperm(n, generator=g)] + 0.01 * torch.randn(n, 3, generator=g)
    return x, y, g


def _exact_terms(x, y, h, eps):
    """All ``h_j - C_ij / eps`` in float64 ``(N, M)``."""
    return h.double()[None] - ((x.double()[:, None] - y.double()[None]) ** 2).sum(-1) / (2 * eps)


def test_term_lists_equal_the_full_sums_and_are_remade_only_when_the_weights_spread():
    """Certified term lists vs all N x M terms: exact at the log-weights they were made at, after
    a drift just within the slack (same list), after a uniform shift by far more than the slack (same list: the
    certificate only sees the spread) and after a spread beyond the slack (list made again)."""
    from register.kernels.blocks import BlockReducer
    from register.kernels.lists import ListReducer

    x, y, g = _curve_pair(3000, 3)
    eps = 0.01**2
    lists = ListReducer(BlockReducer(x, y), x, y)
    h = 30 * torch.rand(3000, generator=g)
    expected_builds = [1, 1, 1, 2]
    # a spread just under the slack (16 - log 2 nats): same list, still exact.
    moves = [h, h + 15 * torch.rand(3000, generator=g), h + 500.0, h + 40 * torch.rand(3000, generator=g)]
    for moved, builds in zip(moves, expected_builds, strict=True):
        s = _exact_terms(x, y, moved, eps)
        assert (lists.softmin(eps, moved) / -eps - torch.logsumexp(s, 1)).abs().max() < 1e-3
        avg, lse = lists.barycentre(eps, moved, y)
        assert (avg.double() - torch.softmax(s, 1) @ y.double()).abs().max() < 1e-4
        assert lists.builds == builds
    # Lists are short here: a few per cent of the terms.
    assert len(lists.lists[True].rows) < 0.05 * 3000 * 3000
    # The other direction has its own list.
    hx = torch.linspace(0, 5, 3000)
    s_t = _exact_terms(y, x, hx, eps)
    assert (lists.softmin(eps, hx, rows_are_x=False) / -eps - torch.logsumexp(s_t, 1)).abs().max() < 1e-3
    assert lists.builds == 3


def test_term_lists_leave_wide_kernels_to_the_blocks():
    """Where a list would hold most terms of a row (a blur as wide as the cloud), the block
    reductions serve, with the same exact results."""
    from register.kernels.blocks import BlockReducer
    from register.kernels.lists import ListReducer

    x, y, g = _curve_pair(2000, 4)
    eps = 0.5**2
    blocks = BlockReducer(x, y)
    blocks.softmin(eps, torch.zeros(2000))  # a block call first: its entries per row decide
    lists = ListReducer(blocks, x, y)
    h = torch.rand(2000, generator=g)
    s = _exact_terms(x, y, h, eps)
    assert (lists.softmin(eps, h) / -eps - torch.logsumexp(s, 1)).abs().max() < 1e-3
    assert lists.builds == 0


def test_kd_partition_on_cpu_equals_the_torch_one():
    """The CPU partition (SciPy's k-d tree) and the device-generic torch one put the same points
    in each leaf, for every size (median splits along the widest axis, both)."""
    from register.kernels.partition import _kd_nested_leaves_torch, kd_nested_leaves

    x, _ = _clouds(3000, 1)

    def leaf_sets(order, leaf):
        return {frozenset(order[leaf == k].tolist()) for k in range(int(leaf.max()) + 1)}

    order, leaves = kd_nested_leaves(x, (64, 16))
    order_t, leaves_t = _kd_nested_leaves_torch(x, (64, 16))
    for leaf, leaf_t in zip(leaves, leaves_t, strict=True):
        assert leaf_sets(order, leaf) == leaf_sets(order_t, leaf_t)


def test_kd_partition_keeps_its_sizes_with_repeated_points():
    """Repeated coordinates (duplicate LiDAR returns, quantised scans) still give leaves of at
    most the requested sizes: a value-median split cannot separate equal points, a rank split can."""
    from register.kernels.partition import kd_nested_leaves

    x, _ = _clouds(3000, 1)
    x[:400] = x[0]  # 400 copies of one point
    x[400:700, 2] = 0.5  # a flat slab: one coordinate repeated
    order, leaves = kd_nested_leaves(x, (64, 16))
    assert torch.equal(torch.sort(order).values, torch.arange(3000))
    for leaf, size in zip(leaves, (64, 16), strict=True):
        assert int(torch.bincount(leaf).max()) <= size
