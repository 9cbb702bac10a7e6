"""evaluate_cohort on tiny NIfTI volumes written to tmp_path; metrics checked against scikit-learn."""
from __future__ import annotations

import json
import os

import nibabel as nib
import numpy as np
import pandas as pd
import pytest
from sklearn.metrics import f1_score, roc_auc_score

from bmstudy import evaluation as E
from bmstudy.io.manifest import validate_manifest, write_manifest

SHAPE = (16, 16, 12)
AFFINE = np.diag([1.0, 1.0, 2.0, 1.0])  # anisotropic spacing: 1 x 1 x 2 mm


def _nii(path, arr, affine=AFFINE):
    nib.save(nib.Nifti1Image(np.asarray(arr), affine), str(path))
    return path


def _truth() -> np.ndarray:
    t = np.zeros(SHAPE, np.uint8)
    t[2:6, 2:6, 2:5] = 1        # lesion 1: 48 voxels
    t[9:13, 9:14, 6:9] = 1      # lesion 2: 60 voxels
    return t


@pytest.fixture()
def study(tmp_path):
    """Manifest with 4 cases: perfect, noisy, shape mismatch (p3), missing prediction (p4)."""
    rng = np.random.default_rng(0)
    (tmp_path / "data").mkdir()
    preds = tmp_path / "preds"
    preds.mkdir()
    rows = []
    truths = {}
    for i, (pid, age, split) in enumerate([("p1", 45.0, "test"), ("p2", 60.0, "test"),
                                           ("p3", 71.0, "external"), ("p4", 52.0, "external")]):
        truth = np.roll(_truth(), i, axis=0)
        truths[pid] = truth
        _nii(tmp_path / "data" / f"{pid}_img.nii.gz", rng.normal(size=SHAPE).astype(np.float32))
        _nii(tmp_path / "data" / f"{pid}_mask.nii.gz", truth)
        _nii(tmp_path / "data" / f"{pid}_brain.nii.gz", np.pad(np.ones((12, 12, 10), np.uint8), ((2, 2), (2, 2), (1, 1))))
        rows.append({"patient_id": pid, "site": "internal" if split == "test" else "external", "split": split,
                     "age": age, "sex": "MF"[i % 2], "cancer_type": ("lung", "other")[i % 2],
                     "image": f"data/{pid}_img.nii.gz", "mask": f"data/{pid}_mask.nii.gz",
                     "manual_seconds": 100.0 + i, "brain_mask": f"data/{pid}_brain.nii.gz"})
    # p1: perfect probabilities
    _nii(preds / "p1_prob.nii.gz", np.where(truths["p1"] > 0, 0.9, 0.05).astype(np.float32))
    # p2: noisy probabilities (misses part of lesion 1, some false positives)
    prob2 = np.clip(truths["p2"] * 0.7 + rng.uniform(0, 0.45, SHAPE), 0, 1).astype(np.float32)
    prob2[3:5, 3:6, 2:5] = 0.1
    _nii(preds / "p2_prob.nii.gz", prob2)
    _nii(preds / "p2.nii.gz", (prob2 >= 0.5).astype(np.uint8))
    # p3: wrong grid
    _nii(preds / "p3_prob.nii.gz", np.zeros((16, 16, 11), np.float32))
    # p4: nothing written
    pd.DataFrame({"patient_id": ["p1", "p2", "p3"], "total_s": [61.5, 62.5, 63.5]}).to_csv(preds / "timings.csv", index=False)
    manifest = validate_manifest(pd.DataFrame(rows), tmp_path)
    write_manifest(manifest, tmp_path / "data_manifest.csv")
    return {"manifest": manifest, "preds": preds, "truths": truths, "prob2": prob2, "root": tmp_path}


def test_age_group():
    assert E.age_group(59.9) == "<60" and E.age_group(60) == ">=60"
    out = E.age_group([18, 60.0, np.nan, 75])
    assert list(out[:2]) == ["<60", ">=60"] and pd.isna(out[2]) and out[3] == ">=60"


