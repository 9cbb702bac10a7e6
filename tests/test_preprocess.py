"""bmstudy.preprocessing.cohort: alignment checks, resampling round trips, Z-score, cohort report, caching, QC, CLI."""
from __future__ import annotations

import json
from pathlib import Path

import nibabel as nib
import numpy as np
import pandas as pd
import pytest
from nibabel.processing import resample_from_to
from scipy import ndimage

from bmstudy import preprocessing as pp
from bmstudy.io.volumes import VolumeError
from bmstudy.preprocessing import (AlignmentError, MaskValueError, PreprocessParams, load_case, preprocess_cohort,
                                preprocess_image, restore_to_input, save_like_input)

SHAPE = (40, 44, 24)


def lps_affine(spacing=(0.9, 0.9, 1.5), origin=(18.0, 20.0, -18.0)) -> np.ndarray:
    a = np.diag([-spacing[0], -spacing[1], spacing[2], 1.0])
    a[:3, 3] = origin
    return a


def make_arrays(shape=SHAPE, seed=0, lesion_radius_vox=5.0):
    """Smooth head-like image, ellipsoid brain, two spherical lesions (all in the file's voxel order)."""
    rng = np.random.default_rng(seed)
    g = np.meshgrid(*[np.linspace(-1, 1, n) for n in shape], indexing="ij")
    r2 = sum(x ** 2 for x in g)
    brain = (r2 < 0.6).astype(np.uint8)
    image = 200 + 300 * np.exp(-r2 * 1.5) + 40 * g[0] + 20 * g[2] + rng.normal(0, 2, shape)
    image = np.where(r2 < 0.85, image, 20.0).astype(np.float32)
    idx = np.indices(shape)
    mask = np.zeros(shape, np.uint8)
    for c in ((shape[0] * 0.35, shape[1] * 0.5, shape[2] * 0.5), (shape[0] * 0.65, shape[1] * 0.45, shape[2] * 0.55)):
        mask |= (sum((i - ci) ** 2 for i, ci in zip(idx, c)) <= lesion_radius_vox ** 2).astype(np.uint8)
    mask &= brain
    image = image + 150 * mask
    return image.astype(np.float32), mask, brain


def write_case(folder: Path, pid: str, affine=None, seed=0, mask_affine=None, mask=None, shape=SHAPE, radius=5.0):
    folder.mkdir(parents=True, exist_ok=True)
    affine = lps_affine() if affine is None else affine
    image, m, brain = make_arrays(shape, seed, radius)
    m = m if mask is None else mask
    paths = {k: folder / f"{pid}_{k}.nii.gz" for k in ("image", "mask", "brain_mask")}
    nib.save(nib.Nifti1Image(image, affine), paths["image"])
    nib.save(nib.Nifti1Image(m, affine if mask_affine is None else mask_affine), paths["mask"])
    nib.save(nib.Nifti1Image(brain, affine), paths["brain_mask"])
    return {"patient_id": pid, "site": "internal" if seed % 2 == 0 else "external", "split": "train",
            **{k: str(v) for k, v in paths.items()}}


PARAMS = PreprocessParams(target_spacing=(1.2, 1.2, 1.2), skull_strip="mask")


def test_params_validation_and_hash():
    p = PreprocessParams()
    assert p.target_spacing == (0.833, 0.833, 0.833)
    assert PreprocessParams.from_dict(p.to_dict()) == p
    assert p.hash() == PreprocessParams().hash()
    assert p.hash() != PreprocessParams(interpolation="bspline").hash()
    assert p.hash() == PreprocessParams(synthstrip_model="/x/synthstrip.1.pt").hash()  # location only
    for bad in ({"interpolation": "cubic"}, {"skull_strip": "bet"}, {"normalisation": "minmax"},
                {"target_spacing": (1, 0, 1)}, {"mask_labels": ()}):
        with pytest.raises(ValueError):
            PreprocessParams(**bad)


