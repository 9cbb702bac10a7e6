"""Tables on a small synthetic results frame; cells checked against direct pandas / scipy / stats calls."""
from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from scipy import stats as sps

from bmstudy import statistics as stats

from bmstudy.reporting import tables as tables
from bmstudy.evaluation import METRICS


def _results(seed: int = 0) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    rows = []
    for split, n in (("test", 16), ("external", 22)):
        for i in range(n):
            age = rng.uniform(35, 85)
            row = {"patient_id": f"{split}{i:02d}", "split": split, "status": "ok", "error": "",
                   "age": age, "age_group": "<60" if age < 60 else ">=60", "sex": "MF"[i % 2],
                   "cancer_type": "lung" if rng.random() < (0.75 if split == "test" else 0.45) else "other",
                   "model_seconds": rng.normal(66, 2), "manual_seconds": rng.normal(105, 25)}
            row.update({m: rng.beta(5, 2) for m in METRICS})
            rows.append(row)
    df = pd.DataFrame(rows)
    df.loc[df.index[:2], "cancer_type"] = ["lung", "other"]  # both levels present in both sets
    df.loc[df.index[-2:], "cancer_type"] = ["lung", "other"]
    bad = {**rows[0], "patient_id": "broken", "status": "failed", "error": "boom"}
    bad.update({m: np.nan for m in METRICS})
    return pd.concat([df, pd.DataFrame([bad])], ignore_index=True)


def _hists(df: pd.DataFrame, seed: int = 1, n_bins: int = 16) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    rng = np.random.default_rng(seed)
    out = {}
    for pid in df["patient_id"]:
        shift = rng.integers(2, 8)
        pos = np.bincount(np.clip(rng.normal(n_bins / 2 + shift, 3, 30).astype(int), 0, n_bins - 1), minlength=n_bins)
        neg = np.bincount(np.clip(rng.normal(n_bins / 2 - 2, 3, 200).astype(int), 0, n_bins - 1), minlength=n_bins)
        out[pid] = (pos.astype(np.int64), neg.astype(np.int64))
    return out


def test_format_helpers():
    assert tables.format_p(0.0004) == "<0.001" and tables.format_p(0.1734) == "0.173"
    assert tables.format_p(float("nan")) == ""
    x = [1.0, 2.0, 3.0, 4.0, 10.0]
    s = pd.Series(x)
    assert tables.median_iqr(x) == f"{s.median():.3f} ({s.quantile(0.25):.3f}, {s.quantile(0.75):.3f})"


def test_table1():
    df = _results()
    t = tables.table1(df)
    ok = df[df["status"] == "ok"]
    te, ex = ok[ok["split"] == "test"], ok[ok["split"] == "external"]
    assert list(t.columns) == ["Characteristic", "Testing set (N = 16)", "Validation set (N = 22)", "p-value", "test"]
    assert len(t) == 10
    assert t.iloc[0, 1] == f"{te['age'].mean():.1f} \u00b1 {te['age'].std():.1f}"
    assert t.iloc[0, 3] == pytest.approx(stats.compare_continuous(te["age"], ex["age"])["p_value"], rel=1e-12)
    # cancer type: the chi-square p of the 2x2 table
    row = t.index[t["Characteristic"] == "Cancer type"][0]
    ref = stats.compare_categorical(te["cancer_type"].to_numpy(), ex["cancer_type"].to_numpy())
    assert t.loc[row, "p-value"] == pytest.approx(ref["p_value"], rel=1e-12)
    ct = pd.crosstab(ok["split"], ok["cancer_type"])
    assert t.loc[row, "p-value"] == pytest.approx(sps.chi2_contingency(ct.to_numpy())[1], rel=1e-9)
    n_lung = int((te["cancer_type"] == "lung").sum())
    assert t.loc[row + 1, "Testing set (N = 16)"] == f"{n_lung} ({100 * n_lung / 16:.1f}%)"
    male = t.index[t["Characteristic"].str.strip() == "Male"][0]
    assert t.loc[male, "Validation set (N = 22)"] == "11 (50.0%)"
    # a manifest-like frame (no status, no age_group) gives the same table
    manifest_like = df[df["status"] == "ok"].drop(columns=["status", "age_group"])
    pd.testing.assert_frame_equal(tables.table1(manifest_like), t)