def test_evaluate_cohort_round_trip(study, tmp_path):
    out = tmp_path / "eval"
    df = E.evaluate_cohort(study["manifest"], study["preds"], out, progress=False)
    assert list(df["patient_id"]) == ["p1", "p2", "p3", "p4"]
    assert list(df["status"]) == ["ok", "ok", "failed", "failed"]
    assert list(df["age_group"]) == ["<60", ">=60", ">=60", "<60"]
    assert set(E.METRICS) <= set(df.columns)

    p1 = df.set_index("patient_id").loc["p1"]
    for m in E.METRICS:  # a perfect prediction scores 1 on every metric
        assert p1[m] == pytest.approx(1.0), m
    assert p1["n_true"] == 2 and p1["n_detected"] == 2 and p1["n_fp"] == 0
    assert p1["truth_volume_ml"] == pytest.approx(108 * 2 / 1000)

    # the noisy case equals scikit-learn on the flattened volumes
    p2 = df.set_index("patient_id").loc["p2"]
    t, prob = study["truths"]["p2"].ravel(), study["prob2"].ravel()
    assert p2["dice"] == pytest.approx(f1_score(t, prob >= 0.5), abs=1e-9)
    assert p2["auc"] == pytest.approx(roc_auc_score(t, prob), abs=1e-4)  # histogram-free AUC, float32 input
    assert 0 < p2["dice"] < 1

    # failures are reported with the case and the file, others complete
    err3 = df.set_index("patient_id").loc["p3", "error"]
    assert "p3" in err3 and "p3_prob.nii.gz" in err3 and "shape" in err3
    err4 = df.set_index("patient_id").loc["p4", "error"]
    assert "p4" in err4 and "no prediction" in err4
    assert df.set_index("patient_id").loc["p3", list(E.METRICS)].isna().all()

    # timings merged; demographics carried
    assert list(df["model_seconds"].iloc[:3]) == [61.5, 62.5, 63.5] and np.isnan(df["model_seconds"].iloc[3])
    assert list(df["manual_seconds"]) == [100.0, 101.0, 102.0, 103.0]

    # files on disk
    for name in ("metrics.csv", "lesions.csv", "score_hists.npz"):
        assert (out / name).is_file()
    metrics, lesions = E.load_results(out)
    pd.testing.assert_frame_equal(metrics[list(E.METRICS)], df[list(E.METRICS)], check_dtype=False)
    assert set(lesions["patient_id"]) == {"p1", "p2"} and {"split", "origin", "size_bin"} <= set(lesions.columns)
    assert (lesions[lesions["patient_id"] == "p1"]["origin"] == "truth").sum() == 2
    hists = E.load_score_hists(out / "score_hists.npz")
    assert set(hists) == {"p1", "p2"}
    pos, neg = hists["p2"]
    assert pos.sum() == study["truths"]["p2"].sum() and neg.sum() == np.prod(SHAPE) - pos.sum()
    with pytest.raises(KeyError, match="p3"):
        E.load_score_hists(out / "score_hists.npz", ["p1", "p3"])


def test_parallel_equals_serial(study):
    serial = E.evaluate_cohort(study["manifest"], study["preds"], progress=False)
    parallel = E.evaluate_cohort(study["manifest"], study["preds"], progress=False, n_jobs=2)
    pd.testing.assert_frame_equal(serial, parallel)
    assert list(parallel["status"]) == ["ok", "ok", "failed", "failed"]


def test_affine_mismatch_names_case_and_file(study):
    _nii(study["preds"] / "p1_prob.nii.gz", np.zeros(SHAPE, np.float32), affine=np.eye(4))
    df = E.evaluate_cohort(study["manifest"], study["preds"], splits=("test",), progress=False)
    err = df.set_index("patient_id").loc["p1", "error"]
    assert "p1" in err and "p1_prob.nii.gz" in err and "affine" in err
    assert df.set_index("patient_id").loc["p2", "status"] == "ok"


