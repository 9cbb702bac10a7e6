"""Synthetic cohort: determinism, lesion plan vs rendered masks, anatomy, sites, manifest, CLI."""
from __future__ import annotations

import json
from pathlib import Path

import nibabel as nib
import numpy as np
import pandas as pd
import pytest
from scipy import ndimage, stats

from bmstudy.io.manifest import REQUIRED_COLUMNS, load_manifest
from bmstudy.plan import synth_params
from bmstudy.synthetic import (
    PATTERNS, STATUS_COLUMNS, cohort_table, generate_cohort, plan_case, plan_cohort, render_case,
)

TINY = synth_params("tiny")
FULL = np.ones((3, 3, 3), bool)  # 26-connectivity


@pytest.fixture(scope="module")
def tiny_cases() -> list[tuple]:
    """(plan, rendered case) for 4 internal + 3 external tiny cases."""
    plans = [plan_case(TINY, "internal", i, 0) for i in range(1, 5)] + \
            [plan_case(TINY, "external", i, 0) for i in range(1, 4)]
    return [(p, render_case(p, TINY)) for p in plans]


def _load(path: str) -> tuple[np.ndarray, nib.Nifti1Image]:
    img = nib.load(path)
    return np.asarray(img.dataobj), img


# ----------------------------------------------------------------------------- determinism
def test_plans_deterministic_and_seed_dependent():
    a, b = cohort_table("default", 0), cohort_table("default", 0)
    pd.testing.assert_frame_equal(a, b)
    c = cohort_table("default", 1)
    assert not a[["age", "sex", "n_lesions", "manual_seconds"]].equals(c[["age", "sex", "n_lesions", "manual_seconds"]])
    # per-case seeds: a case's plan does not depend on how many cases the cohort has
    small = plan_cohort("default", 0, n_internal=5, n_external=2)
    big = {p.patient_id: p for p in plan_cohort("default", 0)}
    assert all(p == big[p.patient_id] for p in small)


def test_render_deterministic_and_seed_dependent():
    p0 = plan_case(TINY, "internal", 2, seed=0)
    r1, r2 = render_case(p0, TINY), render_case(p0, TINY)
    for key in ("image", "mask", "brain"):
        np.testing.assert_array_equal(r1[key], r2[key])
    r3 = render_case(plan_case(TINY, "internal", 2, seed=1), TINY)
    assert not np.array_equal(r1["image"], r3["image"])
    assert not np.array_equal(r1["mask"], r3["mask"])


# ----------------------------------------------------------------------------- lesions
def test_lesion_components_match_plan(tiny_cases):
    # issue 12: lesions planned ``touching`` share a connected component with an earlier lesion, so the
    # component count is n_lesions minus the touching lesions; per-lesion checks use ``lesion_labels``
    for plan, case in tiny_cases:
        mask, sp = case["mask"], np.asarray(case["spacing"])
        assert mask.dtype == np.uint8 and set(np.unique(mask)) <= {0, 1}
        lab, n = ndimage.label(mask, structure=FULL)
        n_touch = sum(les.touching for les in plan.lesions)
        assert plan.n_lesions - n_touch <= n <= plan.n_lesions == len(case["lesions"]), plan.patient_id
        for k, (les, info) in enumerate(zip(plan.lesions, case["lesions"])):
            c = lab[tuple(np.round(info["center_vox"]).astype(int))]
            assert c > 0, f"{plan.patient_id}: lesion centre not in the mask"
            comp = case["lesion_labels"] == k + 1
            idx = np.argwhere(comp)
            extent = (idx.max(0) - idx.min(0) + 1) * sp
            assert extent.max() <= les.diameter_mm + 2 * sp.max() + 1e-6, (plan.patient_id, extent, les)
            eq_d = 2 * (comp.sum() * sp.prod() * 3 / (4 * np.pi)) ** (1 / 3)
            if les.diameter_mm >= 5 and not les.touching:
                assert eq_d >= 0.45 * les.diameter_mm, (plan.patient_id, eq_d, les)
            assert TINY.min_diameter_mm <= les.diameter_mm <= TINY.max_diameter_mm