def test_table2_matches_pandas():
    df = _results()
    t = tables.table2(df)
    assert t.shape == (8, 3)
    assert list(t["Metric"]) == ["Precision", "Recall", "F1 Score", "IoU", "Dice Coefficient", "Specificity", "MCC", "AUC"]
    ex = df[(df["split"] == "external") & (df["status"] == "ok")]["auc"]
    assert t.iloc[7, 2] == f"{ex.median():.3f} ({ex.quantile(0.25):.3f}, {ex.quantile(0.75):.3f})"
    # an undefined AUC (patient without lesion voxels) is left out and the count shown
    df.loc[df.index[df["split"] == "external"][:3], "auc"] = np.nan
    t = tables.table2(df)
    ex = df[(df["split"] == "external") & (df["status"] == "ok")]["auc"].dropna()
    assert t.iloc[7, 2] == f"{ex.median():.3f} ({ex.quantile(0.25):.3f}, {ex.quantile(0.75):.3f}) [n = 19]"
    assert "[n =" not in t.iloc[0, 2]


def test_table3_z_and_p():
    df = _results()
    t = tables.table3(df)
    assert list(t["Dataset"]) == ["Testing set", "Validation set"]
    te = df[(df["split"] == "test") & (df["status"] == "ok")]
    ref = stats.mann_whitney(te["model_seconds"].to_numpy(), te["manual_seconds"].to_numpy())
    assert t.loc[0, "Z"] == pytest.approx(ref.z) and t.loc[0, "p-value"] == pytest.approx(ref.p_value)
    assert t.loc[0, "Z"] < 0  # model faster than manual
    # independent reference: scipy's Mann-Whitney with the same method (exact for small samples, no ties)
    method = "exact" if ref.method.lower().startswith("exact") else "asymptotic"
    sp = sps.mannwhitneyu(te["model_seconds"], te["manual_seconds"], method=method)
    assert t.loc[0, "p-value"] == pytest.approx(sp.pvalue, rel=1e-9)
    # Z is the tie-corrected normal statistic (no continuity correction), as the paper's Table 3
    n1, n2 = len(te), len(te)
    u = sp.statistic
    assert t.loc[0, "Z"] == pytest.approx((u - n1 * n2 / 2) / np.sqrt(n1 * n2 * (n1 + n2 + 1) / 12), rel=1e-9)
    assert t.loc[0, "p (paired Wilcoxon)"] == pytest.approx(
        sps.wilcoxon(te["model_seconds"] - te["manual_seconds"]).pvalue)
    assert t.loc[0, "Model, s"] == tables.median_iqr(te["model_seconds"], 0)
    # issue 14: W (R's wilcox.test statistic = scipy's U of the first sample) and the Hodges-Lehmann
    # shift (median of all model - manual differences) with its 95 % CI
    assert t.loc[0, "W"] == pytest.approx(u)
    diffs = np.subtract.outer(te["model_seconds"].to_numpy(), te["manual_seconds"].to_numpy()).ravel()
    assert t.loc[0, "HL shift, s"] == pytest.approx(np.median(diffs))
    assert (t.loc[0, "HL 95% CI low"], t.loc[0, "HL 95% CI high"]) == pytest.approx((ref.ci_low, ref.ci_high))
    assert t.loc[0, "HL 95% CI low"] <= t.loc[0, "HL shift, s"] <= t.loc[0, "HL 95% CI high"]