def test_invalid_probabilities_rejected(study):
    _nii(study["preds"] / "p1_prob.nii.gz", np.full(SHAPE, 1.5, np.float32))
    df = E.evaluate_cohort(study["manifest"], study["preds"], splits=("test",), progress=False)
    assert "outside [0, 1]" in df.set_index("patient_id").loc["p1", "error"]
    _nii(study["manifest"].set_index("patient_id").loc["p2", "mask"], _truth() * 4)  # multi-label mask
    df = E.evaluate_cohort(study["manifest"], study["preds"], splits=("test",), progress=False)
    err = df.set_index("patient_id").loc["p2", "error"]
    assert "p2" in err and "p2_mask.nii.gz" in err and "only 0/1" in err and "[4]" in err


def test_binary_mask_fallback_and_brain_mask(study):
    os.remove(study["preds"] / "p2_prob.nii.gz")  # only the uint8 mask remains
    df = E.evaluate_cohort(study["manifest"], study["preds"], splits=("test",), progress=False)
    p2 = df.set_index("patient_id").loc["p2"]
    t, pred = study["truths"]["p2"].ravel(), (study["prob2"] >= 0.5).ravel()
    assert p2["status"] == "ok" and p2["auc"] == pytest.approx(roc_auc_score(t, pred), abs=1e-9)
    # brain mask restricts the voxels: specificity over the brain only
    dfb = E.evaluate_cohort(study["manifest"], study["preds"], splits=("test",), brain_mask=True, progress=False)
    brain = np.asanyarray(nib.load(study["manifest"].set_index("patient_id").loc["p2", "brain_mask"]).dataobj) > 0
    tb, pb = study["truths"]["p2"][brain], (study["prob2"] >= 0.5)[brain]
    spec = np.sum(~pb & (tb == 0)) / np.sum(tb == 0)
    assert dfb.set_index("patient_id").loc["p2", "specificity"] == pytest.approx(spec, abs=1e-12)


def test_resume_and_force(study, tmp_path):
    out = tmp_path / "eval"
    kw = dict(splits=("test",), progress=False)
    E.evaluate_cohort(study["manifest"], study["preds"], out, **kw)
    stamp = (out / "metrics.csv").stat().st_mtime_ns
    df2 = E.evaluate_cohort(study["manifest"], study["preds"], out, **kw)  # up to date: read back
    assert (out / "metrics.csv").stat().st_mtime_ns == stamp
    assert list(df2["status"]) == ["ok", "ok"] and list(df2["patient_id"]) == ["p1", "p2"]
    E.evaluate_cohort(study["manifest"], study["preds"], out, threshold=0.6, **kw)  # new params: recompute
    stamp2 = (out / "metrics.csv").stat().st_mtime_ns
    assert stamp2 != stamp
    # issue 14 / 10: inputs are compared by content hash, not mtime. A touched (unchanged) file is read
    # back; a prediction with new content recomputes and its case's inputs_sha256 changes.
    future = (out / "metrics.csv").stat().st_mtime + 10
    os.utime(study["preds"] / "p1_prob.nii.gz", (future, future))
    E.evaluate_cohort(study["manifest"], study["preds"], out, threshold=0.6, **kw)
    assert (out / "metrics.csv").stat().st_mtime_ns == stamp2
    before = E.load_results(out)[0].set_index("patient_id")["inputs_sha256"]
    prob1 = np.asanyarray(nib.load(study["preds"] / "p1_prob.nii.gz").dataobj).astype(np.float32)
    _nii(study["preds"] / "p1_prob.nii.gz", prob1 * np.float32(0.5))  # new content: recompute
    E.evaluate_cohort(study["manifest"], study["preds"], out, threshold=0.6, **kw)
    stamp3 = (out / "metrics.csv").stat().st_mtime_ns
    assert stamp3 != stamp2
    after = E.load_results(out)[0].set_index("patient_id")["inputs_sha256"]
    assert after["p1"] != before["p1"] and after["p2"] == before["p2"]
    edited = study["manifest"].assign(age=study["manifest"]["age"] + 1)  # a manifest edit: recompute
    df = E.evaluate_cohort(edited, study["preds"], out, threshold=0.6, **kw)
    assert list(df["age"]) == [46.0, 61.0] and (out / "metrics.csv").stat().st_mtime_ns != stamp3
    stamp3 = (out / "metrics.csv").stat().st_mtime_ns
    E.evaluate_cohort(edited, study["preds"], out, threshold=0.6, force=True, **kw)
    assert (out / "metrics.csv").stat().st_mtime_ns != stamp3


