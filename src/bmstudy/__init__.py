"""bmstudy: a reproducible study kit for brain-metastasis segmentation on CE 3D T1 MRI.

Stages (nnU-Net style): synthetic cohort / manifest -> preprocess -> train -> predict -> evaluate
-> statistics -> book. Each stage is a module with plain functions; ``bmstudy.cli`` exposes them.
"""
from __future__ import annotations

import os as _os

# oneDNN makes TensorFlow's 3D convolutions 20-50x faster on the AMD AVX2 CPUs we measured
# (../shared/STACK_NOTES.md). It must be set before TensorFlow is first imported; users can
# still override it by exporting the variable themselves.
_os.environ.setdefault("TF_ENABLE_ONEDNN_OPTS", "1")
_os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

__version__ = "0.1.0"

__all__ = ["__version__"]
