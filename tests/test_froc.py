"""bmstudy.evaluation.froc on hand-built cases, expected operating points and scores worked out by hand."""
from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest

from bmstudy.evaluation import froc as F


def _case1() -> tuple[np.ndarray, np.ndarray]:
    """Lesion A (3x3x3, 27 mm^3) found with max 0.9, lesion B (2x2x2, 8 mm^3) with max 0.4, one
    false-positive blob with max 0.6, and a 1-voxel (1 mm^3, ignored) lesion under a candidate 0.95."""
    t = np.zeros((20, 20, 20), bool)
    prob = np.zeros(t.shape, np.float32)
    t[2:5, 2:5, 2:5] = True
    prob[2:5, 2:5, 2:5] = 0.5
    prob[3, 3, 3] = 0.9
    t[2:4, 12:14, 2:4] = True
    prob[2:4, 12:14, 2:4] = 0.4
    prob[12:14, 12:14, 12:14] = 0.3
    prob[12, 12, 12] = 0.6
    t[16, 2, 16] = True
    prob[16, 2, 16] = 0.95
    return prob, t


def _case2() -> tuple[np.ndarray, np.ndarray]:
    """No lesion; one false positive with max 0.3."""
    prob = np.zeros((10, 10, 10), np.float32)
    prob[4:6, 4:6, 4:6] = 0.3
    return prob, np.zeros(prob.shape, bool)


def _scores():
    return [F.lesion_scores(*_case1(), (1, 1, 1), case_id="a"), F.lesion_scores(*_case2(), (1, 1, 1), case_id="b")]


def test_lesion_scores_by_hand():
    s1, s2 = _scores()
    # counted lesions: A (27 voxels, score 0.9) and B (8 voxels, score 0.4); the 1-voxel lesion is not
    # counted and its candidate (0.95) is neither a TP nor a FP
    assert s1.lesions["n_voxels"].tolist() == [27, 8]
    assert s1.lesions["score"].tolist() == pytest.approx([0.9, 0.4])
    assert s1.lesions["diameter_mm"].tolist() == pytest.approx([(6 * 27 / math.pi) ** (1 / 3), (48 / math.pi) ** (1 / 3)])
    assert s1.fp_scores.tolist() == pytest.approx([0.6])
    assert s2.fp_scores.tolist() == pytest.approx([0.3]) and s2.lesions.empty


def test_froc_curve_by_hand():
    c = F.froc_curve(_scores())
    # 2 patients, 2 counted lesions. Thresholds: inf, 0.9, 0.6, 0.4, 0.3.
    #   0.9: A found            -> sens 0.5, 0 FP          -> 0 FP/patient
    #   0.6: + FP 0.6           -> sens 0.5, 1 FP          -> 0.5
    #   0.4: + B                -> sens 1.0, 1 FP          -> 0.5
    #   0.3: + FP 0.3 (case 2)  -> sens 1.0, 2 FP          -> 1.0
    assert c["threshold"].tolist()[0] == np.inf
    assert c["threshold"].tolist()[1:] == pytest.approx([0.9, 0.6, 0.4, 0.3])
    assert c["sensitivity"].tolist() == [0.0, 0.5, 0.5, 1.0, 1.0]
    assert c["fp_per_patient"].tolist() == [0.0, 0.0, 0.5, 0.5, 1.0]
    assert c["n_fp"].tolist() == [0, 0, 1, 1, 2] and set(c["n_truth"]) == {2} and set(c["n_patients"]) == {2}


def test_froc_score_by_hand():
    c = F.froc_curve(_scores())
    # best sensitivity per FP rate: 0 -> 0.5, 0.5 -> 1.0, 1.0 -> 1.0; linear in between, flat after.
    # 0.125 -> 0.5 + 0.125 / 0.5 * 0.5 = 0.625; 0.25 -> 0.75; 0.5, 1, 2, 4, 8 -> 1
    assert F.froc_score(c) == pytest.approx((0.625 + 0.75 + 5 * 1.0) / 7)
    assert F.froc_score(c, fp_points=(0.25,)) == pytest.approx(0.75)


def test_size_bins():
    c = F.froc_curve(_scores(), size_bin=lambda d: "small" if d < 3 else "large")
    # A: d = 3.72 mm (large), B: d = 2.48 mm (small); FP per patient from all false positives
    assert list(dict.fromkeys(c["size_bin"])) == ["large", "small", "all"]
    large = c[c["size_bin"] == "large"]
    # thresholds inf, 0.9, 0.6, 0.3 (B's 0.4 is not in this bin)
    assert large["sensitivity"].tolist() == [0.0, 1.0, 1.0, 1.0]
    assert large["fp_per_patient"].tolist() == [0.0, 0.0, 0.5, 1.0]
    scores = c.groupby("size_bin").apply(F.froc_score, include_groups=False)
    assert scores["large"] == pytest.approx(1.0)
    # small (B at 0.4): points (0, 0), (0.5, 1.0) [0.6 -> 0.5 FP with 0, 0.4 -> 0.5 FP with 1], (1, 1)
    # 0.125 -> 0.25, 0.25 -> 0.5, rest 1 -> mean (0.25 + 0.5 + 5) / 7
    assert scores["small"] == pytest.approx((0.25 + 0.5 + 5) / 7)
    assert scores["all"] == pytest.approx(F.froc_score(F.froc_curve(_scores())))
    with pytest.raises(ValueError, match="size bins"):
        F.froc_score(c)


def test_no_lesions_gives_nan_and_candidate_threshold():
    c = F.froc_curve([F.lesion_scores(*_case2(), (1, 1, 1))])
    assert c["sensitivity"].isna().all() and math.isnan(F.froc_score(c))
    # above the candidate threshold 0.35 the 0.3 blob is no candidate at all
    s = F.lesion_scores(*_case1(), (1, 1, 1), candidate_threshold=0.35)
    assert s.fp_scores.tolist() == pytest.approx([0.6])
    s = F.lesion_scores(*_case1(), (1, 1, 1), candidate_threshold=0.45)
    assert np.isnan(s.lesions["score"].iloc[1])  # B (0.4) is never a candidate


def test_errors():
    with pytest.raises(ValueError):
        F.froc_curve([])
    prob, t = _case1()
    prob[0, 0, 0] = np.nan
    with pytest.raises(ValueError, match="non-finite"):
        F.lesion_scores(prob, t, (1, 1, 1))
    with pytest.raises(ValueError, match="columns"):
        F.froc_score(pd.DataFrame({"x": [1]}))
