"""bmstudy: a reproducible study kit for brain-metastasis segmentation on CE 3D T1 MRI.

Stage packages in pipeline order (nnU-Net style): ``io`` (volumes, manifest, split), ``synthetic``,
``preprocessing``, ``training``, ``inference``, ``evaluation``, ``statistics``, ``reporting`` and
``study`` (notebooks, runner); ``plan`` holds every stage's parameters, ``cases`` the per-case loop and
``cli`` the ``bmstudy`` command. Subpackages load on first attribute access (``bmstudy.evaluation``),
so ``import bmstudy`` stays fast and never imports TensorFlow.
"""
from __future__ import annotations

import os as _os

# oneDNN makes TensorFlow's 3D convolutions 20-50x faster on the AMD AVX2 CPUs we measured
# (../shared/STACK_NOTES.md). It must be set before TensorFlow is first imported; users can
# still override it by exporting the variable themselves.
_os.environ.setdefault("TF_ENABLE_ONEDNN_OPTS", "1")
_os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

__version__ = "0.1.0"

_SUBMODULES = ("io", "synthetic", "preprocessing", "training", "inference", "evaluation", "statistics",
               "reporting", "study", "plan", "cases", "cli", "utils")

__all__ = ["__version__", *_SUBMODULES]


def __getattr__(name: str):
    """Import a subpackage on first access (``bmstudy.study.notebook_setup`` after ``import bmstudy``)."""
    if name in _SUBMODULES:
        import importlib

        return importlib.import_module(f"{__name__}.{name}")
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
