"""Resampling through SimpleITK equals scipy's grid-aligned zoom (issue 13: preprocessing at the peers' speed)."""
from __future__ import annotations

import numpy as np
import pytest
from scipy import ndimage

from bmstudy.preprocessing import resampling as rs


def _scipy_zoom(a: np.ndarray, shape: tuple[int, ...], order: int) -> np.ndarray:
    """The reference: what resample_to_shape computed before SimpleITK (scipy, grid-aligned)."""
    zoom = [n / o for n, o in zip(shape, a.shape)]
    return ndimage.zoom(a, zoom, order=order, mode="nearest", grid_mode=True, prefilter=order > 1)


def _max_ulps(a: np.ndarray, b: np.ndarray) -> int:
    assert a.dtype == b.dtype == np.float32
    return int(np.abs(a.view(np.int32).astype(np.int64) - b.view(np.int32)).max())


SHAPES = [((20, 17, 23), (24, 20, 28)), ((31, 29, 30), (12, 40, 30)), ((40, 40, 40), (20, 20, 20)),
          ((30, 30, 30), (60, 60, 60)), ((41, 33, 1), (20, 66, 1)), ((9, 7, 12), (26, 29, 25))]


@pytest.mark.parametrize("in_shape,out_shape", SHAPES)
def test_linear_float32_within_one_ulp_of_scipy(in_shape, out_shape):
    rng = np.random.default_rng(0)
    a = (rng.normal(size=in_shape) * 300 + 500).astype(np.float32)
    assert rs.use_sitk(a, 1)
    out = rs.resample_to_shape(a, out_shape, 1)
    ref = _scipy_zoom(a, out_shape, 1)
    assert out.shape == ref.shape == out_shape and out.dtype == np.float32
    assert _max_ulps(out, ref) <= 1  # same weights, rounded in another order: at most one float32 ulp
    assert np.mean(out != ref) < 0.01


def test_linear_float64_close_to_scipy():
    a = np.random.default_rng(1).normal(size=(15, 18, 11)) * 100
    out = rs.resample_to_shape(a, (19, 13, 22), 1)
    assert out.dtype == np.float64
    np.testing.assert_allclose(out, _scipy_zoom(a, (19, 13, 22), 1), rtol=0, atol=1e-9)


@pytest.mark.parametrize("order", [0, 3])
def test_nearest_and_bspline_stay_on_scipy(order):
    a = np.random.default_rng(2).normal(size=(16, 12, 14)).astype(np.float32)
    assert not rs.use_sitk(a, order)
    np.testing.assert_array_equal(rs.resample_to_shape(a, (21, 9, 30), order), _scipy_zoom(a, (21, 9, 30), order))


def test_integer_arrays_stay_on_scipy():
    m = (np.random.default_rng(3).random((12, 12, 12)) > 0.7).astype(np.uint8)
    assert not rs.use_sitk(m, 1)
    np.testing.assert_array_equal(rs.resample_to_shape(m, (17, 8, 15), 1), _scipy_zoom(m, (17, 8, 15), 1))


def test_env_forces_scipy(monkeypatch):
    a = np.random.default_rng(4).normal(size=(10, 11, 12)).astype(np.float32)
    monkeypatch.setenv("BMSTUDY_RESAMPLE", "scipy")
    assert not rs.use_sitk(a, 1)
    np.testing.assert_array_equal(rs.resample_to_shape(a, (13, 7, 19), 1), _scipy_zoom(a, (13, 7, 19), 1))


def test_threads_and_layout_do_not_change_the_result():
    a = np.random.default_rng(5).normal(size=(14, 19, 16)).astype(np.float32)
    ref = rs.resample_to_shape(a, (23, 11, 20), 1)
    np.testing.assert_array_equal(rs.resample_to_shape(a, (23, 11, 20), 1, threads=1), ref)
    np.testing.assert_array_equal(rs.resample_to_shape(np.asfortranarray(a), (23, 11, 20), 1), ref)
    np.testing.assert_array_equal(rs.resample_to_shape(a[:, ::-1][:, ::-1], (23, 11, 20), 1), ref)


def test_constant_and_edges_preserved():
    """Grid-aligned: a constant stays constant and the edge voxels are clamped (scipy's mode='nearest')."""
    a = np.full((8, 9, 10), 7.25, np.float32)
    np.testing.assert_array_equal(rs.resample_to_shape(a, (17, 5, 23), 1), 7.25)
    ramp = np.broadcast_to(np.arange(8, dtype=np.float32)[:, None, None], (8, 4, 4)).copy()
    out = rs.resample_to_shape(ramp, (16, 4, 4), 1)
    assert out[0, 0, 0] == 0.0 and out[-1, 0, 0] == 7.0  # the first/last half voxel clamps to the edge values
    np.testing.assert_allclose(out[1:-1, 0, 0], (np.arange(1, 15) + 0.5) / 2 - 0.5, atol=1e-6)
