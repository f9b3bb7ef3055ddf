import numpy as np
import pytest

from register.core.fitting import fit_affine, rotation_angle_deg
from register.core.transforms import Affine, Composite, KernelField, Transform
from register.errors import InputError
from register.synth.deform import random_rotation


def _composite(rng):
    return Composite(
        [
            Affine(rng.normal(size=(3, 3)) + 3 * np.eye(3), rng.normal(size=3)),
            KernelField(rng.random((20, 3)), 0.1 * rng.normal(size=(20, 3)), (0.3, 0.6)),
        ]
    )


def test_save_load_apply_is_exact(tmp_path, rng):
    tf = _composite(rng)
    tf.save(tmp_path / "t.npz")
    loaded = Transform.load(tmp_path / "t.npz")
    pts = rng.random((100, 3))
    np.testing.assert_array_equal(tf.apply(pts), loaded.apply(pts))
    assert [s.kind for s in loaded.steps] == ["affine", "kernel_field"]


def test_saved_file_is_not_a_pickle(tmp_path, rng):
    _composite(rng).save(tmp_path / "t.npz")
    with np.load(tmp_path / "t.npz", allow_pickle=False) as data:
        assert str(data["kind"]) == "composite" and int(data["format_version"]) == 1


def test_affine_inverse_and_compose(rng):
    a = Affine(rng.normal(size=(3, 3)) + 3 * np.eye(3), rng.normal(size=3))
    pts = rng.random((10, 3))
    np.testing.assert_allclose(a.inverse().apply(a.apply(pts)), pts, atol=1e-12)
    np.testing.assert_allclose(a.compose(a).apply(pts), a.apply(a.apply(pts)), atol=1e-12)
    c = Composite([a, a])
    np.testing.assert_allclose(c.inverse().apply(c.apply(pts)), pts, atol=1e-10)


def test_load_rejects_garbage(tmp_path):
    bad = tmp_path / "bad.npz"
    bad.write_bytes(b"not a zip")
    with pytest.raises(InputError, match="bad.npz"):
        Transform.load(bad)
    with pytest.raises(InputError, match="not found"):
        Transform.load(tmp_path / "missing.npz")


def test_apply_checks_dimension(rng):
    with pytest.raises(InputError, match=r"\(N, 3\)"):
        Affine.identity(3).apply(rng.random((5, 2)))


@pytest.mark.parametrize("mode", ["rigid", "similarity", "affine"])
def test_fit_recovers_exact_map(mode, rng):
    x = rng.random((50, 3))
    r = random_rotation(rng, 170.0)
    matrix = {"rigid": r, "similarity": 1.7 * r, "affine": r @ np.diag([1.2, 0.8, 1.1])}[mode]
    y = x @ matrix.T + [1.0, -2.0, 0.5]
    fit = fit_affine(x, y, np.ones(50), mode)
    np.testing.assert_allclose(fit.matrix, matrix, atol=1e-9)
    if mode != "affine":
        assert rotation_angle_deg(fit.matrix / np.cbrt(np.linalg.det(fit.matrix)) @ r.T) < 1e-6


def test_fit_ignores_zero_weight_outliers(rng):
    x = rng.random((60, 3))
    y = x + [0.3, 0.0, 0.0]
    y[:10] = rng.random((10, 3)) * 10  # wild outliers with weight 0
    w = np.r_[np.zeros(10), np.ones(50)]
    np.testing.assert_allclose(fit_affine(x, y, w, "rigid").translation, [0.3, 0, 0], atol=1e-9)


@pytest.mark.parametrize("dim", [2, 3])
def test_multistart_candidates_are_proper_rotations(dim, rng):
    from register.core.fitting import grid_rotations, principal_axes_rotations

    x = rng.normal(size=(100, dim)) * np.arange(1, dim + 1)
    y = x @ random_rotation(rng, 180.0)[:dim, :dim].T if dim == 3 else x[:, ::-1] * [1, -1]
    candidates = grid_rotations(dim) + principal_axes_rotations(x, y, np.ones(100), np.ones(100))
    assert len(candidates) == (28 if dim == 3 else 14)
    for r in candidates:
        np.testing.assert_allclose(r @ r.T, np.eye(dim), atol=1e-9)
        assert np.linalg.det(r) == pytest.approx(1.0)


