"""Patient groups of the subgroup analyses (light: the reporting tables import it in every stage)."""
from __future__ import annotations

from typing import Any

import numpy as np
import pandas as pd

__all__ = ["AGE_CUTOFF", "age_group"]

#: The paper's age split: < 60 versus >= 60 years.
AGE_CUTOFF = 60.0


def age_group(age: Any, cutoff: float = AGE_CUTOFF) -> Any:
    """Age group label(s) ``'<60'`` / ``'>=60'``.

    Parameters
    ----------
    age : float or array-like of float
        Age(s) in years; NaN stays missing.
    cutoff : float, default=60.0

    Returns
    -------
    str, float NaN, or ndarray of object
        A label for a scalar, an object array for array-like input.
    """
    lo, hi = f"<{cutoff:g}", f">={cutoff:g}"
    if np.ndim(age) == 0:
        a = float(age)
        return np.nan if not np.isfinite(a) else (lo if a < cutoff else hi)
    a = pd.to_numeric(pd.Series(age), errors="coerce").to_numpy(dtype=float)
    out = np.where(a < cutoff, lo, hi).astype(object)
    out[~np.isfinite(a)] = np.nan
    return out