@pytest.mark.parametrize("by", ["sex", "age_group", "cancer_type"])
def test_subgroup_p_values_equal_mann_whitney(by):
    df = _results()
    hists = _hists(df)
    t = tables.subgroup_table(df, by, "external", hists, n_boot=200, seed=3)
    assert list(t["metric"]) == list(METRICS)
    ok = df[(df["status"] == "ok") & (df["split"] == "external")]
    (va, _), (vb, _) = tables.GROUP_LEVELS[by]
    ga, gb = ok[ok[by] == va], ok[ok[by] == vb]
    for _, row in t.iterrows():
        ref = stats.mann_whitney(ga[row["metric"]].to_numpy(), gb[row["metric"]].to_numpy())
        assert row["mw_p"] == pytest.approx(ref.p_value, rel=1e-12)
        assert (row["hl_estimate"], row["hl_ci_low"], row["hl_ci_high"]) == pytest.approx((ref.estimate, ref.ci_low, ref.ci_high))
        assert row["n_a"] == len(ga) and row["n_b"] == len(gb)
        assert row["hl_conf_level"] == pytest.approx(ref.conf_level)
    auc = t.set_index("metric").loc["auc"]
    # voxel-level DeLong on pooled histograms equals DeLong on the expanded voxel scores
    pa = np.sum([hists[p][0] for p in ga["patient_id"]], axis=0)
    na = np.sum([hists[p][1] for p in ga["patient_id"]], axis=0)
    pb = np.sum([hists[p][0] for p in gb["patient_id"]], axis=0)
    nb = np.sum([hists[p][1] for p in gb["patient_id"]], axis=0)
    levels = np.arange(len(pa), dtype=float)

    def expand(pos, neg):
        return np.r_[np.ones(pos.sum()), np.zeros(neg.sum())], np.r_[np.repeat(levels, pos), np.repeat(levels, neg)]

    ref = stats.delong_unpaired(*expand(pa, na), *expand(pb, nb))
    assert auc["delong_p"] == pytest.approx(ref.p_value, rel=1e-9)
    assert auc["delong_auc_a"] == pytest.approx(ref.auc_a, rel=1e-12)
    assert 0.0 <= auc["boot_p"] <= 1.0 and auc["boot_ci_low"] <= auc["boot_diff"] <= auc["boot_ci_high"]
    # issue 14: boot_p is the patient-level permutation p (labels permuted under the null), seeded as the bootstrap
    ids = ga["patient_id"].tolist() + gb["patient_id"].tolist()
    perm = stats.pooled_auc_permutation_test(np.array([hists[i][0] for i in ids]), np.array([hists[i][1] for i in ids]),
                                             [1] * len(ga) + [0] * len(gb), group_a=1, n_permutations=200, seed=3)
    assert auc["boot_p"] == perm.p_value
    assert t.set_index("metric").loc["dice", ["delong_p", "boot_p"]].isna().all()  # AUC only


def test_subgroup_without_hists_and_errors():
    df = _results()
    t = tables.subgroup_table(df, "sex", "test")
    assert np.isnan(t.set_index("metric").loc["auc", "delong_p"])
    assert np.isfinite(t.set_index("metric").loc["auc", "mw_p"])
    hists = _hists(df)
    del hists["test00"]
    with pytest.raises(KeyError, match="test00"):
        tables.subgroup_table(df, "sex", "test", hists)
    with pytest.raises(ValueError, match="by must be"):
        tables.subgroup_table(df, "scanner", "test")
    # an empty subgroup gives NaN statistics, not an error
    one_sex = df.assign(sex="M")
    t = tables.subgroup_table(one_sex, "sex", "test", _hists(df), n_boot=50)
    assert t["n_b"].eq(0).all() and t["mw_p"].isna().all() and t["delong_p"].isna().all()


