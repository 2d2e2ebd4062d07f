"""`tacit experiment …` drives ExperimentService over gRPC and prints a readable report."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest

from tacit.cli import main
from tests.conftest import ServerHandle


def test_cli_creates_steers_and_reports(
    start_server: Callable[..., ServerHandle], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    handle = start_server(learner={"enabled": False})
    base = ["experiment", "--target", handle.target, "--data-dir", str(handle.data_dir)]
    create = [
        "create", "cli-exp", "--slot", "home",
        "--arm", "control:static:first:0.5", "--arm", "treatment:uniform:0.5",
        "--primary", "click_through", "--guardrail", "conversion:0.05",
        "--stage", "10:100", "--stage", "50:200:3600", "--stage", "100",
    ]  # fmt: skip
    assert main(base + create) == 0
    assert '"name": "experiments/cli-exp"' in capsys.readouterr().out
    assert main(base + ["start", "cli-exp", "--reason", "go"]) == 0
    assert "EXPERIMENT_STATE_RUNNING" in capsys.readouterr().out
    handle.running.runtime.experiments.evaluate_running()
    chart = tmp_path / "cli.png"
    assert main(base + ["report", "cli-exp", "--chart", str(chart)]) == 0
    out = capsys.readouterr().out
    assert "click_through" in out and "always-valid p" in out and "CONTINUE" in out
    assert chart.read_bytes()[:4] == b"\x89PNG"
    assert main(base + ["advance", "cli-exp"]) == 1
    assert "FAILED_PRECONDITION" in capsys.readouterr().err
    assert main(base + ["list"]) == 0
    assert "cli-exp" in capsys.readouterr().out
    assert main(base + ["history", "cli-exp"]) == 0
    assert '"action": "start"' in capsys.readouterr().out
    bad = create[:]
    bad[bad.index("100")] = "40"
    bad[1] = "cli-bad"
    assert main(base + bad) == 1
    assert "INVALID_ARGUMENT" in capsys.readouterr().err


def test_cli_creates_a_cuped_experiment_and_prints_both_lifts(
    start_server: Callable[..., ServerHandle], capsys: pytest.CaptureFixture[str]
) -> None:
    handle = start_server(learner={"enabled": False})
    base = ["experiment", "--target", handle.target, "--data-dir", str(handle.data_dir)]
    create = [
        "create", "cli-cuped", "--slot", "home",
        "--arm", "control:static:first:0.5", "--arm", "treatment:uniform:0.5",
        "--primary", "conversion", "--cuped", "conversion:14", "--stage", "100",
    ]  # fmt: skip
    assert main(base + create) == 0
    out = capsys.readouterr().out
    assert '"metric": "conversion"' in out and '"lookback_seconds": "1209600"' in out
    assert main(base + ["start", "cli-cuped"]) == 0
    capsys.readouterr()
    assert main(base + ["report", "cli-cuped"]) == 0
    out = capsys.readouterr().out
    assert "CUPED conversion: adjusted lift n/a [n/a, n/a] p=n/a; unadjusted n/a [n/a, n/a]" in out
    assert "variance reduction n/a" in out
    bad = [*create[:-4], "--cuped", "conversion:x", "--stage", "100"]
    bad[1] = "cli-bad"
    with pytest.raises(SystemExit):
        main(base + bad)
    assert "--cuped must be METRIC:DAYS" in capsys.readouterr().err