def test_orientation_matches_nibabel_canonical(tmp_path):
    """No resampling / stripping / normalisation: output == nibabel's as_closest_canonical, axis 0 = L->R."""
    row = write_case(tmp_path, "p0")
    params = PreprocessParams(target_spacing=None, skull_strip="none", normalisation="none")
    arr, rec = preprocess_image(row["image"], params)
    ref = nib.as_closest_canonical(nib.load(row["image"]))
    np.testing.assert_array_equal(arr, ref.get_fdata(dtype=np.float32))
    np.testing.assert_allclose(rec["output"]["affine"], ref.affine, atol=1e-6)
    assert nib.aff2axcodes(np.array(rec["output"]["affine"])) == ("R", "A", "S")
    assert rec["source"]["axcodes"] == "LPS"


def test_resampled_grid_matches_independent_resampler(tmp_path):
    """The recorded output affine is right: nibabel's resample_from_to onto it gives the same values."""
    row = write_case(tmp_path, "p0")
    params = PreprocessParams(target_spacing=(1.2, 1.2, 1.2), skull_strip="none", normalisation="none")
    arr, rec = preprocess_image(row["image"], params)
    exp_shape = tuple(int(round(n * s / 1.2)) for n, s in zip((40, 44, 24), (0.9, 0.9, 1.5)))
    assert arr.shape == exp_shape
    ref = resample_from_to(nib.load(row["image"]), (arr.shape, np.array(rec["output"]["affine"])), order=1)
    ref = ref.get_fdata(dtype=np.float32)
    inner = tuple(slice(2, n - 2) for n in arr.shape)  # borders differ only by the out-of-grid mode
    np.testing.assert_allclose(arr[inner], ref[inner], rtol=1e-4, atol=1e-2)
    np.testing.assert_allclose(rec["output"]["spacing"], [0.9 * 40 / exp_shape[0], 0.9 * 44 / exp_shape[1], 1.5 * 24 / exp_shape[2]])


@pytest.mark.parametrize("crop", [False, True])
@pytest.mark.parametrize("interpolation", ["linear", "bspline"])
def test_round_trip_anisotropic_lps(tmp_path, crop, interpolation):
    """LPS 0.9x0.9x1.5 input -> 0.833 iso RAS -> back: exact shape + affine, values close."""
    row = write_case(tmp_path, "p1", affine=lps_affine())
    params = PreprocessParams(skull_strip="mask", crop_to_brain=crop, crop_margin_mm=3.0, interpolation=interpolation)
    arr, rec = preprocess_image(row["image"], params, brain_mask_path=row["brain_mask"])
    assert arr.dtype == np.float32
    back = restore_to_input(arr, rec, order=1)
    src = nib.load(row["image"])
    assert back.shape == src.shape
    out = save_like_input(back, rec, tmp_path / "restored.nii.gz", dtype=np.float32)
    saved = nib.load(out)
    assert saved.shape == src.shape
    np.testing.assert_array_equal(saved.affine, src.affine)
    data = src.get_fdata()
    brain = np.asarray(nib.load(row["brain_mask"]).dataobj) > 0
    lesion = np.asarray(nib.load(row["mask"]).dataobj).astype(float)
    edges = sum(np.abs(g) for g in np.gradient(brain.astype(float))) + sum(np.abs(g) for g in np.gradient(lesion))
    inner = brain & (ndimage.maximum_filter(edges, 3) == 0)  # away from brain and lesion edges (steps)
    mean, std = rec["normalisation"]["mean"], rec["normalisation"]["std"]
    err = np.abs(back * std + mean - data)[inner]
    assert np.median(err) < 0.03 * std and np.percentile(err, 99) < 0.1 * std, (np.median(err), np.percentile(err, 99), std)
    row_mask = np.asarray(nib.load(row["mask"]).dataobj)
    can_mask = nib.as_closest_canonical(nib.load(row["mask"])).get_fdata().astype(np.uint8)
    if crop:
        assert rec["crop"] is not None and tuple(rec["cropped_shape"]) != tuple(rec["canonical"]["shape"])
        filled = restore_to_input(arr, rec, order=1, fill=-7.0)  # outside the crop box -> fill value
        assert (filled == -7.0).any() and not (filled[brain] == -7.0).any()
        can_mask = can_mask[tuple(slice(a, b) for a, b in rec["crop"])]
    can_mask = pp.resample_to_shape(can_mask, rec["output"]["shape"], 0)
    back_mask = restore_to_input(can_mask, rec, order=0)
    assert back_mask.dtype == np.uint8
    dice = 2 * (back_mask & row_mask).sum() / (back_mask.sum() + row_mask.sum())
    assert dice > 0.95