def test_all_subgroups_and_formatting():
    df = _results()
    long = tables.all_subgroup_tables(df, _hists(df), n_boot=100)
    assert len(long) == 2 * 3 * 8
    assert set(long["by"]) == {"sex", "age_group", "cancer_type"}
    pretty = tables.format_subgroup_table(long[(long["split"] == "test") & (long["by"] == "sex")])
    assert pretty.columns[1].startswith("Male (n = ") and "DeLong p (voxel-level, as paper)" in pretty.columns
    tiny = tables.format_subgroup_table(tables.subgroup_table(df.iloc[[0, 1, 2, 3]], "sex", "test"))
    assert tiny["HL shift (95% CI)"].str.endswith("% CI]").all()  # achieved level shown when below 95%
    html = tables.to_html(pretty, "Subgroups by gender (internal test set)")
    assert "<table" in html and "Subgroups by gender" in html


def test_paper_table2_and_compare():
    p = tables.paper_table2()
    assert len(p) == 16
    auc = p.set_index(["split", "metric"]).loc[("test", "auc")]
    assert (auc["median"], auc["q1"], auc["q3"]) == (0.891, 0.793, 0.930)
    assert p.set_index(["split", "metric"]).loc[("external", "recall"), "median"] == 0.638
    df = _results()
    c = tables.compare_with_paper(df)
    assert len(c) == 16 and list(c.columns[:4]) == ["split", "metric", "paper", "ours"]
    row = c.set_index(["split", "metric"]).loc[("external", "dice")]
    ours = df[(df["split"] == "external") & (df["status"] == "ok")]["dice"].median()
    assert row["ours_median"] == pytest.approx(ours) and row["diff_median"] == pytest.approx(ours - 0.750)
    assert row["paper"] == "0.750 (0.495, 0.852)" and row["n_ours"] == 22
    assert tables.paper_table3()["Z"].tolist() == [-11.672, -14.143]
    p1 = tables.paper_table1()
    ours1 = tables.table1(df)
    assert list(p1["Characteristic"]) == list(ours1["Characteristic"])  # same layout, side by side
    assert p1.iloc[2, 1] == "49 (53.8%)" and p1.iloc[0, 3] == "0.173" and p1.columns[2] == "Validation set (N = 172)"


def test_to_html_and_latex():
    t = pd.DataFrame({"Metric": ["A_b", "C&D"], "value": [0.12345, 1.5], "p-value": [0.0001, 0.25],
                      "fp_per_patient": [0.5, 1.0]})
    html = tables.to_html(t, "Table X: <demo>")
    assert "&lt;0.001" in html and "0.250" in html and "0.123" in html and "&lt;demo&gt;" in html
    assert ">fp per patient<" in html and "fp_per_patient" not in html and "A_b" in html  # headers wrap, cells kept
    tex = tables.to_latex(t, "Caption 50% done", label="tab:x")
    assert "\\toprule" in tex and "\\bottomrule" in tex and "\\label{tab:x}" in tex
    assert "A\\_b" in tex and "C\\&D" in tex and "50\\% done" in tex and "$<$0.001" in tex


def test_lesion_detection_table():
    lesions = pd.DataFrame({
        "patient_id": ["a", "a", "a", "b", "b"],
        "split": ["test", "test", "test", "external", "external"],
        "origin": ["truth", "truth", "pred", "truth", "pred"],
        "label": [1, 2, 1, 1, 1],
        "volume_mm3": [5.0, 300.0, 280.0, 2000.0, 1900.0],
        "diameter_mm": [2.1, 8.3, 8.1, 15.6, 15.4],
        "size_bin": ["<3 mm", "3-10 mm", "3-10 mm", ">10 mm", ">10 mm"],
        "matched": [False, True, True, True, True],
        "dice": [0.0, 0.8, 0.8, 0.9, 0.9],
    })
    t = tables.lesion_detection_table(lesions)
    assert set(t["split"]) == {"test", "external"}
    from bmstudy.evaluation import lesion_summary_by_size

    ref = lesion_summary_by_size(lesions[lesions["split"] == "test"].drop(columns=["split"]))
    got = t[t["split"] == "test"].drop(columns=["split"]).reset_index(drop=True)
    pd.testing.assert_frame_equal(got, ref.reset_index(drop=("size_bin" in ref.columns)), check_dtype=False)
    # with the per-patient frame, patients without any lesion count in fp_per_patient
    patients = pd.DataFrame({"patient_id": ["a", "z", "b"], "split": ["test", "test", "external"],
                             "status": ["ok", "ok", "ok"]})
    t2 = tables.lesion_detection_table(lesions, metrics_df=patients).set_index(["split", "size_bin"])
    assert t2.loc[("test", "all"), "n_patients"] == 2
    assert t2.loc[("test", "all"), "fp_per_patient"] == pytest.approx(0.0)
    assert t2.loc[("external", "all"), "n_true"] == 1 and t2.loc[("test", "all"), "n_detected"] == 1


