"""bmstudy.evaluation.surface (HD95, NSD) against a brute-force reference and a distance-transform route."""
from __future__ import annotations

import math

import numpy as np
import pytest
from scipy import ndimage

from bmstudy.evaluation import surface as S


def _blobs(seed: int, shape=(14, 12, 10), level=0.6) -> np.ndarray:
    rng = np.random.default_rng(seed)
    return ndimage.gaussian_filter(rng.random(shape), 1.2) > np.quantile(
        ndimage.gaussian_filter(rng.random(shape), 1.2), level)


def _brute(pred, truth, spacing, tol, connectivity=6):
    """Independent route: whole-volume erosion, all pairwise distances in mm, numpy percentiles."""
    st = ndimage.generate_binary_structure(3, {6: 1, 18: 2, 26: 3}[connectivity])
    sa = pred & ~ndimage.binary_erosion(pred, st, border_value=0)
    sb = truth & ~ndimage.binary_erosion(truth, st, border_value=0)
    a = np.argwhere(sa) * np.asarray(spacing)
    b = np.argwhere(sb) * np.asarray(spacing)
    d = np.sqrt(((a[:, None, :] - b[None, :, :]) ** 2).sum(-1))
    d_ab, d_ba = d.min(axis=1), d.min(axis=0)
    hd = max(np.percentile(d_ab, 95), np.percentile(d_ba, 95))
    nsd = ((d_ab <= tol + 1e-9).sum() + (d_ba <= tol + 1e-9).sum()) / (d_ab.size + d_ba.size)
    return hd, nsd, sa, sb


@pytest.mark.parametrize("spacing", [(1.0, 1.0, 1.0), (0.7, 1.3, 2.5), (3.0, 0.5, 1.0)])
@pytest.mark.parametrize("seed", [0, 1, 2])
@pytest.mark.parametrize("connectivity", [6, 26])
def test_hd95_and_nsd_equal_brute_force(spacing, seed, connectivity):
    pred, truth = _blobs(seed), _blobs(seed + 100)
    assert pred.any() and truth.any()
    hd, nsd, _, _ = _brute(pred, truth, spacing, 2.0, connectivity)
    assert S.hd95(pred, truth, spacing, connectivity=connectivity) == pytest.approx(hd, abs=1e-12)
    assert S.surface_dice(pred, truth, spacing, 2.0, connectivity=connectivity) == pytest.approx(nsd, abs=1e-12)


@pytest.mark.parametrize("spacing", [(1.0, 1.0, 1.0), (0.7, 1.3, 2.5)])
def test_directed_distances_equal_distance_transform(spacing):
    """A third route: scipy's EDT of the complement of the truth surface, sampled at the pred surface."""
    pred, truth = _blobs(5), _blobs(6)
    _, _, sa, sb = _brute(pred, truth, spacing, 1.0)
    edt = ndimage.distance_transform_edt(~sb, sampling=spacing)
    pts = S.surface_voxels_mm(pred, spacing)
    ours = S.directed_distances(pts, S.surface_voxels_mm(truth, spacing))
    idx = np.rint(pts / np.asarray(spacing)).astype(int)
    assert len(idx) == sa.sum() and sa[tuple(idx.T)].all()  # the same surface voxels
    np.testing.assert_allclose(ours, edt[tuple(idx.T)], atol=1e-12)


def test_surface_on_the_border_counts_the_border_voxels():
    m = np.zeros((5, 5, 5), bool)
    m[:3, :3, :3] = True  # 3x3x3 cube in the corner: all but the centre voxel are surface
    pts = S.surface_voxels_mm(m, (1, 1, 1))
    assert len(pts) == 26 and not (pts == 1).all(axis=1).any()


def test_shifted_cube_by_hand():
    # a 4^3 cube shifted by one voxel along axis 0 with spacing 2 mm there: every surface voxel of one
    # cube that is not on the other's surface is 2 mm (one voxel along axis 0) from it.
    a = np.zeros((10, 8, 8), bool)
    b = np.zeros_like(a)
    a[2:6, 2:6, 2:6] = True
    b[3:7, 2:6, 2:6] = True
    hd, nsd, _, _ = _brute(a, b, (2.0, 1.0, 1.0), 1.0)
    assert S.hd95(a, b, (2.0, 1.0, 1.0)) == pytest.approx(hd)
    assert S.hd95(a, b, (2.0, 1.0, 1.0)) == pytest.approx(2.0)  # > 5 % of the distances are 2 mm
    assert S.surface_dice(a, b, (2.0, 1.0, 1.0), 2.0) == 1.0
    assert S.surface_dice(a, b, (2.0, 1.0, 1.0), 1.0) == pytest.approx(nsd)


def test_empty_conventions():
    z = np.zeros((6, 6, 6), bool)
    one = z.copy()
    one[2, 2, 2] = True
    assert S.hd95(z, z, (1, 1, 1)) == 0.0
    assert S.surface_dice(z, z, (1, 1, 1), 1.0) == 1.0
    assert math.isinf(S.hd95(one, z, (1, 1, 1)))
    assert S.hd95(z, one, (1, 1, 1), empty_distance=S.BRATS_MAX_DISTANCE_MM) == 374.0
    assert S.surface_dice(one, z, (1, 1, 1), 5.0) == 0.0
    assert S.surface_metrics(one, one, (1, 1, 1), 0.0) == {"hd95": 0.0, "nsd": 1.0, "assd": 0.0}


def test_separate_lesions_each_boxed_still_see_each_other():
    # two lesions far apart, prediction only on the first: the second's distances cross boxes
    t = np.zeros((30, 8, 8), bool)
    t[2:4, 2:4, 2:4] = True
    t[20:22, 2:4, 2:4] = True
    p = np.zeros_like(t)
    p[2:4, 2:4, 2:4] = True
    hd, nsd, _, _ = _brute(p, t, (1, 1, 1), 1.0)
    assert S.hd95(p, t, (1, 1, 1)) == pytest.approx(hd)
    assert S.surface_dice(p, t, (1, 1, 1), 1.0) == pytest.approx(nsd)


def test_errors():
    a = np.zeros((4, 4, 4), bool)
    with pytest.raises(ValueError, match="shape"):
        S.hd95(a, np.zeros((4, 4, 5), bool), (1, 1, 1))
    with pytest.raises(ValueError, match="spacing"):
        S.hd95(a, a, (1, 0, 1))
    with pytest.raises(ValueError, match="connectivity"):
        S.hd95(a, a, (1, 1, 1), connectivity=8)
    with pytest.raises(ValueError):
        S.hd95(a.astype(int) + 2, a, (1, 1, 1))  # a label map, not 0/1
    with pytest.raises(ValueError, match="tolerance"):
        S.surface_dice(a, a, (1, 1, 1), -1.0)