def test_lesion_plan_distributions():
    df = cohort_table("paper", 0)
    assert df["n_lesions"].between(1, 15).all()
    assert df["n_lesions"].max() >= 10 and (df["n_lesions"] == 1).any()
    assert df["max_lesion_diameter_mm"].between(2, 30).all()
    lung, other = df[df.cancer_type == "lung"], df[df.cancer_type == "other"]
    assert lung["n_lesions"].mean() > other["n_lesions"].mean() + 1.0
    plans = plan_cohort("paper", 0)
    d_lung = [l.clinical_diameter_mm for p in plans if p.cancer_type == "lung" for l in p.lesions]
    d_other = [l.clinical_diameter_mm for p in plans if p.cancer_type == "other" for l in p.lesions]
    assert np.median(d_lung) < np.median(d_other)
    # paper: lung ~81% internal vs ~54% external (selection bias); ages 18-90; manual time medians
    frac = df.groupby("site")["cancer_type"].apply(lambda s: (s == "lung").mean())
    assert frac["internal"] > 0.7 and frac["external"] < 0.65
    assert df["age"].between(18, 90).all() and set(df["sex"]) == {"M", "F"}
    med = df.groupby("site")["manual_seconds"].median()
    assert 95 < med["internal"] < 130 and 80 < med["external"] < 110
    rho = stats.spearmanr(df["n_lesions"], df["manual_seconds"]).statistic
    assert rho > 0.5
    vol = stats.spearmanr(df["nominal_lesion_volume_mm3"], df["manual_seconds"]).statistic
    assert vol > 0.3
    counts = pd.Series(";".join(df["patterns"]).split(";")).value_counts()
    assert set(counts.index) == set(PATTERNS) and counts.min() > 100


def _find_plan(pattern: str, site: str = "internal", min_d: float = 0.0):
    for i in range(1, 200):
        p = plan_case(TINY, site, i, 0)
        for j, les in enumerate(p.lesions):
            if les.pattern == pattern and les.diameter_mm >= min_d:
                return p, j
    raise AssertionError(f"no {pattern} lesion found")


def test_ring_lesion_has_dark_centre_and_lesions_enhance():
    plan, j = _find_plan("ring", min_d=8.0)
    case = render_case(plan, TINY)
    img, lab = case["image"].astype(float), case["labels"]
    sp = np.asarray(case["spacing"])
    info = case["lesions"][j]
    c = np.asarray(info["center_vox"])
    grid = np.indices(img.shape).reshape(3, -1).T
    dist = np.linalg.norm((grid - c) * sp, axis=1).reshape(img.shape)
    r = info["diameter_mm"] / 2
    comp = ndimage.label(case["mask"], structure=FULL)[0]
    comp = comp == comp[tuple(np.round(c).astype(int))]
    centre = comp & (dist <= 0.3 * r)
    rim = comp & (dist >= 0.65 * r)
    wm = np.median(img[(lab == 7) & (case["mask"] == 0)])
    assert centre.sum() >= 1 and rim.sum() >= 10
    assert img[centre].mean() < 0.7 * img[rim].mean()  # necrotic centre darker than the ring
    assert img[rim].mean() > 1.15 * wm  # the ring enhances
    plan_u, ju = _find_plan("uniform", min_d=5.0)
    cu = render_case(plan_u, TINY)
    info_u = cu["lesions"][ju]
    lab_u = ndimage.label(cu["mask"], structure=FULL)[0]
    comp_u = lab_u == lab_u[tuple(np.round(info_u["center_vox"]).astype(int))]
    wm_u = np.median(cu["image"][(cu["labels"] == 7) & (cu["mask"] == 0)])
    assert np.median(cu["image"][comp_u]) > 1.3 * wm_u  # nodular lesion clearly brighter than WM


def test_irregular_lesions_are_lobulated():
    plan, j = _find_plan("irregular", min_d=7.0)
    case = render_case(plan, TINY)
    info = case["lesions"][j]
    lab = ndimage.label(case["mask"], structure=FULL)[0]
    comp = lab == lab[tuple(np.round(info["center_vox"]).astype(int))]
    sp = np.asarray(case["spacing"])
    vol = comp.sum() * sp.prod()
    hull_ratio = vol / (np.pi / 6 * info["diameter_mm"] ** 3)
    assert hull_ratio < 0.8  # clearly not a filled ball of the planned diameter


