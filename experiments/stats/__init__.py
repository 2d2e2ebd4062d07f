"""Pure statistics over sufficient statistics, so that every number can be checked by hand.

Conventions (gbstats-like):

* Inputs are frozen dataclasses of sufficient statistics (`SampleStats`, `RatioStats`).
* Differences are always ``treatment - control``; relative lift is
  ``mean_t / mean_c - 1``.
* Degenerate but valid input (an empty arm, one observation, zero variance, a zero
  baseline) returns a result whose `status` says so, with NaN numbers; only *invalid*
  input (negative counts, alpha outside (0, 1), mismatched lengths) raises `ValueError`.
* scipy and statsmodels do the distribution arithmetic; the closed forms (delta method,
  normal-mixture confidence sequence) are written out in the docstrings.

One module per kind of question: `sufficient` (the inputs), `lifts`, `comparisons`
(fixed-horizon tests), `sequential`, `srm`, `multiple_testing`, `guardrails` (harm) and
`power`, on the shared vocabulary of `core`. Everything public is importable from here.
"""

from __future__ import annotations

from tacit.experiments.stats.comparisons import ComparisonResult, proportion_z_test, welch_t_test, z_test
from tacit.experiments.stats.core import Alternative, LiftScale, Status
from tacit.experiments.stats.guardrails import HarmResult, ToleranceKind, harm_test
from tacit.experiments.stats.lifts import LiftResult, absolute_lift, relative_lift
from tacit.experiments.stats.multiple_testing import Correction, adjust_p_values
from tacit.experiments.stats.power import (
    power_means,
    power_proportions,
    required_sample_size_means,
    required_sample_size_proportions,
)
from tacit.experiments.stats.sequential import SequentialResult, sequential_rho, sequential_test
from tacit.experiments.stats.srm import SrmResult, srm_check
from tacit.experiments.stats.sufficient import MeanEstimate, MeanStats, RatioStats, SampleStats, ratio_mean

__all__ = [
    "Alternative",
    "ComparisonResult",
    "Correction",
    "HarmResult",
    "LiftResult",
    "LiftScale",
    "MeanEstimate",
    "MeanStats",
    "RatioStats",
    "SampleStats",
    "SequentialResult",
    "SrmResult",
    "Status",
    "ToleranceKind",
    "absolute_lift",
    "adjust_p_values",
    "harm_test",
    "power_means",
    "power_proportions",
    "proportion_z_test",
    "ratio_mean",
    "relative_lift",
    "required_sample_size_means",
    "required_sample_size_proportions",
    "sequential_rho",
    "sequential_test",
    "srm_check",
    "welch_t_test",
    "z_test",
]
