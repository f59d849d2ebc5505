"""Shared test set-up.

OpenMP spin-waiting on a loaded 2-core machine made 2-thread torch steps ~50x
slower, so tests run torch single-threaded with passive waiting.
"""

import os
import sys
from pathlib import Path

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
os.environ.setdefault("OMP_NUM_THREADS", "1")
os.environ.setdefault("MPLBACKEND", "Agg")

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
if str(HERE) not in sys.path:
    sys.path.insert(0, str(HERE))

# Hypothesis: the default profile is derandomized (the examples are a function of
# the test), so that the README's test command and CI give the same result on
# every run. `pytest --hypothesis-profile=explore` draws fresh examples each run
# (a failure prints the example and a reproduce blob).
from hypothesis import settings  # noqa: E402

settings.register_profile("repro", derandomize=True)
settings.register_profile("explore", derandomize=False, print_blob=True)
settings.load_profile(os.environ.get("ASYNCSIM_HYPOTHESIS_PROFILE", "repro"))
