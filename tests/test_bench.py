"""Every script in bench/ still runs (with a tiny count); its figures are not asserted here."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

BENCH = Path(__file__).resolve().parent.parent / "bench"

TINY = {
    "bench_rank.py": ["--requests", "30", "--threads", "2", "--workers", "2"],
    "bench_catalogue.py": ["--requests", "30", "--rounds", "1", "--threads", "2"],
    "bench_privacy.py": ["--events", "50", "--texts", "10", "--repeat", "1", "--bare-events", "10"],
    "bench_predict.py": ["--requests", "20", "--subjects", "120", "--days", "30"],
    "bench_report.py": ["--subjects", "2000", "--events", "10000"],
    "bench_imbalance.py": ["--rows", "1500", "--repeat", "1", "--iterations", "1", "--min-positives", "8"],
    "bench_explain.py": ["--decisions", "200", "--candidates", "5", "--sample", "100"],
}


def test_every_bench_script_has_a_tiny_run() -> None:
    assert sorted(p.name for p in BENCH.glob("bench_*.py")) == sorted(TINY)


@pytest.mark.parametrize("script", sorted(TINY))
def test_bench_script_runs_to_the_end(script: str, tmp_path: Path) -> None:
    done = subprocess.run(
        [sys.executable, str(BENCH / script), *TINY[script]],
        cwd=tmp_path, capture_output=True, text=True, timeout=600,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    assert "ratio" in done.stdout.lower(), done.stdout[-2000:]
