"""Issue 12: the synthetic cohort at real adult scale and CE-T1 contrast (MNI152-based anatomy).

Adult-scale cases are rendered at 2 mm (same millimetres, 8x fewer voxels) to keep the tests short;
sizes are checked in mm.
"""
from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from scipy import ndimage

from bmstudy.plan import synth_params
from bmstudy.synthetic import cohort_table, plan_case, plan_cohort, render_case
from bmstudy.synthetic import cohort as synth_cohort

ADULT = synth_params("default", spacing_internal=(2.0, 2.0, 2.0), spacing_external=(1.8, 1.8, 3.0))
TINY = synth_params("tiny")
FULL = np.ones((3, 3, 3), bool)


@pytest.fixture(scope="module")
def adult_cases() -> list[tuple]:
    plans = [plan_case(ADULT, "internal", i, 0) for i in (1, 2, 3)] + [plan_case(ADULT, "external", 1, 0)]
    return [(p, render_case(p, ADULT)) for p in plans]


def _extent_mm(mask: np.ndarray, spacing) -> np.ndarray:
    idx = np.argwhere(mask)
    return (idx.max(0) - idx.min(0) + 1) * np.asarray(spacing)


def test_head_and_brain_sizes_are_adult(adult_cases):
    for plan, case in adult_cases:
        brain = _extent_mm(case["brain"] > 0, case["spacing"])
        head = _extent_mm(case["labels"] > 0, case["spacing"])
        # brain (L-R, A-P, S-I incl. brainstem) and head sizes of an adult, not a miniature
        assert 120 <= brain[0] <= 165 and 150 <= brain[1] <= 195 and 120 <= brain[2] <= 175, (plan.patient_id, brain)
        assert 150 <= head[0] <= 200 and 180 <= head[1] <= 235 and 150 <= head[2] <= 200, (plan.patient_id, head)
        vol_ml = (case["brain"] > 0).sum() * np.prod(case["spacing"]) / 1000
        assert 1000 <= vol_ml <= 2100, (plan.patient_id, vol_ml)
        assert case["meta"]["thickness_mm"]["fat"] >= 3.0  # subcutaneous fat layer


def test_bright_fat_and_dark_bone(adult_cases):
    for plan, case in adult_cases:
        img, lab = case["image"].astype(float), case["labels"]
        wm = np.median(img[(lab == 7) & (case["mask"] == 0)])
        assert np.median(img[lab == 11]) > 0.9 * wm, plan.patient_id  # scalp fat bright on T1
        assert np.median(img[lab == 4]) > 0.6 * wm, plan.patient_id  # fatty marrow (diploe)
        assert np.median(img[lab == 3]) < 0.5 * wm, plan.patient_id  # cortical bone dark
        csf, gm = np.median(img[lab == 5]), np.median(img[lab == 6])
        assert csf < gm < wm


def test_lesion_diameters_are_clinical_within_a_voxel(tiny_cases_1mm, adult_cases):
    # planned = clinical size (no shrinking) for the real-scale presets
    for p in plan_cohort("default", 0)[:20]:
        for les in p.lesions:
            assert les.diameter_mm == pytest.approx(min(max(les.clinical_diameter_mm, 2.0), 30.0), abs=0.01)
    checked = 0
    for plan, case in tiny_cases_1mm + adult_cases:
        sp = np.asarray(case["spacing"])
        for k, les in enumerate(plan.lesions):
            if les.pattern == "irregular" or les.variant or les.touching or les.diameter_mm < 4:
                continue
            ext = _extent_mm(case["lesion_labels"] == k + 1, sp)
            assert abs(ext.max() - les.diameter_mm) <= sp.max() + 1e-6, (plan.patient_id, les, ext)
            checked += 1
    assert checked >= 5


@pytest.fixture(scope="module")
def tiny_cases_1mm() -> list[tuple]:
    plans = [plan_case(TINY, "internal", i, 0) for i in range(1, 7)]
    return [(p, render_case(p, TINY)) for p in plans]