# --------------------------------------------------------------------------- what the notebooks show
def _table2_side_as_notebook05_did(ok: pd.DataFrame) -> pd.DataFrame:
    """The inline code notebook 05 had before ``table2_vs_paper`` (the reference it must reproduce)."""
    cmp = tables.compare_with_paper(ok)
    labels = {"test": "Testing set", "external": "Validation set"}
    side = cmp.assign(metric=cmp["metric"].map(lambda m: tables.METRIC_LABELS.get(m, m)))
    wide = side.pivot(index="metric", columns="split", values=["paper", "ours"])
    wide = wide.reindex([tables.METRIC_LABELS.get(m, m) for m in cmp["metric"].unique()])
    n_ours = cmp.groupby("split")["n_ours"].max().to_dict()
    cols = {}
    for s in ("test", "external"):
        cols[f"{labels[s]}: paper (N = {91 if s == 'test' else 172})"] = wide[("paper", s)]
        cols[f"{labels[s]}: this run (N = {n_ours.get(s, 0)})"] = wide[("ours", s)]
    return pd.DataFrame(cols).rename_axis("Metric").reset_index()


def test_table2_vs_paper():
    df = _results()
    ok = df[df["status"] == "ok"]
    t = tables.table2_vs_paper(ok)
    pd.testing.assert_frame_equal(t, _table2_side_as_notebook05_did(ok))
    assert list(t.columns) == ["Metric", "Testing set: paper (N = 91)", "Testing set: this run (N = 16)",
                               "Validation set: paper (N = 172)", "Validation set: this run (N = 22)"]
    assert list(t["Metric"]) == [tables.METRIC_LABELS[m] for m in METRICS]
    dice = t.set_index("Metric").loc["Dice Coefficient"]
    assert dice["Validation set: paper (N = 172)"] == "0.750 (0.495, 0.852)"
    assert dice["Testing set: this run (N = 16)"] == tables.median_iqr(ok[ok["split"] == "test"]["dice"])
    # the failed row is left out whether or not the caller filtered
    pd.testing.assert_frame_equal(tables.table2_vs_paper(df), t)
    only_test = tables.table2_vs_paper(ok, splits=("test",))
    assert list(only_test.columns) == ["Metric", "Testing set: paper (N = 91)", "Testing set: this run (N = 16)"]
    with pytest.raises(ValueError, match="no set"):
        tables.table2_vs_paper(ok, splits=("train",))


def test_format_paper_table3():
    t = tables.format_paper_table3()
    assert list(t.columns) == ["Dataset", "Model, s", "Manual, s", "Z", "p"]
    assert list(t["Dataset"]) == ["Testing", "Validation"]
    assert list(t["Model, s"]) == ["69 (68, 69)", "66 (65, 68)"]
    assert list(t["Manual, s"]) == ["113 (90, 151)", "96 (78, 113)"]
    assert t["Z"].tolist() == [-11.672, -14.143] and t["p"].tolist() == ["<0.001", "<0.001"]