def test_narrow_kernel_field_uses_the_truncated_kernel_and_matches_the_dense_sum():
    """A field whose kernel is narrow against its controls is evaluated on the truncated (sparse)
    kernel; the result equals the full dense sum to ~1e-5 of the weights."""
    import torch

    from register.kernels.dense import kernel_product
    from register.kernels.truncated import truncated_gaussian

    rng = np.random.default_rng(0)
    controls = rng.uniform(0, 100, size=(3000, 3))
    weights = rng.normal(size=(3000, 3))
    points = rng.uniform(0, 100, size=(2000, 3))
    field = KernelField(controls, weights, (2.0, 1.0))
    assert truncated_gaussian(points, controls, field.sigmas) is not None  # the sparse path runs
    dense = kernel_product(
        torch.from_numpy(points), torch.from_numpy(controls), torch.from_numpy(weights), (2.0, 1.0)
    )
    np.testing.assert_allclose(field.displacement(points), dense.numpy(), atol=1e-4)
    wide = KernelField(controls, weights, (80.0,))
    assert truncated_gaussian(points, controls, wide.sigmas) is None  # dense path for a wide kernel


def test_local_kernel_product_matches_the_dense_sum_and_skips_far_centres(monkeypatch):
    """Grouped rows against their nearby centres: the full dense sum to ~1e-5 of the weights,
    with groups that really leave centres out (a kernel of 6 on a 200-wide cloud); a kernel as
    wide as the cloud takes the plain dense product."""
    import torch

    import register.kernels.truncated as truncated
    from register.kernels.dense import kernel_product

    rng = np.random.default_rng(1)
    x = torch.from_numpy(rng.uniform(0, 200, size=(5000, 3)))
    centres = torch.from_numpy(rng.uniform(0, 200, size=(800, 3)))
    weights = torch.from_numpy(rng.normal(size=(800, 3)))
    sizes = []
    orig = kernel_product

    def counting(a, b, w, s):
        sizes.append(len(a) * len(b))
        return orig(a, b, w, s)

    monkeypatch.setattr("register.kernels.dense.kernel_product", counting)
    for sigma, grouped in ((6.0, True), (60.0, False)):
        sizes.clear()
        out = truncated.local_kernel_product(x, centres, weights, (sigma,))
        ref = orig(x, centres, weights, (sigma,))
        np.testing.assert_allclose(out.numpy(), ref.numpy(), atol=1e-4)
        if grouped:
            assert len(sizes) > 1 and sum(sizes) < 0.5 * len(x) * len(centres)
        else:
            assert sizes == [len(x) * len(centres)]


def test_narrow_gaussian_kernel_is_exact_where_exp_would_be_subnormal():
    """Clamping the exponent before exp (speed) leaves the kernel's values: entries below
    1e-300 of the peak become ~1e-304 instead of subnormals or zero."""
    import torch

    from register.kernels.dense import gaussian_kernel

    x = torch.linspace(0, 400, 2001, dtype=torch.float64)[:, None]
    k = gaussian_kernel(x, x[:1], (5.0,))[:, 0]
    exact = torch.exp(-(x[:, 0] ** 2) / 50.0)  # |x - y|^2 / (2 sigma^2)
    big = exact > 1e-250
    torch.testing.assert_close(k[big], exact[big], rtol=1e-12, atol=0)
    assert float(k[~big].max()) < 1e-250 and bool((k >= 0).all())


def test_fit_kernel_field_sparse_and_dense_normal_equations_agree():
    """The spline stage's regression (4) gives the same field with truncated and dense kernels."""
    from register.core.kernel_fit import fit_kernel_field
    from register.kernels import truncated

    rng = np.random.default_rng(1)
    z = rng.uniform(0, 100, size=(3000, 3))
    d = np.sin(z / 20.0)
    w = rng.uniform(0.1, 1.0, size=3000)
    sparse = fit_kernel_field(z, d, w, z[:800], 4.0, 1e-3)
    saved = truncated.SPARSE_MAX_DENSITY
    try:
        truncated.SPARSE_MAX_DENSITY = -1.0  # force the dense path
        dense = fit_kernel_field(z, d, w, z[:800], 4.0, 1e-3)
    finally:
        truncated.SPARSE_MAX_DENSITY = saved
    q = rng.uniform(0, 100, size=(500, 3))
    np.testing.assert_allclose(sparse.displacement(q), dense.displacement(q), atol=1e-4)
    assert np.abs(sparse.displacement(z) - d).mean() < 0.75 * np.abs(d).mean()  # and it fits the data