def test_sparse_mask_resampling_equals_full():
    rng = np.random.default_rng(5)
    for shape, new in (((30, 33, 20), (36, 40, 36)), ((50, 40, 30), (21, 17, 13))):
        m = np.zeros(shape, np.float32)
        m[tuple(slice(int(c), int(c) + 4) for c in rng.integers(0, 20, 3))] = 1
        m[0, 5, 0] = 1  # touches the volume border
        for order in (0, 1):
            np.testing.assert_allclose(pp.resample_sparse(m, new, order), pp.resample_to_shape(m, new, order), atol=1e-6)
    assert not pp.resample_sparse(np.zeros((4, 4, 4)), (8, 8, 8)).any()


def test_restore_rejects_wrong_shapes(tmp_path):
    row = write_case(tmp_path, "p1")
    arr, rec = preprocess_image(row["image"], PARAMS, brain_mask_path=row["brain_mask"])
    with pytest.raises(ValueError, match="preprocessed shape"):
        restore_to_input(arr[:-1], rec)
    with pytest.raises(ValueError, match="restore_to_input first"):
        save_like_input(arr, rec, tmp_path / "x.nii.gz")
    json.dumps(rec)  # the record is JSON-able


def test_zscore_inside_brain(tmp_path):
    row = write_case(tmp_path, "p2")
    arr, rec = preprocess_image(row["image"], PreprocessParams(skull_strip="mask"), brain_mask_path=row["brain_mask"])
    brain = arr != 0
    assert abs(arr[brain].mean()) < 1e-3 and abs(arr[brain].std() - 1) < 1e-3
    # independent reference: stats of the raw input inside the (unresampled) brain mask are close
    raw = nib.load(row["image"]).get_fdata()
    bm = np.asarray(nib.load(row["brain_mask"]).dataobj) > 0
    assert rec["normalisation"]["mean"] == pytest.approx(raw[bm].mean(), rel=0.02)
    assert rec["normalisation"]["std"] == pytest.approx(raw[bm].std(), rel=0.05)
    vol, _, _ = pp.zscore(np.arange(8.0).reshape(2, 2, 2), np.ones((2, 2, 2)), "zscore_volume")
    np.testing.assert_allclose(vol.ravel(), (np.arange(8) - 3.5) / np.arange(8).std(), rtol=1e-6)
    with pytest.raises(ValueError, match="constant"):
        pp.zscore(np.ones((2, 2, 2)), np.ones((2, 2, 2)))


@pytest.mark.parametrize("method, tol", [("linear", 0.05), ("nearest", 0.10)])
def test_mask_volume_preserved(tmp_path, method, tol):
    """0.9x0.9x1.5 -> 0.833 mm, two lesions of radius 7 voxels (3.4 mL in all): linear+0.5 within 5 %
    (measured -1.8 %), nearest within 10 % (measured -6.8 %). Smaller lesions lose more (radius 5: -7.6 / -11.9 %)."""
    row = write_case(tmp_path / "in", "p3", radius=7.0)
    rep = preprocess_cohort(pd.DataFrame([row]), tmp_path / "out", PreprocessParams(skull_strip="mask", mask_interpolation=method),
                            qc=False, progress=False)
    r = rep.iloc[0]
    assert r.status == "ok", r.reason
    m = np.asarray(nib.load(row["mask"]).dataobj)
    assert r.mask_volume_ml_input == pytest.approx(m.sum() * 0.9 * 0.9 * 1.5 / 1000, rel=1e-3)
    assert abs(r.mask_volume_rel_change) < tol
    m_out = np.load(tmp_path / "out" / "p3" / "mask.npy")
    assert r.mask_volume_ml_output == pytest.approx(m_out.sum() * np.prod([0.9 * 40 / 43, 0.9 * 44 / 48, 1.5 * 24 / 43]) / 1000, rel=1e-3)
    case = load_case(tmp_path / "out", "p3")
    assert case["image"].dtype == np.float32 and case["mask"].dtype == np.uint8 and case["brain"].dtype == np.uint8
    assert set(np.unique(case["mask"])) == {0, 1} and set(np.unique(case["brain"])) == {0, 1}
    assert (case["image"][case["brain"] == 0] == 0).all()
    assert case["meta"]["input_files"]["image"]["sha256"]
    assert case["meta"]["params"]["skull_strip"] == "mask"


