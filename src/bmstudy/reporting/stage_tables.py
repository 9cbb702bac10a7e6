"""The stage notebooks' small tables: a parameter set, the Z-score check of preprocessing, inference timings.

* :func:`settings_table` - a parameter set (``PreprocessParams``, ``TrainConfig``, ...) as a table
* :func:`brain_zscore_check` - mean / SD inside the brain of preprocessed cases
* :func:`inference_timing_table` - median seconds per inference phase and split

The module imports nothing from the study packages (cases and frames are passed in).
"""
from __future__ import annotations

import json
from typing import Any, Iterable, Mapping

import numpy as np
import pandas as pd

__all__ = ["INFERENCE_PHASES", "settings_table", "brain_zscore_check", "inference_timing_table"]

#: Per-case inference phases of ``timings.csv`` (seconds), in pipeline order; ``total_s`` last.
INFERENCE_PHASES: tuple[str, ...] = ("preprocess_s", "model_s", "postprocess_s", "total_s")


def settings_table(settings: Mapping[str, Any], name: str = "setting") -> pd.DataFrame:
    """A parameter set as a two-column table (``name``, ``value``); lists, tuples and dicts as JSON.

    Parameters
    ----------
    settings : mapping
        E.g. ``PreprocessParams.to_dict()`` or ``TrainConfig.to_dict()``.
    name : str, default 'setting'
        Header of the first column.

    Returns
    -------
    DataFrame
    """
    values = {k: json.dumps(v) if isinstance(v, (dict, list, tuple)) else str(v) for k, v in settings.items()}
    return pd.Series(values, dtype=object).rename("value").rename_axis(name).reset_index()


def brain_zscore_check(cases: Iterable[Mapping[str, Any]]) -> pd.DataFrame:
    """Mean and SD of the image inside the brain mask of each case (checks Z-score normalisation).

    Parameters
    ----------
    cases : iterable of mapping
        Preprocessed cases with ``image`` and ``brain`` arrays of one shape (e.g.
        ``bmstudy.preprocessing.load_case``); a generator is read one case at a time.

    Returns
    -------
    DataFrame
        Columns ``mean`` and ``sd``, one row per case (population SD, as ``numpy.std``).
    """
    rows = []
    for case in cases:
        inside = np.asarray(case["image"])[np.asarray(case["brain"]) > 0]
        rows.append((float(inside.mean()), float(inside.std())))
    return pd.DataFrame(rows, columns=["mean", "sd"], dtype=float)


def inference_timing_table(timings: pd.DataFrame, digits: int = 2) -> pd.DataFrame:
    """Median seconds per case of each inference phase (:data:`INFERENCE_PHASES`) per split.

    Parameters
    ----------
    timings : DataFrame
        ``timings.csv`` rows with ``split`` (rows not ``ok`` are left out).
    digits : int, default 2
        Rounding.

    Returns
    -------
    DataFrame
        ``split`` and one column per phase.
    """
    ok = timings[timings["status"].astype(str) == "ok"] if "status" in timings.columns else timings
    missing = [c for c in ("split", *INFERENCE_PHASES) if c not in ok.columns]
    if missing:
        raise ValueError(f"inference_timing_table: missing column(s) {missing}")
    return ok.groupby("split")[list(INFERENCE_PHASES)].median().round(digits).reset_index()
