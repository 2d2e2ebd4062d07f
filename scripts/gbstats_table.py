"""Compute the gbstats reference table that tests/experiments/test_gbstats_parity.py checks Tacit against.

Not run by CI: it needs GrowthBook's `gbstats` in a SEPARATE environment (it pins pandas
and pydantic versions Tacit does not use):

    python3.11 -m venv /tmp/gbstats-venv && /tmp/gbstats-venv/bin/pip install gbstats==0.8.0
    /tmp/gbstats-venv/bin/python scripts/gbstats_table.py

It writes tests/experiments/data/gbstats_cases.json: every case's inputs (sufficient
statistics, alpha, test kind) and gbstats' outputs, with the gbstats/scipy/numpy versions
and the date, so the pinned numbers carry their provenance. Inputs are drawn from a seeded
numpy generator; rerunning gives the same inputs.
"""

from __future__ import annotations

import json
import platform
import sys
from datetime import UTC, datetime
from importlib.metadata import version
from pathlib import Path
from typing import Any

import numpy as np
from gbstats.frequentist.tests import (
    FrequentistConfig,
    OneSidedTreatmentGreaterTTest,
    OneSidedTreatmentLesserTTest,
    SequentialConfig,
    SequentialTwoSidedTTest,
    TwoSidedTTest,
)
from gbstats.models.statistics import (
    ProportionStatistic,
    RatioStatistic,
    RegressionAdjustedStatistic,
    SampleMeanStatistic,
    compute_theta,
)

OUT = Path(__file__).resolve().parent.parent / "tests" / "experiments" / "data" / "gbstats_cases.json"
SEED = 20261201


def _mean_arm(values: np.ndarray) -> dict[str, float]:
    return {"n": int(values.size), "sum": float(values.sum()), "sum_squares": float(np.square(values).sum())}


def _ratio_arm(num: np.ndarray, den: np.ndarray) -> dict[str, float]:
    return {
        "n": int(num.size),
        "sum_num": float(num.sum()),
        "sum_den": float(den.sum()),
        "sum_num_sq": float(np.square(num).sum()),
        "sum_den_sq": float(np.square(den).sum()),
        "sum_num_den": float((num * den).sum()),
    }


def _cuped_arm(post: np.ndarray, pre: np.ndarray) -> dict[str, Any]:
    return {"post": _mean_arm(post), "pre": _mean_arm(pre), "sum_products": float((post * pre).sum())}


def _gb_stat(kind: str, arm: dict[str, Any]) -> Any:
    if kind == "mean":
        return SampleMeanStatistic(n=arm["n"], sum=arm["sum"], sum_squares=arm["sum_squares"])
    if kind == "proportion":
        return ProportionStatistic(n=arm["n"], sum=arm["sum"])
    if kind == "ratio":
        n = arm["n"]
        return RatioStatistic(
            n=n,
            m_statistic=SampleMeanStatistic(n=n, sum=arm["sum_num"], sum_squares=arm["sum_num_sq"]),
            d_statistic=SampleMeanStatistic(n=n, sum=arm["sum_den"], sum_squares=arm["sum_den_sq"]),
            m_d_sum_of_products=arm["sum_num_den"],
        )
    inner = "proportion" if kind == "cuped_proportion" else "mean"
    return RegressionAdjustedStatistic(
        n=arm["post"]["n"],
        post_statistic=_gb_stat(inner, arm["post"]),
        pre_statistic=_gb_stat(inner, arm["pre"]),
        post_pre_sum_of_products=arm["sum_products"],
        theta=0,
    )