def test_subgroup_summaries():
    df = _results()
    long = tables.all_subgroup_tables(df, _hists(df), n_boot=100)
    # one captioned table per set x variable, formatted as format_subgroup_table does
    sections = tables.subgroup_sections(long)
    assert [c for c, _ in sections] == [f"{s} set by {v}" for s in ("Testing", "Validation")
                                        for v in ("Cancer type", "Gender", "Age")]
    first = long[(long["split"] == "test") & (long["by"] == "cancer_type")]
    pd.testing.assert_frame_equal(sections[0][1], tables.format_subgroup_table(first))
    # the AUC table: one row per AUC comparison, p-values copied, pooled AUCs as text
    auc = tables.auc_subgroup_table(long)
    ref = long[long["metric"] == "auc"]
    assert len(auc) == 6 and list(auc.index) == list(ref.index)
    assert list(auc["Set"]) == ["Testing"] * 3 + ["Validation"] * 3
    assert auc["Subgroups"].iloc[1] == "Male vs Female"
    np.testing.assert_array_equal(auc["DeLong p (voxels, as paper)"], ref["delong_p"])
    np.testing.assert_array_equal(auc["Mann-Whitney p (per-patient AUC)"], ref["mw_p"])
    row = ref.iloc[0]
    assert auc["pooled AUC"].iloc[0] == f"{row['delong_auc_a']:.3f} / {row['delong_auc_b']:.3f}"
    assert auc["n"].iloc[0] == f"{row['n_a']} / {row['n_b']}"
    # significance counts against a direct count
    sig = tables.significance_counts(long, alpha=0.05)
    valid = ref.dropna(subset=["delong_p", "boot_p"])
    other = long[long["metric"] != "auc"]
    assert sig == {"auc_comparisons": len(valid), "delong": int((valid["delong_p"] < 0.05).sum()),
                   "bootstrap": int((valid["boot_p"] < 0.05).sum()), "other_comparisons": int(other["mw_p"].notna().sum()),
                   "mann_whitney": int((other["mw_p"] < 0.05).sum())}
    assert tables.significance_counts(long, alpha=1.1)["mann_whitney"] == sig["other_comparisons"]


def test_subgroup_summaries_with_empty_auc_statistics():
    df = _results()
    long = tables.all_subgroup_tables(df)  # no histograms: no DeLong, no bootstrap
    auc = tables.auc_subgroup_table(long)
    assert (auc["pooled AUC"] == "").all() and auc["DeLong p (voxels, as paper)"].isna().all()
    assert tables.significance_counts(long)["auc_comparisons"] == 0


def test_settings_table():
    t = tables.settings_table({"patch_size": (64, 64, 64), "augment": {"flip": True}, "seed": 0, "weights": None},
                              name="parameter")
    assert list(t.columns) == ["parameter", "value"]
    assert t["value"].tolist() == ["[64, 64, 64]", '{"flip": true}', "0", "None"]
    assert t["parameter"].tolist() == ["patch_size", "augment", "seed", "weights"]
    assert tables.settings_table({}).empty


def test_brain_zscore_check():
    rng = np.random.default_rng(4)
    cases = []
    for i in range(3):
        image = rng.normal(i, 1 + i, size=(6, 7, 8)).astype(np.float32)
        brain = np.zeros(image.shape, np.uint8)
        brain[1:5, 2:6, 1:7] = 1
        cases.append({"image": image, "brain": brain})
    z = tables.brain_zscore_check(iter(cases))  # a generator works: one case at a time
    assert list(z.columns) == ["mean", "sd"] and len(z) == 3
    for (_, row), case in zip(z.iterrows(), cases):
        inside = case["image"][case["brain"] > 0]
        assert row["mean"] == pytest.approx(inside.mean()) and row["sd"] == pytest.approx(inside.std())
    empty = tables.brain_zscore_check([])
    assert empty.empty and list(empty.columns) == ["mean", "sd"] and np.isnan(empty["mean"].abs().max())


