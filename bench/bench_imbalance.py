"""Rare churn (about 4%): none / class weights / SMOTE, and randomized vs Optuna search at equal budget.

    .venv/bin/python bench/bench_imbalance.py [--rows 6000] [--repeat 3] [--iterations 4]

Data: the simulator with known churn probabilities (tests/learning/sim_behaviour.py), its churn
intercept lowered so that about 4% of snapshots churn. For every repeat (a new population and
new labels) `train_classifier` runs twice on the same rows, once per search strategy, each with
the same trial budget per candidate (`--iterations`), the same time-ordered CV folds and every
imbalance option (SMOTE forced on). Reported on the test window (the newest 20% of snapshots,
never used for any choice), averaged over the repeats:
  * per imbalance option: the test ROC AUC and PR AUC of that option's best candidate by
    validation PR AUC (randomized search), beside the true probabilities' AUC and PR AUC;
  * per search strategy: mean CV PR AUC of the chosen setting and the chosen model's test
    ROC AUC and PR AUC.
  ratio = PR AUC / the same figure without imbalance handling (or of the randomized search)
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np
from rich.console import Console
from rich.table import Table
from sklearn.metrics import average_precision_score, roc_auc_score

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "tests" / "learning"))
from sim_behaviour import simulate_population  # noqa: E402

from tacit.learning.classifiers import CANDIDATES, Task, TrainingConfig, train_classifier  # noqa: E402

OPTIONS = (("unweighted", "none"), ("balanced", "class weights"), ("smote", "SMOTE"))
CHURN_INTERCEPT = -5.0  # about 4% churn on the simulator's snapshots


def best_of_option(metrics: dict[str, float], option: str) -> tuple[float, float]:
    """Test (ROC AUC, PR AUC) of the option's candidate with the best validation PR AUC."""
    names = CANDIDATES[Task.CHURN]
    best = max(names, key=lambda n: metrics[f"candidates.{n}.{option}.validation_pr_auc"])
    prefix = f"candidates.{best}.{option}."
    return metrics[prefix + "test_roc_auc"], metrics[prefix + "test_pr_auc"]


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--rows", type=int, default=6000)
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--iterations", type=int, default=4, help="trial budget per candidate, both searches")
    parser.add_argument("--min-positives", type=int, default=20)
    args = parser.parse_args()

    by_option: dict[str, list[tuple[float, float]]] = {o: [] for o, _ in OPTIONS}
    by_search: dict[str, list[tuple[float, float, float]]] = {"randomized": [], "optuna": []}
    truth: list[tuple[float, float]] = []
    rates: list[float] = []
    seconds: dict[str, float] = {"randomized": 0.0, "optuna": 0.0}
    for repeat in range(args.repeat):
        population = simulate_population(args.rows, seed=100 + repeat, churn_intercept=CHURN_INTERCEPT)
        labels = population.labels("churn", seed=200 + repeat)
        rates.append(float(labels.mean()))
        for search in ("randomized", "optuna"):
            config = TrainingConfig(
                search=search,
                search_iterations=args.iterations,
                smote="always",
                min_positives=args.min_positives,
                min_evaluation_positives=max(2, args.min_positives // 4),
                random_state=repeat,
            )
            started = time.perf_counter()
            model = train_classifier(Task.CHURN, population.rows, labels, population.times, config)
            seconds[search] += time.perf_counter() - started
            metrics = dict(model.metrics)
            by_search[search].append((metrics["cv_pr_auc"], metrics["test_roc_auc"], metrics["test_pr_auc"]))
            if search == "randomized":
                for option, _ in OPTIONS:
                    by_option[option].append(best_of_option(metrics, option))
                test = np.arange(labels.size) >= labels.size - int(metrics["n_test"])
                p = population.churn_probability[test]
                truth.append(
                    (float(roc_auc_score(labels[test], p)), float(average_precision_score(labels[test], p)))
                )

    console = Console(width=140)
    console.print(
        f"rare churn: {args.rows} snapshots × {args.repeat} repeats, positives {np.mean(rates):.2%} "
        f"(min {min(rates):.2%}, max {max(rates):.2%}); candidates {', '.join(CANDIDATES[Task.CHURN])}; "
        f"{args.iterations} trials per candidate"
    )
    table = Table(title="imbalance handling (randomized search), test window, mean over repeats")
    for column in ("option", "test ROC AUC", "test PR AUC", "PR AUC ratio vs none"):
        table.add_column(column, justify="left" if column == "option" else "right")
    base = float(np.mean([pr for _, pr in by_option["unweighted"]]))
    for option, label in OPTIONS:
        auc = float(np.mean([a for a, _ in by_option[option]]))
        pr = float(np.mean([p for _, p in by_option[option]]))
        table.add_row(label, f"{auc:.4f}", f"{pr:.4f}", f"{pr / base:.3f}")
    table.add_row(
        "[italic]true probabilities[/italic]",
        f"{np.mean([a for a, _ in truth]):.4f}",
        f"{np.mean([p for _, p in truth]):.4f}",
        f"{np.mean([p for _, p in truth]) / base:.3f}",
    )
    console.print(table)
    table = Table(
        title=f"search at equal budget ({args.iterations} trials per candidate × option), mean over repeats"
    )
    for column in ("search", "CV PR AUC (chosen)", "test ROC AUC", "test PR AUC", "PR AUC ratio", "seconds"):
        table.add_column(column, justify="left" if column == "search" else "right")
    reference = float(np.mean([r[2] for r in by_search["randomized"]]))
    for search, rows in by_search.items():
        cv, auc, pr = (float(np.mean([r[i] for r in rows])) for i in range(3))
        table.add_row(
            search, f"{cv:.4f}", f"{auc:.4f}", f"{pr:.4f}", f"{pr / reference:.3f}", f"{seconds[search]:.1f}"
        )
    console.print(table)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