def test_grid_controls_carry_a_wide_field_like_many_random_controls():
    """A wide kernel needs few controls: voxel centroids half a kernel width apart give the same
    fit of a smooth field as 1500 random controls, with a fraction of them."""
    from register.core.kernel_fit import fit_kernel_field, grid_controls

    rng = np.random.default_rng(2)
    z = rng.uniform(0, 200, size=(4000, 3))
    d = 3.0 * np.stack([np.sin(z[:, 1] / 60.0), np.cos(z[:, 2] / 50.0), np.sin(z[:, 0] / 70.0)], 1)
    w = np.ones(len(z))
    sigma = 40.0
    controls = grid_controls(z, sigma / 2, 2000)
    assert controls is not None and 500 <= len(controls) <= 1000  # (200 / 20)^3 voxels at most
    assert grid_controls(z, sigma / 10, 2000) is None  # too many voxels: the caller subsamples
    coarse = fit_kernel_field(z, d, w, controls, sigma, 1e-3)
    fine = fit_kernel_field(z, d, w, z[rng.choice(len(z), 1500, replace=False)], sigma, 1e-3)
    q = rng.uniform(20, 180, size=(500, 3))
    gap = np.abs(coarse.displacement(q) - fine.displacement(q)).max()
    assert gap < 1e-3, gap  # 3-unit displacements
    assert np.abs(coarse.displacement(z) - d).mean() < 0.1 * np.abs(d).mean()


def test_wide_kernel_fit_on_voxel_aggregated_data_matches_the_full_fit(monkeypatch):
    """(4) on the data summarised per voxel of sigma / 4 (weighted centroids and means) gives the
    field of the fit on every point, to a small fraction of the displacement; and the summary
    keeps the total weight and the weighted means."""
    from register.core import kernel_fit as spline

    rng = np.random.default_rng(3)
    z = rng.uniform(0, 200, size=(20000, 3))
    d = 3.0 * np.stack([np.sin(z[:, 1] / 60.0), np.cos(z[:, 2] / 50.0), np.sin(z[:, 0] / 70.0)], 1)
    d += rng.normal(0, 0.3, size=d.shape)  # noisy matches
    w = rng.uniform(0.0, 1.0, size=len(z))
    w[:100] = 0.0  # unmatched points
    za, da, wa = spline.aggregate(z, d, w, 10.0)
    assert len(za) < len(z) // 2
    assert np.isclose(wa.sum(), w.sum()) and np.allclose(wa @ da, w @ d) and np.allclose(wa @ za, w @ z)
    controls = spline.grid_controls(z, 20.0, 2000)
    summarised = spline.fit_kernel_field(z, d, w, controls, 40.0, 1e-3)
    monkeypatch.setattr(spline, "aggregate", lambda z, d, w, cell: (z, d, w))
    full = spline.fit_kernel_field(z, d, w, controls, 40.0, 1e-3)
    q = rng.uniform(20, 180, size=(500, 3))
    gap = np.abs(summarised.displacement(q) - full.displacement(q)).max()
    assert gap < 0.02, gap  # 3-unit displacements (0.009 here; a voxel of sigma gives 0.16)


def test_clusters_keep_mass_and_centroid_and_map_affinely():
    from register.core.clusters import cluster
    from register.core.transforms import Affine

    rng = np.random.default_rng(3)
    p = rng.uniform(0, 10, (500, 3))
    m = rng.uniform(0.5, 2.0, 500)
    c = cluster(p, m, 2.0)
    assert len(c.points) < len(p)
    assert c.masses.sum() == pytest.approx(m.sum())
    np.testing.assert_allclose(c.masses @ c.points, m @ p, rtol=1e-12)
    # Each centroid lies in its voxel and is the mass-weighted mean of its members.
    k = c.labels[0]
    np.testing.assert_allclose(c.points[k], m[c.labels == k] @ p[c.labels == k] / m[c.labels == k].sum())
    # An affine map sends the clusters' centroids to the centroids of the mapped points.
    t = Affine(rng.normal(size=(3, 3)), rng.normal(size=3))
    member = c.labels == k
    np.testing.assert_allclose(
        t.apply(c.points)[k], m[member] @ t.apply(p)[member] / m[member].sum(), atol=1e-9
    )
    # cell 0: the points themselves.
    same = cluster(p, m, 0.0)
    assert same.points is p and len(same.masses) == len(p)