def test_inference_timing_table():
    rng = np.random.default_rng(5)
    timings = pd.DataFrame({"patient_id": [f"p{i}" for i in range(9)], "split": ["test"] * 5 + ["external"] * 4,
                            "status": ["ok"] * 8 + ["failed"],
                            **{p: rng.uniform(1, 10, 9) for p in tables.INFERENCE_PHASES}})
    t = tables.inference_timing_table(timings)
    assert list(t.columns) == ["split", *tables.INFERENCE_PHASES]
    ok = timings[timings["status"] == "ok"]
    exp = ok[ok["split"] == "external"]["model_s"].median()
    assert t.set_index("split").loc["external", "model_s"] == pytest.approx(round(exp, 2))
    with pytest.raises(ValueError, match="model_s"):
        tables.inference_timing_table(timings.drop(columns="model_s"))


# ============================================================================ issue 14: lesion-wise tables
def _brats_frame():
    return pd.DataFrame({
        "patient_id": ["a", "b", "c", "d"], "split": ["test", "test", "test", "external"],
        "status": ["ok", "ok", "failed", "ok"],
        "brats_lesionwise_dice": [1.0, 0.5, np.nan, 0.25], "brats_lesionwise_hd95": [0.0, 190.0, np.nan, 10.0],
        "brats_n_truth": [2, 1, np.nan, 3], "brats_tp": [2, 1, np.nan, 1], "brats_fn": [0, 0, np.nan, 2],
        "brats_fp": [0, 1, np.nan, 4], "hd95": [0.0, 3.0, np.nan, 5.0], "nsd": [1.0, 0.8, np.nan, 0.5]})


def test_brats_lesionwise_table_and_caption():
    df = _brats_frame()
    assert tables.evaluated_caption(df) == "Testing set: N = 2 evaluated of 3; Validation set: N = 1 evaluated of 1"
    t = tables.brats_lesionwise_table(df).set_index("Measure")
    te = t["Testing set (N = 2)"]
    assert te["Lesion-wise Dice, mean"] == "0.750" and te["Lesion-wise HD95 (mm), mean"] == "95.0"
    assert (te["Detected (TP)"], te["Missed (FN)"], te["False positives (FP)"], te["FP per patient"]) == ("3", "0", "1", "0.50")
    assert t["Validation set (N = 1)"]["FP per patient"] == "4.00"
    with pytest.raises(ValueError):
        tables.brats_lesionwise_table(df.drop(columns=["nsd"]))


def test_froc_table_by_size_bin():
    from bmstudy.evaluation import LesionScores, froc_curve, froc_score, size_bin

    les = pd.DataFrame({"label": [1, 2, 3], "volume_mm3": [5.0, 100.0, 4000.0], "diameter_mm": [2.1, 5.8, 19.7],
                        "axial_diameter_mm": [2.5, 11.0, 25.0], "score": [0.9, 0.6, np.nan]})
    cases = [LesionScores(les, np.array([0.95, 0.3]), "a"), LesionScores(les.iloc[:0], np.zeros(0), "b")]
    curves = {"test|equivalent sphere": froc_curve(cases, size_bin=size_bin),
              "test|longest axial": froc_curve(cases, size_bin=size_bin, diameter_column="axial_diameter_mm")}
    t = tables.froc_table(curves)
    allrow = t[(t["Diameter"] == "equivalent sphere") & (t["Size bin"] == "all")].iloc[0]
    assert allrow["Lesions"] == 3 and allrow["FROC score"] == pytest.approx(froc_score(froc_curve(cases)), abs=1e-3)
    # 2 patients: after the first FP (0.95) the rate is 0.5 FP/patient, where both found lesions (0.9, 0.6)
    # are reached: 2 of 3 at 0.5 FP; 0.25 FP interpolates linearly from (0, 0) -> 1/3
    assert allrow["Sens @ 0.5 FP"] == pytest.approx(2 / 3, abs=1e-3) and allrow["Sens @ 8 FP"] == pytest.approx(2 / 3, abs=1e-3)
    assert allrow["Sens @ 0.25 FP"] == pytest.approx(1 / 3, abs=1e-3)
    axial = t[t["Diameter"] == "longest axial"].set_index("Size bin")
    assert axial.loc[">10 mm", "Lesions"] == 2 and axial.loc["<3 mm", "Lesions"] == 1