def _data_sets(rng: np.random.Generator) -> list[tuple[str, str, dict[str, Any], dict[str, Any]]]:
    """(kind, label, control, treatment) inputs."""
    sets = []
    for label, (n_c, n_t, mu_c, mu_t, sd_c, sd_t) in {
        "mean_small": (12, 15, 10.0, 11.5, 3.0, 4.0),
        "mean_medium": (400, 380, 5.0, 5.3, 2.0, 2.5),
        "mean_large": (20000, 20500, 1.2, 1.21, 1.5, 1.5),
        "mean_negative_baseline": (300, 310, -5.0, -4.6, 2.0, 2.0),
    }.items():
        control = rng.normal(mu_c, sd_c, n_c)
        treatment = rng.normal(mu_t, sd_t, n_t)
        sets.append(("mean", label, _mean_arm(control), _mean_arm(treatment)))
    for label, (n_c, x_c, n_t, x_t) in {
        "proportion_small": (50, 7, 55, 12),
        "proportion_medium": (1000, 100, 1000, 130),
        "proportion_rare": (40000, 160, 39000, 190),
    }.items():
        sets.append(("proportion", label, {"n": n_c, "sum": x_c}, {"n": n_t, "sum": x_t}))
    for label, (n, rate_c, rate_t) in {
        "ratio_medium": (500, 2.0, 2.2),
        "ratio_large": (5000, 1.5, 1.45),
    }.items():
        arms = []
        for rate in (rate_c, rate_t):
            den = rng.poisson(3.0, n).astype(float) + 1
            num = rng.gamma(2.0, rate / 2.0, n) * den
            arms.append(_ratio_arm(num, den))
        sets.append(("ratio", label, arms[0], arms[1]))
    for label, (n_c, n_t, rho, lift) in {
        "cuped_mean_medium": (500, 520, 0.7, 0.15),
        "cuped_mean_large": (8000, 8100, 0.5, 0.02),
        "cuped_mean_weak": (300, 290, 0.1, 0.2),
    }.items():
        arms = []
        for n, shift in ((n_c, 0.0), (n_t, lift)):
            pre = rng.normal(10.0, 2.0, n)
            post = 10.0 + shift + rho * (pre - 10.0) + rng.normal(0, 2.0 * np.sqrt(1 - rho**2), n)
            arms.append(_cuped_arm(post, pre))
        sets.append(("cuped_mean", label, arms[0], arms[1]))
    for label, (n_c, n_t, base, lift) in {
        "cuped_proportion_medium": (2000, 2100, 0.2, 0.03),
        "cuped_proportion_large": (15000, 15200, 0.08, 0.006),
    }.items():
        arms = []
        for n, shift in ((n_c, 0.0), (n_t, lift)):
            pre = (rng.uniform(size=n) < base).astype(float)
            # the post outcome is likelier for subjects who converted before
            post = (rng.uniform(size=n) < base + shift + 0.35 * (pre - base)).astype(float)
            arms.append(_cuped_arm(post, pre))
        sets.append(("cuped_proportion", label, arms[0], arms[1]))
    return sets


def _run(
    kind: str, control: dict[str, Any], treatment: dict[str, Any], test: str, scale: str, alpha: float
) -> dict[str, Any]:
    stat_a, stat_b = _gb_stat(kind, control), _gb_stat(kind, treatment)
    theta = compute_theta(stat_a, stat_b) if kind.startswith("cuped") else None
    if test == "sequential":
        config = SequentialConfig(alpha=alpha, difference_type=scale, sequential_tuning_parameter=5000)
        result = SequentialTwoSidedTTest(stat_a, stat_b, config).compute_result()
    else:
        cls = {
            "two-sided": TwoSidedTTest,
            "greater": OneSidedTreatmentGreaterTTest,
            "less": OneSidedTreatmentLesserTTest,
        }[test]
        result = cls(stat_a, stat_b, FrequentistConfig(alpha=alpha, difference_type=scale)).compute_result()
    if result.error_message:
        raise RuntimeError(f"gbstats refused a case: {result.error_message}")
    out = {
        "estimate": float(result.expected),
        "std_error": float(result.uplift.stddev),
        "ci_lower": float(result.ci[0]),
        "ci_upper": float(result.ci[1]),
        "p_value": float(result.p_value),
    }
    if theta is not None:
        out["theta"] = float(theta)
    return out


def main() -> None:
    rng = np.random.default_rng(SEED)
    cases = []
    for kind, label, control, treatment in _data_sets(rng):
        tests = ["two-sided", "sequential"]
        if kind == "mean":
            tests += ["greater", "less"]
        for test in tests:
            for scale in ("absolute", "relative"):
                for alpha in (0.05, 0.1):
                    cases.append(
                        {
                            "name": f"{label}/{test}/{scale}/alpha={alpha}",
                            "kind": kind,
                            "test": test,
                            "scale": scale,
                            "alpha": alpha,
                            "sequential_tuning_n": 5000 if test == "sequential" else None,
                            "control": control,
                            "treatment": treatment,
                            "gbstats": _run(kind, control, treatment, test, scale, alpha),
                        }
                    )
    document = {
        "provenance": {
            "generated_by": "scripts/gbstats_table.py",
            "generated_at": datetime.now(UTC).isoformat(timespec="seconds"),
            "gbstats": version("gbstats"),
            "scipy": version("scipy"),
            "numpy": version("numpy"),
            "python": platform.python_version(),
            "seed": SEED,
            "notes": (
                "gbstats.frequentist.tests TwoSided/OneSided/SequentialTwoSided TTest on "
                "SampleMean/Proportion/Ratio/RegressionAdjusted statistics; relative results are "
                "fractions (0.1 = +10%); sequential_tuning_parameter 5000."
            ),
        },
        "cases": cases,
    }
    OUT.parent.mkdir(parents=True, exist_ok=True)
    OUT.write_text(json.dumps(document, indent=1, sort_keys=False) + "\n")
    print(f"wrote {len(cases)} cases to {OUT}", file=sys.stderr)


if __name__ == "__main__":
    main()
