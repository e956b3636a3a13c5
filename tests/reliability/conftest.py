"""Hypothesis profiles for the fuzz tests: a bounded, reproducible run in CI, a long random one by hand.

``HYPOTHESIS_PROFILE=long .venv/bin/pytest -q tests/reliability/test_fuzz.py`` selects the long run.
"""

from __future__ import annotations

import os

from hypothesis import HealthCheck, settings

_SLOW_OK = [HealthCheck.too_slow, HealthCheck.data_too_large]

# CI: the same examples on every run (derandomize), no example database written into the checkout.
settings.register_profile(
    "ci", max_examples=150, deadline=None, derandomize=True, database=None, suppress_health_check=_SLOW_OK
)
# By hand: new random examples each run; failures are kept in .hypothesis/ (git-ignored) and replayed first.
settings.register_profile("long", max_examples=5000, deadline=None, suppress_health_check=_SLOW_OK)
settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "ci"))