def test_wide_kernel_fit_by_syrk_equals_the_direct_normal_equations():
    import torch

    from register.core import kernel_fit as spline
    from register.kernels.dense import gaussian_kernel

    rng = np.random.default_rng(4)
    z = rng.uniform(-50, 50, (400, 3))
    d = np.stack([np.sin(z[:, 0] / 30), np.cos(z[:, 1] / 40), z[:, 2] / 100], 1)
    w = rng.uniform(0.1, 1.0, 400)
    controls = z[:60]
    fld = spline.fit_kernel_field(z, d, w, controls, 40.0, 1e-3)
    # The same normal equations (4) assembled directly (no aggregation at this density).
    wn = w / w.sum()
    centre = controls.mean(0)
    k = gaussian_kernel(torch.from_numpy(z - centre), torch.from_numpy(controls - centre), (40.0,)).numpy()
    kpp = gaussian_kernel(
        torch.from_numpy(controls - centre), torch.from_numpy(controls - centre), (40.0,)
    ).numpy()
    lhs = k.T @ (wn[:, None] * k) + 1e-3 * kpp
    lhs[np.diag_indices_from(lhs)] += 1e-10 * lhs.diagonal().mean()
    alpha = np.linalg.solve(lhs, k.T @ (wn[:, None] * d))
    np.testing.assert_allclose(fld.displacement(z), k @ alpha, atol=1e-6)


def test_grouped_normal_equations_equal_the_dense_ones_where_groups_skip_controls():
    """Per spatial group of points, only the nearby controls enter ``K^T W K`` and ``K^T W d``:
    the same matrices as the dense products to the truncation (~4e-6 of the peak), with groups
    that really leave controls out (kernel 8 on a 300-wide cloud)."""
    import torch

    import register.kernels.truncated as truncated
    from register.kernels.dense import gaussian_kernel

    rng = np.random.default_rng(6)
    z = rng.uniform(0, 300, (4000, 3))
    d = rng.normal(size=(4000, 3))
    w = rng.uniform(0.1, 1.0, 4000)
    controls = rng.uniform(0, 300, (700, 3))
    groups = truncated.near_groups(
        torch.from_numpy(z), torch.from_numpy(controls), 5 * 8.0, truncated.NORMAL_GROUP
    )
    assert groups is not None and len(groups) > 1
    assert sum(len(r) * int(n.sum()) for r, n in groups) < 0.5 * len(z) * len(controls)
    gram, rhs = truncated.weighted_normal_equations(z, controls, w, d, 8.0)
    k = gaussian_kernel(torch.from_numpy(z), torch.from_numpy(controls), (8.0,)).numpy()
    np.testing.assert_allclose(gram, k.T @ (w[:, None] * k), atol=1e-5)
    np.testing.assert_allclose(rhs, k.T @ (w[:, None] * d), atol=1e-5)
    np.testing.assert_array_equal(gram, gram.T)


def test_spd_solve_by_cholesky_and_by_lu_for_a_singular_matrix():
    import torch

    from register.core.kernel_fit import solve_spd

    rng = np.random.default_rng(5)
    a = rng.normal(size=(50, 50))
    spd = torch.from_numpy(a @ a.T + 50 * np.eye(50))
    rhs = torch.from_numpy(rng.normal(size=(50, 3)))
    np.testing.assert_allclose((spd @ solve_spd(spd, rhs)).numpy(), rhs.numpy(), atol=1e-9)
    indefinite = torch.from_numpy(np.diag([1.0, -1.0, 2.0]))  # no Cholesky factor: LU
    rhs3 = torch.ones(3, 1, dtype=torch.float64)
    np.testing.assert_allclose(solve_spd(indefinite, rhs3).numpy()[:, 0], [1.0, -1.0, 0.5])


