"""bmstudy.inference."""
from __future__ import annotations

from . import predictor
from .predictor import (TIMING_COLUMNS, PredictFn, window_starts, gaussian_profile, sliding_window_predict, make_predict_fn, load_predictor, output_paths, predict_case, predict_cohort)

__all__ = ['predictor', 'TIMING_COLUMNS', 'PredictFn', 'window_starts', 'gaussian_profile', 'sliding_window_predict', 'make_predict_fn', 'load_predictor', 'output_paths', 'predict_case', 'predict_cohort']
