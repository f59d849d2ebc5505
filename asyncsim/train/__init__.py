"""Trace-driven training: replay a staleness trace exactly on a PyTorch model or a quadratic.

>>> from asyncsim.train import replay                                  # doctest: +SKIP
>>> r = replay(trace, dataset="digits", model="mlp:64", optimizer="momentum",
...            momentum=0.9, lr=0.05)                                   # doctest: +SKIP
>>> r.diverged, r.final_loss, r.val_accuracy                           # doctest: +SKIP

Public API: :func:`replay`, :func:`replay_many`, :func:`sharpness`,
:func:`empirical_threshold`, :func:`find_minimum`, :func:`make_problem`, :class:`TrainResult`,
:class:`ThresholdResult`, :class:`VersionStore`. torch is imported lazily.
"""

from __future__ import annotations

from .result import TrainResult, plot_results
from .optim import OPTIMIZERS, OptimizerSpec
from .data import DATASETS, Dataset, load_dataset
from .models import MODELS, parse_model
from .problem import Problem, make_problem
from .replay import VersionStore, make_plan, replay, replay_many
from .sharpness import SharpnessResult, sharpness, sharpness_info
from .threshold import ThresholdResult, empirical_threshold, find_minimum

__all__ = [
    "DATASETS", "MODELS", "OPTIMIZERS", "Dataset", "OptimizerSpec", "Problem", "SharpnessResult",
    "ThresholdResult", "TrainResult", "VersionStore", "empirical_threshold", "find_minimum",
    "load_dataset", "make_plan", "make_problem", "parse_model", "plot_results", "replay",
    "replay_many", "sharpness", "sharpness_info",
]