def test_mimics_present_enhancing_and_never_in_mask(adult_cases):
    for plan, case in adult_cases:
        img, lab, ves, brain = case["image"].astype(float), case["labels"], case["vessels"], case["brain"] > 0
        wm = np.median(img[(lab == 7) & (case["mask"] == 0)])
        assert not np.any(ves & (case["mask"] > 0))
        outside, inside = ves & ~brain, ves & brain  # sinuses vs falx/straight sinus/veins/plexus
        assert outside.sum() * np.prod(case["spacing"]) > 3000, plan.patient_id  # SSS, transverse, sigmoid (mm3)
        assert inside.sum() > 20
        # thick slices (external: 3 mm, gamma 0.85) dilute the sinuses by partial volume
        assert np.median(img[outside]) > (1.6 if plan.site == "internal" else 1.3) * wm, plan.patient_id
        # venous blood is brighter than typical enhancing tumour (the real scans' false positives, generator 2)
        assert np.median(img[outside]) > np.median(img[case["mask"] > 0]), plan.patient_id
        assert np.percentile(img[inside], 75) > 1.1 * wm, plan.patient_id
        # superior sagittal sinus: bright voxels on the midline above the brain
        sp = np.asarray(case["spacing"])
        mid = ves.shape[0] // 2
        top = np.argwhere(ves[mid - 2: mid + 3])
        assert len(top) and top[:, 2].max() * sp[2] > 0.6 * ves.shape[2] * sp[2]


def test_venous_factor_scales_only_the_venous_mimics():
    """The per-case venous factor has its own stream: anatomy, lesions and noise are unchanged by it."""
    import dataclasses

    prof = synth_params("tiny")
    flat = dataclasses.replace(prof, sites={k: dataclasses.replace(v, venous_jitter=0.0) for k, v in prof.sites.items()})
    factors = []
    for i in (1, 2, 3):
        plan = plan_case(prof, "internal", i, 0)
        a, b = render_case(plan, prof), render_case(plan, flat)
        np.testing.assert_array_equal(a["mask"], b["mask"])
        np.testing.assert_array_equal(a["brain"], b["brain"])
        ta, tb = a["meta"]["intensities"], b["meta"]["intensities"]
        ratio = {k: ta[k] / tb[k] for k in ta}
        venous = [ratio[k] for k in ("sinus", "cavernous", "vessel")]
        assert np.ptp(venous) < 1e-9  # one factor shared by the venous mimics
        assert all(ratio[k] == 1.0 for k in ta if k not in ("sinus", "cavernous", "vessel"))
        factors.append(venous[0])
        far = ndimage.binary_dilation(a["vessels"], iterations=6) == 0  # partial-volume rims of the mimics
        np.testing.assert_array_equal(a["image"][far], b["image"][far])  # only around the mimics
    assert np.std(np.log(factors)) > 0.02, factors  # and it differs between cases


def test_touching_lesions_at_configured_rate():
    for rate in (0.0, 0.15, 0.5):
        plans = plan_cohort("paper", 0, touching_rate=rate)
        later = [les.touching for p in plans for les in p.lesions[1:]]
        assert abs(np.mean(later) - rate) < 0.04, (rate, np.mean(later))
        assert not any(p.lesions[0].touching for p in plans)
    # rendered: a touching lesion shares a connected component with an earlier one
    prof = synth_params("tiny", touching_rate=1.0)
    merged = 0
    for i in range(1, 10):
        plan = plan_case(prof, "internal", i, 0)
        if plan.n_lesions < 2:
            continue
        case = render_case(plan, prof)
        comp = ndimage.label(case["mask"], structure=FULL)[0]
        for k, les in enumerate(plan.lesions):
            if les.touching:
                mine = set(np.unique(comp[case["lesion_labels"] == k + 1])) - {0}
                earlier = set(np.unique(comp[(case["lesion_labels"] > 0) & (case["lesion_labels"] <= k)])) - {0}
                merged += bool(mine & earlier)
        if merged >= 3:
            break
    assert merged >= 3


