"""Constants and validation shared by the stages' parameter sets (patch sizes, interpolation, backends)."""
from __future__ import annotations

from typing import Sequence

#: Version of the synthetic renderer (enters the synthetic cases' re-run hash).
GENERATOR_VERSION = "2"
DIVISOR = 32  # five stride-2 stages in the ResNet-34 encoder
INTERPOLATION_ORDER = {"linear": 1, "bspline": 3}
NORMALISATIONS = ("zscore_brain", "zscore_volume", "none")
SKULL_STRIP_BACKENDS: tuple[str, ...] = ("auto", "mask", "none", "deepbet", "synthstrip")
BLENDS: tuple[str, ...] = ("mean", "gaussian")


# ----------------------------------------------------------------------------- shared validation
def check_patch_size(patch_size: int | Sequence[int]) -> tuple[int, int, int]:
    """Return ``patch_size`` as a 3-tuple of ints; each must be a positive multiple of 32."""
    if isinstance(patch_size, (int,)) and not isinstance(patch_size, bool):
        size = (int(patch_size),) * 3
    else:
        size = tuple(int(s) for s in patch_size)  # type: ignore[union-attr]
    if len(size) != 3 or any(s <= 0 or s % DIVISOR for s in size):
        raise ValueError(f"patch_size must be 3 positive multiples of {DIVISOR} (the encoder downsamples 32x); got {patch_size!r}")
    return size  # type: ignore[return-value]
