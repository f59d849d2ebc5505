"""Trace-driven training: replay a staleness trace exactly on a PyTorch model or a quadratic.

>>> from asyncsim.train import replay                                  # doctest: +SKIP
>>> r = replay(trace, dataset="digits", model="mlp:64", optimizer="momentum",
...            momentum=0.9, lr=0.05)                                   # doctest: +SKIP
>>> r.diverged, r.final_loss, r.val_accuracy                           # doctest: +SKIP

Public API: :func:`replay`, :func:`replay_many`, :func:`sharpness`,
:func:`empirical_threshold`, :func:`find_minimum`, :func:`make_problem`, :class:`TrainResult`,
:class:`ThresholdResult`, :class:`VersionStore`. torch is imported lazily.

Layout: :mod:`.store` (replay plan, version store) and :mod:`.curves` (logging, verdict) are
shared by the two engines :mod:`.sequential` and :mod:`.batched`; :mod:`.replay` chooses
between them; :mod:`.optim` is the optimizer core, :mod:`.problem` / :mod:`.module` the
problems (built-in models, a user's ``nn.Module``).
"""

from __future__ import annotations

from .result import TrainResult, plot_results
from .optim import OPTIMIZERS, LRSchedule, OptimizerSpec, parse_schedule
from .data import DATASETS, Dataset, load_dataset
from .models import MODELS, parse_model
from .problem import Problem, make_problem
from .store import VersionStore, make_plan
from .replay import choose_engine, replay, replay_many
from .curves import VERDICTS, verdict
from .sharpness import SharpnessResult, sharpness, sharpness_info
from .threshold import ThresholdResult, empirical_threshold, find_minimum

__all__ = [
    "DATASETS", "MODELS", "OPTIMIZERS", "VERDICTS", "Dataset", "LRSchedule", "OptimizerSpec", "Problem",
    "SharpnessResult", "ThresholdResult", "TrainResult", "VersionStore", "choose_engine",
    "empirical_threshold", "find_minimum", "load_dataset", "make_plan", "make_problem", "parse_model",
    "parse_schedule", "plot_results", "replay", "replay_many", "sharpness", "sharpness_info", "verdict",
]