def test_cli(study, tmp_path, capsys):
    from bmstudy.cli import main

    manifest = str(study["root"] / "data_manifest.csv")
    out = tmp_path / "cli_eval"
    rc = main(["evaluate", manifest, str(study["preds"]), "--out", str(out), "--splits", "test", "--no-progress"])
    assert rc == 0 and (out / "metrics.csv").is_file()
    assert "2/2 case(s) evaluated" in capsys.readouterr().out
    rc = main(["evaluate", manifest, str(study["preds"]), "--out", str(out), "--no-progress"])
    assert rc == 1
    assert "FAILED p3" in capsys.readouterr().out


def test_input_validation(study, tmp_path):
    with pytest.raises(FileNotFoundError, match="predictions folder"):
        E.evaluate_cohort(study["manifest"], tmp_path / "nope")
    with pytest.raises(ValueError, match="no patients"):
        E.evaluate_cohort(study["manifest"], study["preds"], splits=("train",))
    with pytest.raises(ValueError, match="threshold"):
        E.evaluate_cohort(study["manifest"], study["preds"], threshold=2)


def _manifest_with_masks(study, masks: dict[str, str]):
    """The study manifest (test split) with some reference masks replaced."""
    m = study["manifest"][study["manifest"]["split"] == "test"].copy()
    m["mask"] = [masks.get(pid, path) for pid, path in zip(m["patient_id"], m["mask"])]
    return m


@pytest.mark.parametrize("suffix", [".nrrd", ".mha"])
def test_other_reference_formats_give_the_same_metrics(study, tmp_path, suffix):
    """An NRRD / MetaImage reference (read by bmstudy.io.read_volume) with the NIfTI predictions
    gives exactly the metrics, lesions and histograms of the NIfTI pair."""
    from bmstudy.io import write_volume

    masks = {}
    for pid in ("p1", "p2"):
        path = tmp_path / f"{pid}_mask{suffix}"
        write_volume(study["truths"][pid], AFFINE, path, dtype=np.uint8)
        masks[pid] = str(path)
    kw = dict(splits=("test",), progress=False)
    ref = E.evaluate_cohort(_manifest_with_masks(study, {}), study["preds"], tmp_path / "nii", **kw)
    other = E.evaluate_cohort(_manifest_with_masks(study, masks), study["preds"], tmp_path / "other", **kw)
    assert list(other["status"]) == ["ok", "ok"]
    cols = [*E.METRICS, *E.LESION_SUMMARY_KEYS, "truth_volume_ml", "pred_volume_ml"]
    pd.testing.assert_frame_equal(other[cols], ref[cols])
    _, les_ref = E.load_results(tmp_path / "nii")
    _, les_other = E.load_results(tmp_path / "other")
    pd.testing.assert_frame_equal(les_other, les_ref)
    h_ref, h_other = (E.load_score_hists(tmp_path / d / "score_hists.npz") for d in ("nii", "other"))
    for pid in ("p1", "p2"):
        np.testing.assert_array_equal(h_other[pid][0], h_ref[pid][0])
        np.testing.assert_array_equal(h_other[pid][1], h_ref[pid][1])