def test_binarize_mask_options():
    labels = np.array([0, 1, 2, 4, 4, 0], dtype=float).reshape(1, 2, 3)
    with pytest.raises(MaskValueError, match="not binary"):
        pp.binarize_mask(labels, PreprocessParams(), case="c", path="m.nii.gz")
    np.testing.assert_array_equal(pp.binarize_mask(labels, PreprocessParams(mask_labels=(4,))).ravel(), [0, 0, 0, 1, 1, 0])
    np.testing.assert_array_equal(pp.binarize_mask(labels, PreprocessParams(label_threshold=1.5)).ravel(), [0, 0, 1, 1, 1, 0])



def test_binarize_mask_builds_on_as_binary():
    """Float label maps are rounded before label selection; out-of-range labels select nothing; the
    non-binary error is a MaskValueError (a VolumeError) naming case and file; bool masks pass."""
    from bmstudy.io import as_binary

    assert issubclass(MaskValueError, VolumeError) and issubclass(AlignmentError, VolumeError)
    near4 = np.array([0.0, 3.9, 4.2, 1.0]).reshape(1, 1, 4)
    np.testing.assert_array_equal(pp.binarize_mask(near4, PreprocessParams(mask_labels=(4,))).ravel(), [0, 1, 1, 0])
    u8 = np.array([0, 1, 4, 255], np.uint8).reshape(1, 1, 4)
    np.testing.assert_array_equal(pp.binarize_mask(u8, PreprocessParams(mask_labels=(4, 300))).ravel(), [0, 0, 1, 0])
    out = pp.binarize_mask(np.array([[[True, False]]]), PreprocessParams())
    assert out.dtype == np.uint8 and out.ravel().tolist() == [1, 0]
    with pytest.raises(MaskValueError) as info:
        pp.binarize_mask(u8, PreprocessParams(), case="c7", path="c7_mask.nrrd")
    msg = str(info.value)
    assert "not binary (values 0, 1, 4, 255)" in msg and "case 'c7'" in msg and "c7_mask.nrrd" in msg
    # the same 0/1 rule as bmstudy.io.as_binary (which raises the plain VolumeError)
    with pytest.raises(VolumeError, match="only 0/1"):
        as_binary(u8, "mask")
    ok = np.array([0, 1, 1, 0], np.int16).reshape(2, 2, 1)
    np.testing.assert_array_equal(pp.binarize_mask(ok, PreprocessParams()), as_binary(ok).astype(np.uint8))