def test_lesions_mostly_at_grey_white_junction(tiny_cases):
    at_junction = total = 0
    for plan, case in tiny_cases:
        lab = case["labels"]
        for info in case["lesions"]:
            c = np.round(info["center_vox"]).astype(int)
            r = int(np.ceil(info["diameter_mm"] / 2 / min(case["spacing"]))) + 3
            box = lab[tuple(slice(max(0, v - r), v + r + 1) for v in c)]
            total += 1
            at_junction += bool(((box == 6) | (box == 8)).any() and (box == 7).any())
    assert total >= 10 and at_junction / total >= 0.7


def test_vessel_mimics_are_bright_and_not_in_mask(tiny_cases):
    for plan, case in tiny_cases:
        img, mask, brain, lab, ves = (case["image"].astype(float), case["mask"], case["brain"] > 0,
                                      case["labels"], case["vessels"])
        assert case["n_vessels"] >= 3
        assert not np.any(ves & (mask > 0)), plan.patient_id  # mimics are never labelled as lesion
        assert (ves & brain).sum() >= 5 and (ves & ~brain).sum() >= 5  # intracranial vessels + sinus
        wm = np.median(img[(lab == 7) & (mask == 0)])
        assert np.percentile(img[ves & brain], 90) > 1.15 * wm, plan.patient_id  # brighter than WM


# ----------------------------------------------------------------------------- anatomy
def test_brain_mask_contains_lesions_and_head_has_skull_and_scalp(tiny_cases):
    for plan, case in tiny_cases:
        img, mask, brain, lab = case["image"].astype(float), case["mask"], case["brain"], case["labels"]
        assert brain.dtype == np.uint8 and set(np.unique(brain)) == {0, 1}
        assert not np.any((mask > 0) & (brain == 0)), plan.patient_id
        wm = np.median(img[lab == 7])
        outside = brain == 0
        scalp = outside & (img > 0.5 * wm)
        assert scalp.sum() > 0.05 * brain.sum(), plan.patient_id  # bright scalp outside the brain
        skull = lab == 3
        assert skull.sum() > 0.05 * brain.sum() and np.all(brain[skull] == 0)
        # cortical bone is dark on T1 (partial volume with diploe/scalp in thin tiny-profile skulls)
        assert np.median(img[skull]) < 0.4 * wm and np.median(img[skull]) < 0.6 * np.median(img[lab == 1])
        csf, gm = np.median(img[lab == 5]), np.median(img[lab == 6])
        assert csf < gm < wm  # T1 contrast
        assert (lab == 9).sum() > 50  # ventricles


# ----------------------------------------------------------------------------- sites
def test_external_differs_in_spacing_and_intensity(tiny_cases):
    internal = [c for p, c in tiny_cases if p.site == "internal"]
    external = [c for p, c in tiny_cases if p.site == "external"]
    assert {c["spacing"] for c in internal} == {(1.0, 1.0, 1.0)}
    assert {c["spacing"] for c in external} == {(0.9, 0.9, 1.5)}
    ext_fov = np.asarray(external[0]["image"].shape) * external[0]["spacing"]
    int_fov = np.asarray(internal[0]["image"].shape) * internal[0]["spacing"]
    np.testing.assert_allclose(ext_fov, int_fov, atol=1.5)  # same physical extent

    def feats(c):
        img, lab, brain = c["image"].astype(float), c["labels"], c["brain"] > 0
        wm = np.median(img[lab == 7])
        bg = img[lab == 0]
        return wm, np.median(img[lab == 6]) / wm, bg.mean() / wm

    fi, fe = np.array([feats(c) for c in internal]), np.array([feats(c) for c in external])
    assert fe[:, 0].min() > 1.8 * fi[:, 0].max()  # intensity scale
    assert fe[:, 1].min() > fi[:, 1].max()  # weaker grey/white contrast
    assert fe[:, 2].min() > 1.3 * fi[:, 2].max()  # more noise (Rician background level)