@pytest.mark.parametrize("sigmas", [(0.4,), (0.05,), (0.3, 0.9)])
def test_exact_jacobian_matches_central_differences(sigmas, rng):
    """The kernel field's and the composite's Jacobians (chain rule) against central differences
    of ``apply``, for a wide (dense product), a narrow (truncated) and a multi-width field."""
    controls = rng.uniform(-1, 1, (40, 3))
    fld = KernelField(controls, rng.normal(0, 0.05, (40, 3)), sigmas)
    t = Composite([Affine(random_rotation(rng, 40.0) * 1.2, rng.normal(0, 1, 3)), fld, fld])
    x = rng.uniform(-1, 1, (300, 3))
    h = 1e-5
    for transform in (fld, t):
        shifts = np.eye(3) * h
        fd = np.stack([(transform.apply(x + e) - transform.apply(x - e)) / (2 * h) for e in shifts], -1)
        jac = transform.jacobian(x)
        assert jac.shape == (300, 3, 3)
        np.testing.assert_allclose(jac, fd, atol=1e-6)
        value, _ = fld.apply_with_jacobian(x)
        np.testing.assert_allclose(value, fld.apply(x), atol=1e-12)


def test_voxel_labels_by_integer_key_equal_the_row_wise_unique(rng, monkeypatch):
    """The raveled-key labels are exactly those of np.unique(axis=0), including the fallback
    taken when the grid has more voxels than an int64 key holds."""
    from register.core.clusters import voxel_labels

    z = rng.uniform(-50, 150, (5000, 3))
    ijk = np.floor((z - z.min(0)) / 3.0).astype(np.int64)
    _, expected = np.unique(ijk, axis=0, return_inverse=True)
    labels, n = voxel_labels(z, 3.0)
    np.testing.assert_array_equal(labels, expected.reshape(-1))
    assert n == int(expected.max()) + 1
    tiny, n_tiny = voxel_labels(z, 1e-13)  # 2e15 voxels per axis: the row-wise fallback
    assert n_tiny == len(np.unique(z, axis=0)) and len(tiny) == len(z)


# ------------------------------------------------------------------ inverse of kernel fields


def _smooth_field(rng, amplitude: float) -> KernelField:
    controls = rng.uniform(0, 100, (40, 3))
    weights = rng.normal(0, amplitude, (40, 3))
    return KernelField(controls, weights, (30.0, 15.0))


def test_inverse_kernel_field_round_trips_both_ways(rng):
    field = _smooth_field(rng, 3.0)
    x = rng.uniform(-20, 120, (2000, 3))
    y = field.apply(x)
    magnitude = np.linalg.norm(y - x, axis=1).max()
    assert magnitude > 5  # a field worth inverting
    inv = field.inverse()
    np.testing.assert_allclose(inv.apply(y), x, atol=1e-4)
    np.testing.assert_allclose(field.apply(inv.apply(x)), x, atol=1e-4)
    # J_{T^-1}(T(x)) J_T(x) = I
    prod = inv.jacobian(y[:50]) @ field.jacobian(x[:50])
    np.testing.assert_allclose(prod, np.broadcast_to(np.eye(3), prod.shape), atol=1e-6)
    assert inv.inverse() is field


def test_composite_inverse_with_kernel_fields_saves_and_loads(rng, tmp_path):
    tf = Composite([Affine(np.diag([1.1, 0.9, 1.0]), [3.0, -2.0, 1.0]), _smooth_field(rng, 2.0)])
    x = rng.uniform(0, 100, (500, 3))
    inv = tf.inverse()
    np.testing.assert_allclose(inv.apply(tf.apply(x)), x, atol=1e-4)
    inv.save(tmp_path / "inv.npz")
    loaded = Transform.load(tmp_path / "inv.npz")
    assert [s.kind for s in loaded.steps] == ["inverse_kernel_field", "affine"]
    np.testing.assert_array_equal(loaded.apply(tf.apply(x)), inv.apply(tf.apply(x)))


def test_inverse_of_a_folding_field_is_refused():
    # v(x) = w exp(-|x|^2 / 2): T folds where |w| exp(-1/2) > 1 along w (here |w| = 4).
    field = KernelField(np.zeros((1, 3)), np.array([[4.0, 0.0, 0.0]]), (1.0,))
    x = np.c_[np.linspace(-3, 3, 601), np.zeros((601, 2))]
    assert (np.linalg.det(field.jacobian(x)) <= 0).any()  # the field folds
    with pytest.raises(InputError, match="no unique inverse"):
        field.inverse().apply(field.apply(x))