def test_grid_compared_in_world_orientation(study, tmp_path):
    """A reference stored in another voxel order (x flipped, affine adjusted) lies on the same
    world grid as the predictions: it is accepted and gives the same voxel metrics; a reference
    whose affine really differs is still rejected with the case and the file named."""
    flip = AFFINE.copy()
    flip[0, 0] = -1.0
    flip[0, 3] = SHAPE[0] - 1.0  # voxel i of the flipped file is voxel SHAPE[0]-1-i of the original
    path = tmp_path / "p2_mask_flipped.nii.gz"
    _nii(path, study["truths"]["p2"][::-1].copy(), affine=flip)
    kw = dict(splits=("test",), progress=False)
    ref = E.evaluate_cohort(_manifest_with_masks(study, {}), study["preds"], **kw)
    flipped = E.evaluate_cohort(_manifest_with_masks(study, {"p2": str(path)}), study["preds"], **kw)
    assert list(flipped["status"]) == ["ok", "ok"]
    cols = [*E.METRICS, "n_true", "n_pred", "n_detected", "n_fp", "lesion_dice", "truth_volume_ml"]
    pd.testing.assert_frame_equal(flipped[cols], ref[cols])
    shifted = AFFINE.copy()
    shifted[0, 3] = 5.0
    _nii(path, study["truths"]["p2"], affine=shifted)
    bad = E.evaluate_cohort(_manifest_with_masks(study, {"p2": str(path)}), study["preds"], **kw)
    err = bad.set_index("patient_id").loc["p2", "error"]
    assert "p2" in err and "p2_prob.nii.gz" in err and "affine" in err


def test_eval_params_and_label_map_reference(study, tmp_path):
    """EvalParams replaces the keywords; a label-map reference is binarised by its mask_labels
    (the lesion is label 4) and then scores as the 0/1 reference."""
    from bmstudy.plan import EvalParams

    kw_df = E.evaluate_cohort(study["manifest"], study["preds"], splits=("test",), threshold=0.6,
                              min_lesion_mm3=4.0, progress=False)
    params = EvalParams(splits=("test",), threshold=0.6, min_lesion_mm3=4.0)
    pd.testing.assert_frame_equal(E.evaluate_cohort(study["manifest"], study["preds"], params=params,
                                                    progress=False), kw_df)
    maps = {}
    for pid in ("p1", "p2"):
        label_map = study["truths"][pid] * 4
        label_map[0, 0, 0] = 2  # another structure, not lesion
        maps[pid] = str(_nii(tmp_path / f"{pid}_labels.nii.gz", label_map.astype(np.uint8)))
    manifest = _manifest_with_masks(study, maps)
    plain = E.evaluate_cohort(manifest, study["preds"], splits=("test",), progress=False)
    assert "only 0/1" in plain.set_index("patient_id").loc["p2", "error"]
    out = tmp_path / "labels"
    labelled = E.evaluate_cohort(manifest, study["preds"], out, params=EvalParams(splits=("test",), mask_labels=(4,)),
                                 progress=False)
    ref = E.evaluate_cohort(study["manifest"], study["preds"], splits=("test",), progress=False)
    pd.testing.assert_frame_equal(labelled[list(E.METRICS)], ref[list(E.METRICS)])
    stored = json.loads((out / "evaluate_params.json").read_text())["params"]
    assert stored["mask_labels"] == [4]
    E.evaluate_cohort(study["manifest"], study["preds"], tmp_path / "plain", splits=("test",), progress=False)
    assert "mask_labels" not in json.loads((tmp_path / "plain" / "evaluate_params.json").read_text())["params"]