def test_cohort_failed_and_excluded_rows(tmp_path):
    """Through bmstudy.cases.run_cases: an input problem is 'excluded', any other error 'failed' (reason names
    the case and the error type); every row keeps site/split/params_hash; serial and parallel agree."""
    src = tmp_path / "in"
    rows = [write_case(src, "good", seed=0),
            {**write_case(src, "nobrain", seed=1), "brain_mask": None},  # skull_strip='mask' without a mask
            write_case(src, "shifted", mask_affine=lps_affine(origin=(0.0, 0.0, 0.0)))]
    reports = [preprocess_cohort(pd.DataFrame(rows), tmp_path / f"out{n}", PARAMS, n_jobs=n, qc=False, progress=False)
               for n in (1, 2)]
    for rep in reports:
        assert list(rep.columns) == list(pp.REPORT_COLUMNS)
        assert list(rep.status) == ["ok", "failed", "excluded"]
        failed, excluded = rep.reason.iloc[1], rep.reason.iloc[2]
        assert "nobrain" in failed and "brain mask" in failed and failed.startswith(("SkullStripError", "RuntimeError"))
        assert "case 'shifted'" in excluded and "shifted_mask.nii.gz" in excluded and "origin" in excluded
        assert list(rep.site) == ["internal", "external", "internal"] and (rep.split == "train").all()
        assert (rep.params_hash == PARAMS.hash()).all() and not rep.cached.any()
    assert reports[0].drop(columns="seconds").equals(reports[1].drop(columns="seconds"))
    on_disk = pp.load_report(tmp_path / "out1")
    assert list(on_disk.status) == ["ok", "failed", "excluded"] and on_disk.reason.iloc[1] == reports[0].reason.iloc[1]
    # one case at a time: the same rows, and a cached case comes back from its meta.json
    single = [pp.preprocess_case(r, tmp_path / "out1", PARAMS) for r in rows]
    assert [r["status"] for r in single] == ["ok", "failed", "excluded"] and [r["cached"] for r in single] == [True, False, False]
    assert single[1]["reason"] == failed and single[2]["site"] == "internal"
    assert pp.preprocess_case(rows[0], tmp_path / "out1", PARAMS, force=True)["cached"] is False

def test_cohort_excludes_bad_cases_and_continues(tmp_path):
    src = tmp_path / "in"
    rows = [write_case(src, "ok1", seed=0), write_case(src, "ok2", seed=1)]
    shifted = lps_affine(origin=(18.0, 20.0, -14.0))
    rows.append(write_case(src, "origin", mask_affine=shifted))
    rows.append(write_case(src, "spacing", mask_affine=lps_affine(spacing=(0.9, 0.9, 1.6))))
    rot = lps_affine()
    rot[:3, :3] = rot[:3, :3] @ np.array([[1, 0, 0], [0, np.cos(0.1), -np.sin(0.1)], [0, np.sin(0.1), np.cos(0.1)]])
    rows.append(write_case(src, "direction", mask_affine=rot))
    r = write_case(src, "shape")
    nib.save(nib.Nifti1Image(np.zeros((40, 44, 23), np.uint8), lps_affine()), r["mask"])
    rows.append(r)
    r = write_case(src, "labels")
    _, m, _ = make_arrays()
    nib.save(nib.Nifti1Image((m * 4).astype(np.uint8), lps_affine()), r["mask"])
    rows.append(r)
    r = write_case(src, "nan")
    img = nib.load(r["image"]).get_fdata(dtype=np.float32)
    img[3, 3, 3] = np.nan
    nib.save(nib.Nifti1Image(img, lps_affine()), r["image"])
    rows.append(r)
    rows.append({**write_case(src, "missing"), "image": str(src / "missing_nowhere.nii.gz")})
    r = write_case(src, "flat")
    flat = np.full(SHAPE, 100.0, np.float32)
    flat[0, 0, 0] = 20.0  # not a constant image, but constant inside the brain
    nib.save(nib.Nifti1Image(flat, lps_affine()), r["image"])
    rows.append(r)
    rep = preprocess_cohort(pd.DataFrame(rows), tmp_path / "out", PARAMS, qc=False, progress=False)
    st = dict(zip(rep.patient_id, rep.status))
    reason = dict(zip(rep.patient_id, rep.reason))
    assert st["ok1"] == st["ok2"] == "ok"
    for pid, word in (("origin", "origin"), ("spacing", "spacing"), ("direction", "direction"), ("shape", "shape"),
                      ("labels", "not binary"), ("nan", "NaN"), ("missing", "not found"),
                      ("flat", "constant intensities inside the brain")):
        assert st[pid] == "excluded", (pid, reason[pid])
        assert word in reason[pid] and f"case '{pid}'" in reason[pid], reason[pid]
        assert not (tmp_path / "out" / pid / "image.npy").exists()
    assert "_mask.nii.gz" in reason["origin"]  # names the offending file
    on_disk = pd.read_csv(tmp_path / "out" / "preprocess_report.csv", keep_default_na=False)
    assert list(on_disk.patient_id) == [r["patient_id"] for r in rows]
    assert set(on_disk.columns) >= {"patient_id", "status", "reason", "input_shape", "output_spacing"}
    # the labelled mask is usable when a label is selected
    rep2 = preprocess_cohort(pd.DataFrame([rows[6]]), tmp_path / "out", PreprocessParams(
        target_spacing=(1.2,) * 3, skull_strip="mask", mask_labels=(4,)), qc=False, progress=False)
    assert rep2.status.iloc[0] == "ok"


