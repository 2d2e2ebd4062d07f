"""Pure statistics over sufficient statistics, so that every number can be checked by hand.

Conventions (gbstats-like):

* Inputs are frozen dataclasses of sufficient statistics (`SampleStats`, `RatioStats`).
* Differences are always ``treatment - control``; relative lift is
  ``mean_t / mean_c - 1``.
* Degenerate but valid input (an empty arm, one observation, zero variance, a zero
  baseline, an interval that would have zero width) returns a result whose `status` says
  so, with NaN numbers; only *invalid* input — statistics no data can produce (negative
  counts, a sum of squares below sum²/n, a proportion outside [0, 1]), alpha outside
  (0, 1), p-values outside [0, 1], mismatched lengths — raises `ValueError`.
* Proportions (`ProportionStats`) use gbstats' variance p(1 − p).
* scipy and statsmodels do the distribution arithmetic; the closed forms (delta method,
  normal-mixture confidence sequence) are written out in the docstrings.

One module per kind of question: `sufficient` (the inputs), `lifts` (each effect with its
own Welch t test), `comparisons` (fixed-horizon tests), `sequential`, `cuped` (regression
adjustment on a pre-exposure covariate), `srm`, `multiple_testing`, `guardrails` (harm)
and `power`, on the shared vocabulary of `core`. `tests/experiments/data/gbstats_cases.json`
pins GrowthBook's gbstats numbers that these functions reproduce to 1e-6. Everything
public is importable from here.
"""

from __future__ import annotations

from tacit.experiments.stats.comparisons import ComparisonResult, proportion_z_test, welch_t_test, z_test
from tacit.experiments.stats.core import Alternative, LiftScale, Status
from tacit.experiments.stats.cuped import CovariateStats, CupedResult, cuped_adjust, cuped_theta
from tacit.experiments.stats.guardrails import HarmResult, ToleranceKind, harm_test
from tacit.experiments.stats.lifts import LiftResult, absolute_lift, relative_lift, t_test
from tacit.experiments.stats.multiple_testing import Correction, adjust_p_values
from tacit.experiments.stats.power import (
    power_means,
    power_proportions,
    required_sample_size_means,
    required_sample_size_proportions,
)
from tacit.experiments.stats.sequential import SequentialResult, sequential_rho, sequential_test
from tacit.experiments.stats.srm import SrmResult, srm_check
from tacit.experiments.stats.sufficient import (
    AdjustedStats,
    MeanEstimate,
    MeanStats,
    ProportionStats,
    RatioStats,
    SampleStats,
    ratio_mean,
)

__all__ = [
    "AdjustedStats",
    "Alternative",
    "ComparisonResult",
    "Correction",
    "CovariateStats",
    "CupedResult",
    "HarmResult",
    "LiftResult",
    "LiftScale",
    "MeanEstimate",
    "MeanStats",
    "ProportionStats",
    "RatioStats",
    "SampleStats",
    "SequentialResult",
    "SrmResult",
    "Status",
    "ToleranceKind",
    "absolute_lift",
    "adjust_p_values",
    "cuped_adjust",
    "cuped_theta",
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
    "t_test",
    "welch_t_test",
    "z_test",
]