@pytest.mark.realdata
def test_real_scans_round_trip(real_cases, tmp_path):
    """Two real BraTS cases (enhancing tumour = label 4): real affines pass the grid check, a perfect
    prediction scores 1, and pat0004's two enhancing components are counted as two lesions."""
    cases = [c for c in real_cases if "pat0004" in c.name or "pat0001" in c.name]
    preds = tmp_path / "preds"
    preds.mkdir()
    rows = []
    for c in cases:
        lab = nib.load(str(c / "OTMultiClass.nii.gz"))
        truth = (np.asanyarray(lab.dataobj) == 4).astype(np.uint8)
        pid = c.name
        nib.save(nib.Nifti1Image(truth, lab.affine), str(tmp_path / f"{pid}_mask.nii.gz"))
        nib.save(nib.Nifti1Image(truth.astype(np.float32), lab.affine), str(preds / f"{pid}_prob.nii.gz"))
        rows.append({"patient_id": pid, "site": "internal", "split": "test", "age": 50.0, "sex": "F",
                     "cancer_type": "other", "image": str(c / "T1c_subtrMeanDivStd.nii.gz"),
                     "mask": str(tmp_path / f"{pid}_mask.nii.gz"), "manual_seconds": ""})
    manifest = validate_manifest(pd.DataFrame(rows), tmp_path)
    df = E.evaluate_cohort(manifest, preds, tmp_path / "eval", min_lesion_mm3=100.0, progress=False)
    assert (df["status"] == "ok").all()
    assert np.allclose(df[list(E.METRICS)].to_numpy(), 1.0)
    counts = dict(zip(df["patient_id"], df["n_true"]))
    assert counts["brats_2013_pat0004_1"] == 2 and counts["brats_2013_pat0001_1"] == 1
    vol = dict(zip(df["patient_id"], df["truth_volume_ml"]))
    assert vol["brats_2013_pat0001_1"] == pytest.approx(31.5, abs=0.1)


@pytest.mark.slow
def test_tiny_cohort_end_to_end(tiny_cohort, tmp_path):
    """Synthetic cohort -> smoothed-truth 'predictions' -> evaluate -> tables and figures."""
    from scipy import ndimage

    from bmstudy.reporting import figures as figures

    from bmstudy.reporting import tables as tables
    from bmstudy.io.manifest import load_manifest

    manifest = load_manifest(tiny_cohort)
    preds = tmp_path / "preds"
    preds.mkdir()
    rng = np.random.default_rng(0)
    probs = {}
    for r in manifest[manifest["split"].isin(["test", "external"])].itertuples():
        m = nib.load(r.mask)
        t = np.asanyarray(m.dataobj).astype(np.float32)
        probs[r.patient_id] = np.clip(ndimage.gaussian_filter(t, 1.0) * rng.uniform(0.9, 1.5), 0, 1).astype(np.float32)
        _nii(preds / f"{r.patient_id}_prob.nii.gz", probs[r.patient_id], m.affine)
    df = E.evaluate_cohort(manifest, preds, tmp_path / "eval", progress=False)
    assert (df["status"] == "ok").all() and len(df) == len(probs)
    truth_by_id = dict(zip(manifest["patient_id"], manifest["mask"]))
    for pid, dice in zip(df["patient_id"], df["dice"]):
        t = np.asanyarray(nib.load(truth_by_id[pid]).dataobj).ravel() > 0
        assert dice == pytest.approx(f1_score(t, probs[pid].ravel() >= 0.5), abs=1e-9)
    _, lesions = E.load_results(tmp_path / "eval")
    hists = E.load_score_hists(tmp_path / "eval" / "score_hists.npz")
    assert tables.table2(df).shape[0] == 8
    assert len(tables.lesion_detection_table(lesions, metrics_df=df)) > 0
    assert len(figures.figure4_subgroups(df).axes) == 3
    assert len(tables.compare_with_paper(df)) == 16
    assert set(hists) == set(df["patient_id"])