def test_alignment_tolerance():
    from bmstudy.io.volumes import Volume

    def vol(aff):
        return Volume(np.zeros((2, 2, 2)), aff, aff, (2, 2, 2), Path("x.nii"), "nifti")

    a = lps_affine()
    b = a.copy()
    b[0, 3] += 0.005  # within 0.01 mm
    pp.check_alignment(vol(a), vol(b), PreprocessParams(), case="c")
    b[0, 3] += 0.05
    with pytest.raises(AlignmentError, match="origin"):
        pp.check_alignment(vol(a), vol(b), PreprocessParams(), case="c")
    pp.check_alignment(vol(a), vol(b), PreprocessParams(origin_tol_mm=0.1), case="c")


def test_rerun_does_no_work(tmp_path, monkeypatch):
    rows = [write_case(tmp_path / "in", f"r{i}", seed=i) for i in range(2)]
    out = tmp_path / "out"
    rep1 = preprocess_cohort(pd.DataFrame(rows), out, PARAMS, qc=False, progress=False)
    assert (rep1.status == "ok").all() and not rep1.cached.any()
    mtimes = {p: p.stat().st_mtime_ns for p in out.rglob("*.npy")}

    def boom(*a, **k):
        raise AssertionError("read_volume called on a cached case")

    with monkeypatch.context() as m:
        m.setattr(pp.cohort, "read_volume", boom)
        rep2 = preprocess_cohort(pd.DataFrame(rows), out, PARAMS, qc=False, progress=False)
    assert (rep2.status == "ok").all() and rep2.cached.all()
    assert {p: p.stat().st_mtime_ns for p in out.rglob("*.npy")} == mtimes
    pd.testing.assert_series_equal(rep1.mask_volume_ml_output, rep2.mask_volume_ml_output)
    # changed params -> recomputed; changed input content -> only that case recomputed
    rep3 = preprocess_cohort(pd.DataFrame(rows), out, PreprocessParams(target_spacing=(1.5,) * 3, skull_strip="mask"),
                             qc=False, progress=False)
    assert not rep3.cached.any()
    img = nib.load(rows[0]["image"])
    nib.save(nib.Nifti1Image(img.get_fdata(dtype=np.float32) * 2, img.affine), rows[0]["image"])
    rep4 = preprocess_cohort(pd.DataFrame(rows), out, PreprocessParams(target_spacing=(1.5,) * 3, skull_strip="mask"),
                             qc=False, progress=False)
    assert list(rep4.cached) == [False, True]
    # a case that turns bad loses its old outputs (never a stale 'ok' case on disk)
    nib.save(nib.Nifti1Image(np.zeros((3, 3, 3), np.uint8), lps_affine()), rows[1]["mask"])
    rep5 = preprocess_cohort(pd.DataFrame(rows), out, PreprocessParams(target_spacing=(1.5,) * 3, skull_strip="mask"),
                             qc=False, progress=False)
    assert list(rep5.status) == ["ok", "excluded"]
    assert not (out / "r1" / "meta.json").exists() and not (out / "r1" / "image.npy").exists()
    with pytest.raises(FileNotFoundError, match="r1"):
        load_case(out, "r1")


