"""Figures: structure (axes), saved files, and plotted values against direct computations."""
from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from matplotlib.container import BarContainer, ErrorbarContainer

from bmstudy.reporting import figures as figures
from bmstudy.evaluation import METRICS


def _results(seed: int = 0) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    rows = []
    for split, n in (("test", 14), ("external", 18)):
        for i in range(n):
            row = {"patient_id": f"{split}{i}", "split": split, "status": "ok",
                   "sex": "MF"[i % 2], "age_group": ("<60", ">=60")[(i // 2) % 2],
                   "cancer_type": ("lung", "other")[(i // 4) % 2],
                   "model_seconds": rng.normal(60, 3), "manual_seconds": rng.normal(110, 20)}
            row.update({m: rng.uniform(0.3, 1.0) for m in METRICS})
            rows.append(row)
    return pd.DataFrame(rows)


def test_largest_lesion_slice_picks_biggest_component():
    truth = np.zeros((20, 20, 30), np.uint8)
    truth[2:4, 2:4, 3:5] = 1                # small lesion, z 3-4
    truth[8:15, 8:15, 18:23] = 1             # large lesion, z 18-22
    truth[10:13, 10:13, 23] = 1              # thinner tail of the large lesion
    k = figures.largest_lesion_slice(truth, axis=2)
    assert 18 <= k <= 22
    assert figures.largest_lesion_slice(truth, axis=0) in range(8, 15)
    empty = np.zeros_like(truth)
    pred = np.zeros_like(truth)
    pred[1, 1, 7] = 1
    assert figures.largest_lesion_slice(empty, pred) == 7       # falls back to the prediction
    assert figures.largest_lesion_slice(empty) == 15            # middle slice


def test_figure3_overlays_axes_and_files(tmp_path):
    rng = np.random.default_rng(1)
    cases = []
    for i in range(3):
        img = rng.normal(size=(24, 24, 16)).astype(np.float32)
        truth = np.zeros(img.shape, np.uint8)
        truth[8:14, 8:14, 5 + i:9 + i] = 1
        pred = np.roll(truth, 1, axis=0)
        cases.append({"patient_id": f"p{i}", "image": img, "truth": truth, "pred": pred})
    fig = figures.figure3_overlays(cases, out=tmp_path / "fig3")
    assert len(fig.axes) == 6
    assert fig.axes[0].get_title() == "Annotation Mask" and fig.axes[1].get_title() == "Prediction Mask"
    for ext in ("png", "svg"):
        f = tmp_path / f"fig3.{ext}"
        assert f.is_file() and f.stat().st_size > 1000
    # the overlaid slice is the one through the lesion: the mask layer shows lesion voxels
    overlay = fig.axes[0].images[1].get_array()
    assert np.ma.count(overlay) == 36
    with pytest.raises(ValueError, match="p0"):
        figures.figure3_overlays([{**cases[0], "pred": cases[0]["pred"][:-1]}])


def test_figure4_bars_are_medians(tmp_path):
    df = _results()
    df.loc[0, "status"] = "failed"
    df.loc[0, list(METRICS)] = 99.0  # a failed row must not enter the medians
    fig = figures.figure4_subgroups(df, out=tmp_path / "fig4.png")
    assert len(fig.axes) == 3
    assert [a.get_title(loc="left") for a in fig.axes] == ["(A) Cancer type", "(B) Gender", "(C) Age"]
    assert (tmp_path / "fig4.png").is_file() and (tmp_path / "fig4.svg").is_file()
    ok = df[df["status"] == "ok"]
    ax = fig.axes[1]  # sex; first bar group = test set, males
    bar_groups = [c for c in ax.containers if isinstance(c, BarContainer)]
    bars = bar_groups[0]
    expected = ok[(ok["split"] == "test") & (ok["sex"] == "M")][list(METRICS)].median().to_numpy()
    np.testing.assert_allclose([b.get_height() for b in bars], expected, rtol=1e-12)
    assert len(bar_groups) == 4  # 2 sets x 2 groups
    # error bars span Q1..Q3
    errbar = [c for c in ax.containers if isinstance(c, ErrorbarContainer)][0]
    segs = errbar.lines[2][0].get_segments()
    sub = ok[(ok["split"] == "test") & (ok["sex"] == "M")]
    np.testing.assert_allclose([s[0][1] for s in segs], sub[list(METRICS)].quantile(0.25).to_numpy(), rtol=1e-12)
    np.testing.assert_allclose([s[1][1] for s in segs], sub[list(METRICS)].quantile(0.75).to_numpy(), rtol=1e-12)


def test_timing_and_lesion_figures(tmp_path):
    fig = figures.timing_figure(_results(), out=tmp_path / "timing")
    assert len(fig.axes) == 1 and (tmp_path / "timing.svg").is_file()
    lesions = pd.DataFrame({
        "patient_id": ["a", "a", "b", "b", "b", "c"],
        "split": ["test", "test", "test", "external", "external", "external"],
        "origin": ["truth", "truth", "truth", "truth", "pred", "truth"],
        "size_bin": ["<3 mm", "3-10 mm", "3-10 mm", ">10 mm", ">10 mm", ">10 mm"],
        "matched": [False, True, False, True, False, True],
    })
    fig = figures.lesion_size_figure(lesions, out=tmp_path / "lesions")
    assert len(fig.axes) == 1 and (tmp_path / "lesions.png").is_file()
    test_bars, ext_bars = fig.axes[0].containers
    # test set: <3 mm 0/1, 3-10 mm 1/2, >10 mm none; external: >10 mm 2/2 (the pred row is ignored)
    np.testing.assert_allclose([b.get_height() for b in test_bars], [0.0, 0.5, 0.0])
    np.testing.assert_allclose([b.get_height() for b in ext_bars], [0.0, 0.0, 1.0])


def test_load_overlay_cases_from_nifti(tmp_path):
    import nibabel as nib

    rng = np.random.default_rng(2)
    img = rng.normal(size=(12, 12, 8)).astype(np.float32)
    truth = np.zeros(img.shape, np.uint8)
    truth[3:7, 3:7, 2:5] = 1
    prob = np.where(truth > 0, 0.8, 0.1).astype(np.float32)
    for name, arr in (("img", img), ("mask", truth)):
        nib.save(nib.Nifti1Image(arr, np.eye(4)), str(tmp_path / f"p1_{name}.nii.gz"))
    (tmp_path / "preds").mkdir()
    nib.save(nib.Nifti1Image(prob, np.eye(4)), str(tmp_path / "preds" / "p1_prob.nii.gz"))
    manifest = pd.DataFrame({"patient_id": ["p1"], "image": [str(tmp_path / "p1_img.nii.gz")],
                             "mask": [str(tmp_path / "p1_mask.nii.gz")]})
    cases = figures.load_overlay_cases(manifest, tmp_path / "preds", ["p1"])
    assert cases[0]["pred"].sum() == truth.sum() and np.array_equal(cases[0]["truth"], truth > 0)
    fig = figures.figure3_overlays(cases)
    assert len(fig.axes) == 2
    with pytest.raises(FileNotFoundError, match="p2"):
        figures.load_overlay_cases(manifest.assign(patient_id="p2"), tmp_path / "preds", ["p2"])


def test_select_overlay_cases_spans_the_range():
    df = _results()
    df.loc[3, "status"] = "failed"
    df.loc[5, "dice"] = np.nan
    pick = figures.select_overlay_cases(df, 4)
    ranked = df[(df["status"] == "ok")].dropna(subset=["dice"]).sort_values("dice", ascending=False)
    assert len(pick) == 4
    assert pick["patient_id"].iloc[0] == ranked["patient_id"].iloc[0]     # best
    assert pick["patient_id"].iloc[-1] == ranked["patient_id"].iloc[-1]   # worst
    assert pick["dice"].is_monotonic_decreasing
    assert df.loc[3, "patient_id"] not in set(pick["patient_id"]) and df.loc[5, "patient_id"] not in set(pick["patient_id"])
    r = pick.iloc[0]
    assert r["label"] == f"{r['patient_id']} ({r['split']}, Dice {r['dice']:.2f})"
    assert figures.select_overlay_cases(df, 4, metric="auc")["label"].str.contains(", AUC ").all()
    assert len(figures.select_overlay_cases(df.iloc[:2], 4)) == 2      # fewer patients than wanted
    assert figures.select_overlay_cases(df.iloc[:0], 4).empty


def test_load_overlay_cases_labels_and_label_maps(tmp_path):
    import nibabel as nib
    import SimpleITK as sitk

    from bmstudy.io import VolumeError

    rng = np.random.default_rng(3)
    img = rng.normal(size=(10, 11, 6)).astype(np.float32)
    labels = np.zeros(img.shape, np.uint8)
    labels[2:5, 3:6, 1:4] = 2   # a label map: 2 = lesion, 1 = oedema
    labels[6:8, 6:8, 2:4] = 1
    nrrd = sitk.GetImageFromArray(img.transpose(2, 1, 0))  # NRRD, read through bmstudy.io
    nrrd.SetDirection((-1.0, 0.0, 0.0, 0.0, -1.0, 0.0, 0.0, 0.0, 1.0))  # LPS: the RAS identity of the NIfTI files
    sitk.WriteImage(nrrd, str(tmp_path / "p1_img.nrrd"))
    nib.save(nib.Nifti1Image(labels, np.eye(4)), str(tmp_path / "p1_mask.nii.gz"))
    (tmp_path / "preds").mkdir()
    nib.save(nib.Nifti1Image((labels == 2).astype(np.uint8), np.eye(4)), str(tmp_path / "preds" / "p1.nii.gz"))
    manifest = pd.DataFrame({"patient_id": ["p1"], "image": [str(tmp_path / "p1_img.nrrd")],
                             "mask": [str(tmp_path / "p1_mask.nii.gz")]})
    with pytest.raises(VolumeError, match="p1"):  # not 0/1 and no rule given: an error naming the case
        figures.load_overlay_cases(manifest, tmp_path / "preds", ["p1"])
    cases = figures.load_overlay_cases(manifest, tmp_path / "preds", ["p1"], labels=["p1 (test, Dice 1.00)"],
                                       mask_labels=(2,))
    assert cases[0]["label"] == "p1 (test, Dice 1.00)" and cases[0]["image"].shape == img.shape
    assert np.array_equal(cases[0]["truth"], labels == 2) and np.array_equal(cases[0]["pred"], labels == 2)
    np.testing.assert_allclose(cases[0]["image"], img)
    both = figures.load_overlay_cases(manifest, tmp_path / "preds", ["p1"], label_threshold=0)
    assert np.array_equal(both[0]["truth"], labels > 0)
    assert figures.figure3_overlays(cases).axes[0].get_ylabel().startswith("A  p1 (test, Dice 1.00)")
    with pytest.raises(ValueError, match="2 labels for 1 patients"):
        figures.load_overlay_cases(manifest, tmp_path / "preds", ["p1"], labels=["a", "b"])


def test_training_curves():
    log = pd.DataFrame({"epoch": [0, 1, 2], "loss": [0.9, 0.6, 0.5], "val_loss": [1.0, 0.7, 0.8],
                        "dice_score": [0.1, 0.4, 0.5], "lr": [1e-4] * 3, "seconds": [30.0, 31.0, 29.0]})
    fig = figures.training_curves(log, dice_weight=0.3, bce_weight=0.7)
    loss_ax, other_ax = fig.axes
    assert [l.get_label() for l in loss_ax.lines] == ["loss", "val_loss"]
    assert [l.get_label() for l in other_ax.lines] == ["dice_score"]  # lr and seconds are not plotted
    np.testing.assert_array_equal(loss_ax.lines[1].get_xdata(), [1, 2, 3])  # epochs shown 1-based
    np.testing.assert_array_equal(loss_ax.lines[1].get_ydata(), log["val_loss"])
    assert loss_ax.get_title() == "loss (0.3 Dice + 0.7 BCE)"
    assert figures.training_curves(log).axes[0].get_title() == "loss (0.5 Dice + 0.5 BCE)"
    assert loss_ax.get_legend() is not None
    only_loss = figures.training_curves(log[["epoch", "loss"]])
    assert only_loss.axes[1].get_legend() is None and not only_loss.axes[1].lines
    with pytest.raises(ValueError, match="epoch"):
        figures.training_curves(log.drop(columns="epoch"))


def test_inference_phases_figure(tmp_path):
    rng = np.random.default_rng(6)
    timings = pd.DataFrame({"split": ["test"] * 4 + ["external"] * 3, "status": ["ok"] * 6 + ["failed"],
                            "preprocess_s": rng.uniform(1, 2, 7), "model_s": rng.uniform(5, 9, 7),
                            "postprocess_s": rng.uniform(0.5, 1, 7), "total_s": rng.uniform(7, 12, 7)})
    fig = figures.inference_phases_figure(timings, out=tmp_path / "phases")
    assert (tmp_path / "phases.png").is_file()
    ax = fig.axes[0]
    assert len(ax.containers) == 3  # one stacked segment per phase (total_s is not a segment)
    ok = timings[timings["status"] == "ok"]
    med = ok.groupby("split")[["preprocess_s", "model_s", "postprocess_s"]].median()
    for container, phase in zip(ax.containers, med.columns):
        np.testing.assert_allclose([b.get_width() for b in container], med[phase].to_numpy())
    with pytest.raises(ValueError, match="no predicted"):
        figures.inference_phases_figure(timings.assign(status="failed"))


def test_froc_figure_and_axial_bins():
    from bmstudy.evaluation import LesionScores, froc_curve

    les = pd.DataFrame({"label": [1, 2], "volume_mm3": [5.0, 100.0], "diameter_mm": [2.1, 5.8],
                        "axial_diameter_mm": [2.5, 11.0], "score": [0.9, 0.6]})
    fig = figures.froc_figure({"Testing set": froc_curve([LesionScores(les, np.array([0.7]), "a")])})
    ax = fig.axes[0]
    assert ax.get_xscale() == "log" and len(ax.get_lines()) == 1
    with pytest.raises(ValueError):
        figures.froc_figure({})
    lesions = pd.DataFrame({"split": ["test"] * 3, "origin": ["truth"] * 3, "matched": [True, False, True],
                            "size_bin": ["3-10 mm"] * 3, "size_bin_axial": ["3-10 mm", ">10 mm", ">10 mm"]})
    fig = figures.lesion_size_figure(lesions, bin_column="size_bin_axial")
    assert [t.get_text() for t in fig.axes[0].get_xticklabels()] == ["3-10 mm", ">10 mm"]
    assert "RANO-BM" in fig.axes[0].get_xlabel()