# ----------------------------------------------------------------------------- written cohort + manifest
def test_tiny_cohort_files_and_manifest(tiny_cohort):
    df = load_manifest(tiny_cohort)
    assert list(df.columns[: len(REQUIRED_COLUMNS)]) == list(REQUIRED_COLUMNS)
    for col in ("brain_mask", "scanner", "voxel_size", "n_lesions"):
        assert col in df.columns
    assert (df["site"] == "internal").sum() == TINY.n_internal and (df["site"] == "external").sum() == TINY.n_external
    counts = df["split"].value_counts().to_dict()
    assert counts == {"train": 6, "test": 2, "external": 4}
    assert df["patient_id"].str.match(r"^(INT|EXT)\d{3}$").all()
    assert set(df.loc[df.site == "external", "split"]) == {"external"}
    expected = cohort_table("tiny", 0)
    assert df["split"].astype(str).tolist() == expected["split"].astype(str).tolist()
    for row in df.itertuples():
        img, im = _load(row.image)
        msk, mm = _load(row.mask)
        brn, bm = _load(row.brain_mask)
        assert img.dtype == np.int16 and msk.dtype == np.uint8 and brn.dtype == np.uint8
        assert img.shape == msk.shape == brn.shape
        np.testing.assert_array_equal(im.affine, mm.affine)
        np.testing.assert_array_equal(im.affine, bm.affine)
        assert set(np.unique(msk)) == {0, 1}
        assert 1 <= ndimage.label(msk, structure=FULL)[1] <= row.n_lesions  # touching lesions merge (issue 12)
        zooms = tuple(round(float(z), 3) for z in im.header.get_zooms())
        assert "x".join(f"{z:g}" for z in zooms) == row.voxel_size
        assert not np.any((msk > 0) & (brn == 0))
    # the written files are exactly what render_case produces for the planned case
    ref = render_case(plan_case(TINY, "external", 2, 0), TINY)
    row = df.set_index("patient_id").loc["EXT002"]
    np.testing.assert_array_equal(_load(row["image"])[0], ref["image"])
    np.testing.assert_array_equal(_load(row["mask"])[0], ref["mask"])
    np.testing.assert_allclose(_load(row["image"])[1].affine, ref["affine"], atol=1e-5)
    meta = json.loads((Path(tiny_cohort).parent / "meta" / "INT001.json").read_text(encoding="utf-8"))
    assert meta["patient_id"] == "INT001" and len(meta["lesions"]) == df.loc[0, "n_lesions"]


def test_split_sizes_default_and_paper():
    d = cohort_table("default", 0)["split"].value_counts().to_dict()
    assert d == {"train": 32, "test": 8, "external": 8}  # issue 12: fewer external cases at real scale
    p = cohort_table("paper", 0)["split"].value_counts().to_dict()
    assert p == {"train": 376, "test": 94, "external": 172}


def test_committed_manifest_matches_generator(repo_root):
    path = repo_root / "data_manifest.csv"
    committed = pd.read_csv(path, keep_default_na=False)
    expected = cohort_table("default", 0, path_prefix="data/synthetic")
    expected = pd.read_csv(__import__("io").StringIO(expected.to_csv(index=False)), keep_default_na=False)
    pd.testing.assert_frame_equal(committed, expected)
    df = load_manifest(path, check_files=False)
    assert len(df) == 48 and df["image"].iloc[0].endswith("data/synthetic/images/INT001_t1c.nii.gz")


