"""bmstudy.inference: sliding-window prediction of new scans with a trained model.

Modules, in the order a case goes through them:

* :mod:`~bmstudy.inference.inputs`: which cases to predict (one image, a folder of volumes, a
  manifest) and their brain masks;
* :mod:`~bmstudy.inference.sliding_window`: the window grid, blend weights and stitching (pure
  numpy; importing it imports no TensorFlow);
* :mod:`~bmstudy.inference.network`: the trained network as a predict_fn (:func:`load_predictor`);
* :mod:`~bmstudy.inference.predictor`: :func:`predict_case` / :func:`predict_cohort` (preprocess,
  predict, restore to the input grid, write masks and ``timings.csv``) and ``bmstudy predict``;
* :mod:`~bmstudy.inference.outputs`: the output file names and the ``timings.csv`` table.

TensorFlow is imported only inside :func:`load_predictor` (through :mod:`bmstudy.training`).
"""
from __future__ import annotations

from . import inputs, network, outputs, predictor, sliding_window
from .inputs import (BRAIN_MASK_SUFFIXES, VOLUME_SUFFIXES, PredictionCase, case_id_from_path, cases_from_input,
                     match_brain_masks)
from .network import load_predictor, make_predict_fn
from .outputs import TIMING_COLUMNS, output_paths
from .predictor import predict_case, predict_cohort
from .sliding_window import (BLENDS, PredictFn, count_windows, gaussian_profile, sliding_window_predict,
                             window_starts)

__all__ = [
    "inputs",
    "network",
    "outputs",
    "predictor",
    "sliding_window",
    # sliding window
    "BLENDS",
    "PredictFn",
    "window_starts",
    "count_windows",
    "gaussian_profile",
    "sliding_window_predict",
    # inputs
    "VOLUME_SUFFIXES",
    "BRAIN_MASK_SUFFIXES",
    "PredictionCase",
    "case_id_from_path",
    "cases_from_input",
    "match_brain_masks",
    # prediction
    "TIMING_COLUMNS",
    "make_predict_fn",
    "load_predictor",
    "output_paths",
    "predict_case",
    "predict_cohort",
]