def test_parallel_matches_serial(tmp_path):
    rows = [write_case(tmp_path / "in", f"q{i}", seed=i) for i in range(2)]
    preprocess_cohort(pd.DataFrame(rows), tmp_path / "a", PARAMS, n_jobs=1, qc=False, progress=False)
    rep = preprocess_cohort(pd.DataFrame(rows), tmp_path / "b", PARAMS, n_jobs=2, qc=False, progress=False)
    assert (rep.status == "ok").all()
    for r in rows:
        a, b = load_case(tmp_path / "a", r["patient_id"]), load_case(tmp_path / "b", r["patient_id"])
        np.testing.assert_array_equal(a["image"], b["image"])
        np.testing.assert_array_equal(a["mask"], b["mask"])


def test_qc_outputs(tmp_path):
    import matplotlib.figure

    rows = [write_case(tmp_path / "in", f"s{i}", seed=i) for i in range(3)]
    out = tmp_path / "out"
    preprocess_cohort(pd.DataFrame(rows), out, PARAMS, qc=True, progress=False)
    for name in ("qc_hist_cases.png", "qc_hist_cases_z.png", "qc_hist_sites.png", "qc_stats.csv"):
        assert (out / name).stat().st_size > 0
    assert (out / "qc_hist_sites.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    fig = pp.plot_site_histograms(out)
    assert isinstance(fig, matplotlib.figure.Figure) and len(fig.axes) == 2  # internal + external
    assert isinstance(pp.plot_case_histograms(out, space="z"), matplotlib.figure.Figure)
    stats = pp.qc_table(out)
    assert len(stats) == 3 and {"brain_mean", "brain_std", "output_shape"} <= set(stats.columns)
    meta = load_case(out, "s0")["meta"]
    assert sum(meta["qc"]["hist_z"]) > 0.99 * np.load(out / "s0" / "brain.npy").sum()


def test_cli(tmp_path):
    from bmstudy.cli import main

    rows = [write_case(tmp_path / "in", f"c{i}", seed=i) for i in range(2)]
    df = pd.DataFrame(rows)
    df["age"], df["sex"], df["cancer_type"], df["manual_seconds"] = 60, "F", "lung", 100.0
    df.to_csv(tmp_path / "manifest.csv", index=False)
    rc = main(["preprocess", "--manifest", str(tmp_path / "manifest.csv"), "--out", str(tmp_path / "out"),
               "--spacing", "1.5", "--skull-strip", "mask", "--no-qc"])
    assert rc == 0
    rep = pp.load_report(tmp_path / "out")
    assert list(rep.status) == ["ok", "ok"]
    assert load_case(tmp_path / "out", "c0")["meta"]["params"]["target_spacing"] == [1.5, 1.5, 1.5]


def test_preprocess_image_errors(tmp_path):
    row = write_case(tmp_path, "e1")
    with pytest.raises(RuntimeError, match="brain mask"):
        preprocess_image(row["image"], PreprocessParams(skull_strip="mask"))
    other = write_case(tmp_path / "o", "e2", affine=lps_affine(origin=(0.0, 0.0, 0.0)))
    with pytest.raises(AlignmentError, match="brain mask"):
        preprocess_image(row["image"], PreprocessParams(skull_strip="mask"), brain_mask_path=other["brain_mask"])
    with pytest.raises(VolumeError, match="e9"):
        preprocess_image(tmp_path / "nope.nii.gz", PARAMS, case="e9")


# ----------------------------------------------------------------------------- real scans (developer data)


def test_real_round_trip_and_label4_volume(real_cases, tmp_path):
    """Real BraTS CE-T1 (LPS, 1 mm, 240x240x155): exact grid round trip; label-4 volume within 5 %."""
    expected_ml = {"pat0001": 31.5, "pat0002": 8.2}
    rows = []
    for case in real_cases[:2]:
        pid = case.name.split("_")[2]
        rows.append({"patient_id": pid, "site": "brats", "split": "test",
                     "image": str(case / "T1c_subtrMeanDivStd.nii.gz"), "mask": str(case / "OTMultiClass.nii.gz"),
                     "brain_mask": str(case / "brainmask.nii.gz")})
    params = PreprocessParams(skull_strip="mask", mask_labels=(4,), crop_to_brain=True)
    rep = preprocess_cohort(pd.DataFrame(rows), tmp_path / "out", params, qc=False, progress=False)
    for r in rep.itertuples():
        assert r.status == "ok", r.reason
        assert r.mask_volume_ml_input == pytest.approx(expected_ml[r.patient_id], abs=0.06)  # README figures
        assert abs(r.mask_volume_rel_change) < 0.05
        case = load_case(tmp_path / "out", r.patient_id)
        img, brain = case["image"], case["brain"] > 0
        assert abs(img[brain].mean()) < 1e-3 and abs(img[brain].std() - 1) < 1e-3 and (img[~brain] == 0).all()
        src = nib.load(rows[0 if r.patient_id == "pat0001" else 1]["mask"])
        back = restore_to_input(case["mask"], case["meta"], order=0)
        save_like_input(back, case["meta"], tmp_path / f"{r.patient_id}.nii.gz", dtype=np.uint8)
        saved = nib.load(tmp_path / f"{r.patient_id}.nii.gz")
        assert saved.shape == src.shape
        np.testing.assert_array_equal(saved.affine, src.affine)
        truth = np.asarray(src.dataobj) == 4
        dice = 2 * (back.astype(bool) & truth).sum() / (back.sum() + truth.sum())
        assert dice > 0.97, dice


def test_synthetic_tiny_cohort(tiny_cohort, tmp_path):
    """The synthetic cohort (brain_mask column -> 'auto' uses it) preprocesses cleanly with defaults."""
    from bmstudy.io.manifest import load_manifest

    df = load_manifest(tiny_cohort)
    rep = preprocess_cohort(df, tmp_path / "out", PreprocessParams(), n_jobs=2, progress=False)
    assert (rep.status == "ok").all(), rep.loc[rep.status != "ok", ["patient_id", "reason"]].to_string()
    assert (rep.skull_strip == "mask").all()
    assert np.allclose([float(v) for s in rep.output_spacing for v in s.split("x")], 0.833, atol=0.02)
    case = load_case(tmp_path / "out", str(df.patient_id.iloc[0]))
    brain = case["brain"] > 0
    assert abs(case["image"][brain].mean()) < 1e-3 and abs(case["image"][brain].std() - 1) < 1e-3
    assert (tmp_path / "out" / "qc_hist_sites.png").is_file()
    again = preprocess_cohort(df, tmp_path / "out", PreprocessParams(), n_jobs=2, progress=False, qc=False)
    assert again.cached.all()


def test_oblique_and_nrrd_inputs_round_trip(tmp_path):
    """An oblique RAS-rotated grid and the same data as NRRD give identical outputs and exact restores."""
    from bmstudy.io.volumes import write_volume

    th = np.deg2rad(10.0)
    aff = lps_affine()
    aff[:3, :3] = np.array([[1, 0, 0], [0, np.cos(th), -np.sin(th)], [0, np.sin(th), np.cos(th)]]) @ aff[:3, :3]
    row = write_case(tmp_path, "ob", affine=aff)
    img = nib.load(row["image"])
    nrrd = write_volume(img.get_fdata(dtype=np.float32), img.affine, tmp_path / "ob.nrrd")
    brain_nrrd = write_volume(np.asarray(nib.load(row["brain_mask"]).dataobj), img.affine, tmp_path / "ob_brain.nrrd")
    params = PreprocessParams(skull_strip="mask", crop_to_brain=True)
    a, rec_a = preprocess_image(row["image"], params, brain_mask_path=row["brain_mask"])
    b, rec_b = preprocess_image(nrrd, params, brain_mask_path=brain_nrrd)
    np.testing.assert_allclose(a, b, atol=1e-5)
    np.testing.assert_allclose(rec_a["output"]["affine"], rec_b["output"]["affine"], atol=1e-4)
    for arr, rec, name in ((a, rec_a, "a.nii.gz"), (b, rec_b, "b.nrrd")):
        back = restore_to_input(arr, rec, order=3)
        out = save_like_input(back, rec, tmp_path / name, np.float32)
        from bmstudy.io.volumes import read_volume

        vol = read_volume(out)
        assert vol.source_shape == img.shape
        np.testing.assert_allclose(vol.source_affine, img.affine, atol=1e-4)