def test_rerun_skips_and_force_rerenders(tmp_path):
    import argparse

    from bmstudy.synthetic import cohort as synthetic

    parser = argparse.ArgumentParser()
    synthetic.add_cli_arguments(parser)

    def main(argv):
        return synthetic.cli_main(parser.parse_args(argv))

    out = tmp_path / "c"
    args = ["--out", str(out), "--profile", "tiny", "--n-internal", "2", "--n-external", "1", "-j", "1"]
    assert main(args + ["--preview"]) == 0
    assert (out / "preview.png").stat().st_size > 10_000
    status = pd.read_csv(out / "synth_status.csv")
    assert list(status["status"]) == ["ok"] * 3
    assert list(status.columns) == list(STATUS_COLUMNS) == ["patient_id", "status", "seconds", "error"]
    before = (out / "images" / "INT001_t1c.nii.gz").stat().st_mtime_ns
    assert main(args) == 0
    assert list(pd.read_csv(out / "synth_status.csv")["status"]) == ["skipped"] * 3
    assert (out / "images" / "INT001_t1c.nii.gz").stat().st_mtime_ns == before
    assert main(args + ["--force"]) == 0
    assert list(pd.read_csv(out / "synth_status.csv")["status"]) == ["ok"] * 3
    # a different seed changes the parameter hash -> re-rendered, different content
    generate_cohort(out, "tiny", seed=3, n_internal=2, n_external=1, n_jobs=1, progress=False)
    assert list(pd.read_csv(out / "synth_status.csv")["status"]) == ["ok"] * 3
    assert len(load_manifest(out / "data_manifest.csv")) == 3
    assert not list(out.rglob("*.tmp*"))  # atomic writes leave no temp files


def test_failed_case_is_named_and_others_written(tmp_path):
    out = tmp_path / "c"
    (out / "images" / "INT001_t1c.nii.gz").mkdir(parents=True)  # a folder where the scan goes: INT001 fails
    with pytest.raises(RuntimeError, match=r"failed for 1 case\(s\) in .*: INT001: IsADirectoryError") as err:
        generate_cohort(out, "tiny", 0, n_internal=2, n_external=0, n_jobs=1, progress=False)
    assert "INT002" not in str(err.value)
    status = pd.read_csv(out / "synth_status.csv", keep_default_na=False)
    assert list(status.columns) == list(STATUS_COLUMNS)
    assert list(status["status"]) == ["failed", "ok"]
    assert "INT001" in status.loc[0, "error"] and "Error" in status.loc[0, "error"]
    assert status.loc[1, "error"] == ""
    assert (out / "images" / "INT002_t1c.nii.gz").is_file() and (out / "meta" / "INT002.json").is_file()
    assert not (out / "data_manifest.csv").exists()  # no manifest for an incomplete cohort
    # once the obstacle is gone, only the failed case is rendered; the other is skipped
    (out / "images" / "INT001_t1c.nii.gz").rmdir()
    generate_cohort(out, "tiny", 0, n_internal=2, n_external=0, n_jobs=2, progress=False)
    status = pd.read_csv(out / "synth_status.csv")
    assert list(status["status"]) == ["ok", "skipped"]
    assert len(load_manifest(out / "data_manifest.csv")) == 2


def test_parallel_matches_serial(tmp_path):
    a = generate_cohort(tmp_path / "a", "tiny", 0, n_internal=2, n_external=1, n_jobs=1, progress=False)
    b = generate_cohort(tmp_path / "b", "tiny", 0, n_internal=2, n_external=1, n_jobs=3, progress=False)
    assert a.read_bytes() == b.read_bytes()
    for rel in ("images/INT002_t1c.nii.gz", "masks/EXT001_mask.nii.gz", "brain/INT001_brain.nii.gz",
                "meta/EXT001.json"):
        assert (a.parent / rel).read_bytes() == (b.parent / rel).read_bytes(), rel


def test_anatomy_labels_and_public_api():
    import bmstudy.synthetic as synthetic

    assert set(synthetic.__all__) <= set(dir(synthetic))
    plan = plan_case(TINY, "internal", 1, 0)
    spacing = np.asarray(TINY.sites["internal"].spacing)
    anat = synthetic.head_anatomy(plan.render_rng(), TINY, TINY.shape("internal"), spacing)
    assert set(np.unique(anat["lab"])) == set(synthetic.TISSUE_LABELS)  # every tissue is present
    assert not np.any(anat["brain"] & np.isin(anat["lab"], [0, 1, 2, 3, 4, 10, 11]))
    assert np.all(anat["lab"][anat["vent"]] == 9)
    np.testing.assert_array_equal(anat["lab"], render_case(plan, TINY)["labels"])