# ============================================================================ issue 14: lesion-wise columns
def test_lesionwise_surface_froc_and_provenance_columns(study, tmp_path, monkeypatch):
    from bmstudy.plan import EvalParams

    out = tmp_path / "eval14"
    ep = EvalParams(splits=("test",), nsd_tolerance_mm=1.0, froc_candidate_threshold=0.2)
    df = E.evaluate_cohort(study["manifest"], study["preds"], out, params=ep, progress=False).set_index("patient_id")
    old = ["patient_id", "split", "site", "age", "age_group", "sex", "cancer_type", "manual_seconds",
           "model_seconds", "status", "error", *E.METRICS]
    assert list(df.reset_index().columns[:len(old)]) == old  # existing columns first, unchanged
    p1, p2 = df.loc["p1"], df.loc["p2"]
    # p1 is perfect: two lesions (48 and 60 voxels of 2 mm^3), BraTS Dice 1, HD95 0, NSD 1
    assert (p1["brats_lesionwise_dice"], p1["brats_lesionwise_hd95"], p1["hd95"], p1["nsd"]) == (1.0, 0.0, 0.0, 1.0)
    assert (p1["brats_n_truth"], p1["brats_tp"], p1["brats_fn"], p1["brats_fp"]) == (2, 2, 0, 0)
    pred2 = study["prob2"] >= 0.5
    ref = E.brats_lesion_metrics(pred2, study["truths"]["p2"], (1.0, 1.0, 2.0))
    assert {k: p2[f"brats_{k}"] for k in E.BRATS_KEYS} == pytest.approx(ref)
    s2 = E.surface_metrics(pred2, study["truths"]["p2"], (1.0, 1.0, 2.0), 1.0, empty_distance=374.0)
    assert (p2["hd95"], p2["nsd"]) == pytest.approx((s2["hd95"], s2["nsd"]))
    assert len(set(df["eval_code_hash"])) == 1 and len(df["eval_code_hash"].iloc[0]) == 64
    assert df.loc["p1", "inputs_sha256"] != df.loc["p2", "inputs_sha256"]
    # froc.csv: p1's two lesions scored 0.9 and no FP; p2's candidates at >= 0.2 scored by their max
    scores = {s.case_id: s for s in E.load_froc(out)}
    assert sorted(scores) == ["p1", "p2"]
    assert list(scores["p1"].lesions["score"]) == pytest.approx([0.9, 0.9]) and scores["p1"].fp_scores.size == 0
    direct = E.lesion_scores(study["prob2"], study["truths"]["p2"], (1.0, 1.0, 2.0), 0.2)
    assert list(scores["p2"].lesions["score"]) == pytest.approx(list(direct.lesions["score"]))
    assert sorted(scores["p2"].fp_scores) == pytest.approx(sorted(direct.fp_scores))
    # axial axis = 2 (the z axis of the affine): lesion 2 is 4 x 5 pixels in plane; corner pixels' centres
    # are 5 mm apart (3, 4) and the pixels add (3 + 4) / 5 mm along that line -> 6.4 mm
    assert scores["p1"].lesions["axial_diameter_mm"].max() == pytest.approx(6.4)
    les = E.load_results(out)[1]
    assert {"axial_diameter_mm", "size_bin_axial"} <= set(les.columns)
    # a change of the evaluation code (its hash) recomputes
    stamp = (out / "metrics.csv").stat().st_mtime_ns
    E.evaluate_cohort(study["manifest"], study["preds"], out, params=ep, progress=False)
    assert (out / "metrics.csv").stat().st_mtime_ns == stamp
    monkeypatch.setattr("bmstudy.evaluation.evaluate.code_hash", lambda: "0" * 64)
    E.evaluate_cohort(study["manifest"], study["preds"], out, params=ep, progress=False)
    assert (out / "metrics.csv").stat().st_mtime_ns != stamp
    assert set(E.load_results(out)[0]["eval_code_hash"]) == {"0" * 64}


def test_empty_convention_reaches_metrics(study, tmp_path):
    """A case with an empty reference and an empty prediction: Dice 1 ('agree', BraTS) or NaN ('nan')."""
    from bmstudy.plan import EvalParams

    _nii(study["root"] / "data" / "p1_mask.nii.gz", np.zeros(SHAPE, np.uint8))
    _nii(study["preds"] / "p1_prob.nii.gz", np.full(SHAPE, 0.05, np.float32))
    kw = dict(progress=False)
    agree = E.evaluate_cohort(study["manifest"], study["preds"], params=EvalParams(splits=("test",)), **kw)
    nan = E.evaluate_cohort(study["manifest"], study["preds"], params=EvalParams(splits=("test",), empty="nan"), **kw)
    a, n = agree.set_index("patient_id").loc["p1"], nan.set_index("patient_id").loc["p1"]
    assert a["dice"] == a["iou"] == a["precision"] == 1.0 and a["brats_lesionwise_dice"] == 1.0
    assert np.isnan(n["dice"]) and np.isnan(n["iou"]) and np.isnan(n["precision"]) and n["specificity"] == 1.0
