"""The one 0/1 validator: masks, references and labels become bool arrays or a clear error."""
from __future__ import annotations

from typing import Any

import numpy as np

from .volumes import VolumeError

__all__ = ["as_binary"]


def as_binary(data: Any, name: str = "mask", *, case: str | None = None, path: Any = None,
              labels: tuple[int, ...] | None = None, threshold: float | None = None,
              error: type[VolumeError] = VolumeError) -> np.ndarray:
    """Return ``data`` as a bool array of the same shape.

    Parameters
    ----------
    data : array-like
        Boolean or numeric array.
    name : str
        What the array is (``'mask'``, ``'reference'``, ``'y_true'``), for the message.
    case, path : optional
        Patient id and file, named in the error message.
    labels : tuple of int, optional
        Label values that form the foreground (e.g. ``(4,)`` for BraTS enhancing tumour).
    threshold : float, optional
        Foreground is ``data > threshold`` (ignored when ``labels`` is given).
    error : subclass of VolumeError, default=VolumeError
        The exception raised for values other than 0/1 (e.g. preprocessing's ``MaskValueError``).

    Returns
    -------
    ndarray of bool

    Raises
    ------
    TypeError
        For a non-numeric dtype.
    VolumeError
        (a ``ValueError``) for non-finite values, or values other than 0/1 when neither ``labels``
        nor ``threshold`` is given (then of type ``error``); the message names the case and the file.
    """
    a = np.asarray(data)
    if a.dtype == bool:
        return a
    if a.dtype.kind not in "uif":
        raise TypeError(f"{VolumeError(name, case=case, path=path)} must be a boolean or numeric 0/1 array, got dtype {a.dtype}")
    if a.dtype.kind == "f" and a.size and not np.isfinite(a).all():
        raise VolumeError(f"{name} contains non-finite values", case=case, path=path)
    if labels is not None:
        return np.isin(a, np.asarray(labels))  # no cast to a's dtype: an out-of-range label matches nothing
    if threshold is not None:
        return a > threshold
    b = a != 0
    if a.size and np.count_nonzero(a[b] != 1):
        vals = np.unique(a[b & (a != 1)])[:10].tolist()
        raise error(f"{name} must contain only 0/1, found values {vals} (give mask_labels or "
                          f"label_threshold for a label map)", case=case, path=path)
    return b