def test_invalid_arguments():
    with pytest.raises(ValueError, match="unknown synthetic profile"):
        synth_params("huge")
    with pytest.raises(ValueError, match="override"):
        synth_params("tiny", n_patients=3)
    with pytest.raises(ValueError, match="seed"):
        plan_case(TINY, "internal", 1, seed=-1)
    with pytest.raises(ValueError, match="index"):
        plan_case(TINY, "internal", 0)
    with pytest.raises(ValueError, match="site"):
        plan_case(TINY, "elsewhere", 1)
    with pytest.raises(ValueError, match="n_internal"):
        synth_params("tiny", n_internal=1)


def test_synth_preview_gets_the_real_scans_folder(tmp_path, monkeypatch):
    """``bmstudy synth --preview`` shows a real scan: ``--real-scans DIR``, else ``$BMSTUDY_SHARED_DATA/real``
    (``make study``'s montage had no real column although ../shared/data/real was there)."""
    import argparse

    from bmstudy.synthetic import cohort as synthetic
    from bmstudy.synthetic.preview import default_real_dir

    seen = []
    monkeypatch.setattr(synthetic, "generate_cohort", lambda *a, **k: tmp_path / "data_manifest.csv")
    monkeypatch.setattr(synthetic, "write_preview", lambda m, png, real_dir=None: seen.append(real_dir) or png)
    parser = argparse.ArgumentParser()
    synthetic.add_cli_arguments(parser)
    base = ["--out", str(tmp_path), "--preview"]
    assert synthetic.cli_main(parser.parse_args(base + ["--real-scans", str(tmp_path / "r")])) == 0
    monkeypatch.setenv("BMSTUDY_SHARED_DATA", str(tmp_path / "shared"))
    assert synthetic.cli_main(parser.parse_args(base)) == 0
    assert seen == [tmp_path / "r", tmp_path / "shared" / "real"] and default_real_dir() == seen[1]
    monkeypatch.delenv("BMSTUDY_SHARED_DATA")
    assert default_real_dir() == Path(synthetic.__file__).resolve().parents[3].parent / "shared" / "data" / "real"


def test_a_lesion_overhanging_the_brain_is_clipped_to_it():
    """Placement depth can exceed the true depth where the patient warp compresses the template; a lesion
    that then overhangs the envelope is clipped to the brain instead of failing the case."""
    from bmstudy.plan import default_sites
    from bmstudy.synthetic.lesions import render_lesions
    from bmstudy.synthetic.plans import CasePlan, LesionPlan

    n = 48
    g = np.indices((n, n, n)).astype(np.float32) - (n - 1) / 2
    brain = np.sqrt((g ** 2).sum(0)) <= 18
    lab = np.where(brain, 7, 0).astype(np.uint8)
    true_depth = ndimage.distance_transform_edt(brain).astype(np.float32)
    anat = {"lab": lab, "brain": brain, "depth": 3.0 * true_depth,  # overestimated threefold
            "prob": {"gm": np.zeros(brain.shape, np.float32)}}
    site = default_sites((1.0, 1.0, 1.0), (1.0, 1.0, 1.5))["internal"]
    lesions = (LesionPlan(14.0, 14.0, "solid"), LesionPlan(12.0, 12.0, "ring"))
    clipped = 0
    for seed in range(6):
        plan = CasePlan("X001", "internal", 0, seed, 60, "F", "lung", lesions, 60.0)
        img = np.where(brain, 1.0, 0.0).astype(np.float32)
        mask, info, labels = render_lesions(np.random.default_rng(seed), plan, anat, img, site, np.ones(3))
        assert not np.any(mask.astype(bool) & ~brain) and len(info) == 2
        for les in info:
            comp, n_comp = ndimage.label(labels == les["label"])
            assert n_comp == 1 and les["n_voxels"] == int((labels == les["label"]).sum()) or les["touching"]
        clipped += sum(les["clipped_voxels"] > 0 for les in info)
    assert clipped > 0  # the overestimated depth did put lesions across the envelope