def test_vessels_touch_lesions():
    prof = synth_params("tiny", vessel_touch_rate=1.0)
    plan = next(plan_case(prof, "internal", i, 0) for i in range(1, 30) if plan_case(prof, "internal", i, 0).n_lesions >= 2)
    case = render_case(plan, prof)
    assert case["vessel_touched"], plan.patient_id
    k = case["vessel_touched"][0]
    shell = ndimage.binary_dilation(case["lesion_labels"] == k, iterations=1) & (case["mask"] == 0)
    assert (case["vessels"] & shell).any()  # the vein runs along the lesion, outside its mask


def test_external_cases_ship_no_brain_mask_and_truth_is_named():
    df = cohort_table("default", 0)
    ext, inte = df[df.site == "external"], df[df.site == "internal"]
    assert len(ext) and (ext["brain_mask"] == "").all() and (inte["brain_mask"] != "").all()
    assert (df["brain_truth"] != "").all() and df["brain_truth"].str.startswith("brain/").all()
    assert (cohort_table("tiny", 0).query("site == 'external'")["brain_mask"] != "").all()


def test_external_case_goes_through_the_stripper(tmp_path):
    pytest.importorskip("deepbet", reason="deepbet (and torch) not installed")
    from bmstudy.io.manifest import load_manifest
    from bmstudy.plan import PreprocessParams
    from bmstudy.preprocessing.cohort import preprocess_cohort
    from bmstudy.synthetic import generate_cohort
    from bmstudy.synthetic.stripping import stripping_dice

    m = generate_cohort(tmp_path / "c", ADULT, 0, n_internal=2, n_external=1, n_jobs=1, progress=False)
    df = load_manifest(m)
    ext = df[df.site == "external"]
    assert ext["brain_mask"].fillna("").eq("").all()
    report = preprocess_cohort(ext, tmp_path / "pre", PreprocessParams(target_spacing=(2.0, 2.0, 2.0)), n_jobs=1,
                               qc=False, progress=False)
    assert list(report["status"]) == ["ok"] and list(report["skull_strip"]) == ["deepbet"]
    dice = stripping_dice(df, tmp_path / "pre")
    assert list(dice["patient_id"]) == ["EXT001"] and dice["backend"].iloc[0] == "deepbet"
    assert dice["dice"].iloc[0] > 0.8, dice


def test_determinism_per_seed_and_source_hash(adult_cases, monkeypatch):
    plan, case = adult_cases[0]
    again = render_case(plan, ADULT)
    for key in ("image", "mask", "brain", "labels"):
        np.testing.assert_array_equal(case[key], again[key])
    other = render_case(plan_case(ADULT, "internal", 1, seed=5), ADULT)
    assert not np.array_equal(case["image"], other["image"])
    # the re-run skip hashes the generator's source, not a version string
    h = synth_cohort._case_hash(plan, ADULT)
    monkeypatch.setattr(synth_cohort, "generator_source_hash", lambda: "changed")
    assert synth_cohort._case_hash(plan, ADULT) != h


def test_annotator_jitter_and_variants():
    prof = synth_params("tiny", annotator_jitter_mm=1.0)
    plan = plan_case(prof, "internal", 1, 0)
    case = render_case(plan, prof)
    m, t = case["mask"] > 0, case["true_mask"] > 0
    assert not np.array_equal(m, t)
    dice = 2 * (m & t).sum() / (m.sum() + t.sum())
    assert 0.6 < dice < 0.99
    assert np.array_equal(render_case(plan, TINY)["mask"], render_case(plan, TINY)["true_mask"])
    variants = pd.Series([les.variant for p in plan_cohort("paper", 0) for les in p.lesions]).value_counts()
    assert variants.get("cystic", 0) > 30 and variants.get("haemorrhagic", 0) > 20
