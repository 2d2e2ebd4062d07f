"""`tacit experiment …`: a gRPC client of ExperimentService with the experimenter's token.

    tacit experiment create exp-1 --slot home --arm control:static:first:0.5 \\
        --arm treatment:bandit:0.5 --primary click_through --guardrail conversion:0.02 \\
        --guardrail dwell_time:5:absolute \\
        --stage 1:1000:86400 --stage 5:1000 --stage 25 --stage 50 --stage 100 --auto-advance \\
        --traffic 0:50
    tacit experiment start exp-1 [--force]   # --force: past the offline (off-policy) gate
    tacit experiment report exp-1 --chart exp-1.png
"""

from __future__ import annotations

import argparse
import json
import math
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import grpc
from google.protobuf.json_format import MessageToDict

from tacit.server.auth import Role, read_token
from tacit.v1 import experiment_pb2, experiment_pb2_grpc

ACTIONS = ("start", "advance", "pause", "rollback", "conclude")


def _arm(text: str) -> experiment_pb2.Arm:
    """NAME:POLICY:WEIGHT, the policy may itself contain ':' (static:first)."""
    name, _, rest = text.partition(":")
    policy, _, weight = rest.rpartition(":")
    try:
        return experiment_pb2.Arm(name=name, policy=policy, weight=float(weight))
    except ValueError:
        raise argparse.ArgumentTypeError(
            "--arm must be NAME:POLICY:WEIGHT, e.g. control:static:first:0.5"
        ) from None


def _stage(text: str) -> experiment_pb2.Stage:
    """PERCENT[:MIN_SAMPLE[:MIN_DURATION_SECONDS]]."""
    parts = text.split(":")
    try:
        return experiment_pb2.Stage(
            percent=float(parts[0]),
            min_sample=int(parts[1]) if len(parts) > 1 else 0,
            min_duration_seconds=int(parts[2]) if len(parts) > 2 else 0,
        )
    except (ValueError, IndexError):
        raise argparse.ArgumentTypeError("--stage must be PERCENT[:MIN_SAMPLE[:MIN_SECONDS]]") from None


def _traffic(text: str) -> tuple[float, float]:
    """START:END, the slot traffic range [START, END) in percent (e.g. 0:50)."""
    start, sep, end = text.partition(":")
    try:
        if not sep:
            raise ValueError(text)
        return float(start), float(end)
    except ValueError:
        raise argparse.ArgumentTypeError(
            "--traffic must be START:END in percent of the slot, e.g. 0:50 (the range [0, 50))"
        ) from None


_TOLERANCE_KINDS = {
    "relative": experiment_pb2.TOLERANCE_KIND_RELATIVE,
    "absolute": experiment_pb2.TOLERANCE_KIND_ABSOLUTE,
}


def _covariate(text: str) -> experiment_pb2.Covariate:
    """METRIC:DAYS — CUPED with the metric over DAYS before each subject's first exposure."""
    metric, _, days = text.partition(":")
    try:
        seconds = round(float(days) * 86400)
    except ValueError:
        raise argparse.ArgumentTypeError("--cuped must be METRIC:DAYS, e.g. conversion:14") from None
    return experiment_pb2.Covariate(metric=metric, lookback_seconds=seconds)


def _guardrail(text: str) -> experiment_pb2.Guardrail:
    """METRIC:TOLERANCE[:relative|absolute]; relative (0.02 = 2 %) unless told otherwise."""
    metric, _, rest = text.partition(":")
    tolerance, _, kind = rest.partition(":")
    try:
        return experiment_pb2.Guardrail(
            metric=metric,
            tolerance=float(tolerance),
            tolerance_kind=_TOLERANCE_KINDS[kind.strip().lower() or "relative"],
        )
    except (ValueError, KeyError):
        raise argparse.ArgumentTypeError(
            "--guardrail must be METRIC:TOLERANCE[:absolute], e.g. conversion:0.02 (2 % of control) "
            "or conversion:0.01:absolute (1 percentage point)"
        ) from None


def connect(args: argparse.Namespace) -> tuple[Any, grpc.Channel]:
    """The experimenter's call metadata (token from --token-file or <data-dir>) and a channel to --target."""
    token_file = args.token_file or Path(args.data_dir) / "tokens.json"
    token = read_token(Path(token_file), Role.EXPERIMENTER)
    return (("authorization", f"Bearer {token}"),), grpc.insecure_channel(args.target)


def _stub(args: argparse.Namespace) -> tuple[experiment_pb2_grpc.ExperimentServiceStub, Any, grpc.Channel]:
    metadata, channel = connect(args)
    return experiment_pb2_grpc.ExperimentServiceStub(channel), metadata, channel


def _name(experiment_id: str) -> str:
    return experiment_id if experiment_id.startswith("experiments/") else f"experiments/{experiment_id}"


def print_message(message: Any) -> None:
    print(json.dumps(MessageToDict(message, preserving_proto_field_name=True), indent=2))


def _fmt(value: float, percent: bool = False) -> str:
    if not math.isfinite(value):
        return "n/a"
    return f"{value * 100:+.2f}%" if percent else f"{value:.4g}"


def print_report(report: experiment_pb2.ExperimentReport) -> None:
    from rich.console import Console
    from rich.markup import escape
    from rich.table import Table

    console = Console()
    state = experiment_pb2.ExperimentState.Name(report.state).removeprefix("EXPERIMENT_STATE_").lower()
    counts = ", ".join(f"{c.arm}={c.subjects}" for c in report.arm_counts)
    console.print(
        f"[bold]{report.name}[/bold]  state {state}, stage {report.stage_index + 1} "
        f"({report.exposure_percent:g}%), subjects {counts}, SRM p={_fmt(report.srm_p_value)}"
    )
    table = Table(show_lines=False)
    for column in (
        "metric",
        "role",
        "control",
        "treatment",
        "lift",
        "95% CI",
        "p (of CI)",
        "always-valid p",
        "adj. p",
        "guardrail",
    ):
        table.add_column(column, justify="left" if column in ("metric", "role") else "right")
    for m in report.metrics:
        guard = "HARMED" if m.harmed else "cleared" if m.cleared else "-" if not m.guardrail else "pending"
        table.add_row(
            m.metric,
            m.role,
            _fmt(m.control_mean),
            _fmt(m.treatment_mean),
            _fmt(m.relative_lift, True),
            escape(f"[{_fmt(m.ci_low, True)}, {_fmt(m.ci_high, True)}]"),
            _fmt(m.p_value),
            _fmt(m.always_valid_p_value),
            _fmt(m.adjusted_p_value),
            guard,
        )
    console.print(table)
    for m in report.metrics:
        if m.cuped:
            line = (
                f"CUPED {m.metric}: adjusted lift {_fmt(m.relative_lift, True)} "
                f"[{_fmt(m.ci_low, True)}, {_fmt(m.ci_high, True)}] p={_fmt(m.p_value)}; unadjusted "
                f"{_fmt(m.unadjusted_relative_lift, True)} [{_fmt(m.unadjusted_ci_low, True)}, "
                f"{_fmt(m.unadjusted_ci_high, True)}] p={_fmt(m.unadjusted_p_value)}; variance "
                f"reduction {_fmt(m.variance_reduction, True)} (theta {_fmt(m.cuped_theta)})"
            )
            console.print(escape(line), soft_wrap=True)
    console.print(f"[bold]recommended:[/bold] {report.recommended_action}")
    console.print(report.summary)


def cmd_experiment(args: argparse.Namespace) -> int:
    stub, metadata, channel = _stub(args)
    try:
        return _run(args, stub, metadata)
    except grpc.RpcError as error:
        print(f"tacit: {error.code().name}: {error.details()}", file=sys.stderr)
        return 1
    finally:
        channel.close()


def _run(args: argparse.Namespace, stub: experiment_pb2_grpc.ExperimentServiceStub, metadata: Any) -> int:
    verb = args.experiment_command
    if verb == "create":
        experiment = experiment_pb2.Experiment(
            slot=args.slot,
            arms=args.arm,
            primary_metric=args.primary,
            secondary_metrics=args.secondary,
            guardrails=args.guardrail,
            stages=args.stage,
            auto_advance=args.auto_advance,
            control_arm=args.control or "",
            covariates=args.cuped,
        )
        if args.traffic is not None:
            experiment.traffic_start, experiment.traffic_end = args.traffic
        for arm in experiment.arms:
            arm.learn_from_all_decisions = arm.name in args.learn_from_all
        request = experiment_pb2.CreateExperimentRequest(
            experiment_id=args.id, experiment=experiment, request_id=args.request_id or ""
        )
        print_message(stub.CreateExperiment(request, metadata=metadata))
    elif verb == "get":
        print_message(
            stub.GetExperiment(experiment_pb2.GetExperimentRequest(name=_name(args.id)), metadata=metadata)
        )
    elif verb == "list":
        listing = experiment_pb2.ListExperimentsRequest(
            page_size=args.page_size, page_token=args.page_token or "", slot=args.slot or ""
        )
        print_message(stub.ListExperiments(listing, metadata=metadata))
    elif verb in ACTIONS:
        method: Callable[..., experiment_pb2.Experiment] = getattr(stub, f"{verb.capitalize()}Experiment")
        action = experiment_pb2.ExperimentActionRequest(
            name=_name(args.id),
            reason=args.reason or "",
            request_id=args.request_id or "",
            force=bool(getattr(args, "force", False)),
        )
        print_message(method(action, metadata=metadata))
    elif verb == "report":
        report = stub.GetExperimentReport(
            experiment_pb2.GetExperimentReportRequest(name=_name(args.id)), metadata=metadata
        )
        print_report(report)
        if args.chart:
            _chart(stub, metadata, args.id, Path(args.chart))
            print(f"chart written to {args.chart}")
    elif verb == "history":
        for change in _history(stub, metadata, args.id, include_evaluations=args.evaluations):
            print_message(change)
    return 0


def _history(
    stub: experiment_pb2_grpc.ExperimentServiceStub,
    metadata: Any,
    experiment_id: str,
    include_evaluations: bool,
) -> list[experiment_pb2.ExperimentChange]:
    changes: list[experiment_pb2.ExperimentChange] = []
    token = ""
    while True:
        page = stub.ListExperimentChanges(
            experiment_pb2.ListExperimentChangesRequest(
                name=_name(experiment_id),
                page_size=1000,
                page_token=token,
                include_evaluations=include_evaluations,
            ),
            metadata=metadata,
        )
        changes += list(page.changes)
        token = page.next_page_token
        if not token:
            return changes


def _chart(
    stub: experiment_pb2_grpc.ExperimentServiceStub, metadata: Any, experiment_id: str, path: Path
) -> None:
    from tacit.experiments.report import render_chart
    from tacit.server.converters.experiment import change_from_proto

    changes = _history(stub, metadata, experiment_id, include_evaluations=True)
    render_chart([change_from_proto(change) for change in changes], path)


def add_connection_arguments(parser: argparse.ArgumentParser) -> None:
    """--target, --data-dir and --token-file: what `connect` reads."""
    parser.add_argument("--target", default="127.0.0.1:50051", help="server address")
    parser.add_argument("--data-dir", type=Path, default=Path("tacit-data"))
    parser.add_argument("--token-file", type=Path, default=None, help="default: <data-dir>/tokens.json")


def register(sub: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    """Adds `tacit experiment …` to the top-level parser."""
    experiment = sub.add_parser("experiment", help="create, steer and report controlled rollouts")
    add_connection_arguments(experiment)
    experiment.set_defaults(func=cmd_experiment)
    verbs = experiment.add_subparsers(dest="experiment_command", required=True)

    create = verbs.add_parser("create", help="define a draft experiment")
    create.add_argument("id")
    create.add_argument("--slot", required=True)
    create.add_argument("--arm", type=_arm, action="append", required=True, help="NAME:POLICY:WEIGHT")
    create.add_argument("--control", default=None, help="control arm (default: the first)")
    create.add_argument(
        "--learn-from-all",
        action="append",
        default=[],
        metavar="ARM",
        help="this bandit:<config> arm learns from every decision of the slot (importance-weighted)",
    )
    create.add_argument("--primary", required=True, help="primary metric")
    create.add_argument("--secondary", action="append", default=[])
    create.add_argument(
        "--guardrail",
        type=_guardrail,
        action="append",
        default=[],
        help="METRIC:TOLERANCE[:absolute]; the tolerance is relative (0.02 = 2%% of control) "
        "unless ':absolute' (metric units)",
    )
    create.add_argument(
        "--stage", type=_stage, action="append", required=True, help="PERCENT[:MIN_N[:SECONDS]]"
    )
    create.add_argument("--auto-advance", action="store_true")
    create.add_argument(
        "--cuped",
        type=_covariate,
        action="append",
        default=[],
        help="METRIC:DAYS, analyse METRIC with CUPED, its covariate the same metric over DAYS "
        "before each subject's first exposure (conversion, dwell_time)",
    )
    create.add_argument(
        "--traffic",
        type=_traffic,
        default=None,
        help="START:END, the experiment's share [START, END) of the slot's subjects in percent; "
        "experiments on one slot need disjoint ranges (default: the whole slot, 0:100)",
    )
    create.add_argument("--request-id", default=None)

    get = verbs.add_parser("get", help="show one experiment")
    get.add_argument("id")
    listing = verbs.add_parser("list", help="list experiments")
    listing.add_argument("--slot", default=None)
    listing.add_argument("--page-size", type=int, default=50)
    listing.add_argument("--page-token", default=None)
    for verb in ACTIONS:
        action = verbs.add_parser(verb, help=f"{verb} an experiment")
        action.add_argument("id")
        action.add_argument("--reason", default=None)
        action.add_argument("--request-id", default=None)
        if verb == "start":
            action.add_argument(
                "--force",
                action="store_true",
                help="start even though the offline gate refuses an arm (an arm whose off-policy "
                "lower bound is below control's by more than the tightest guardrail tolerance); "
                "the override is recorded in the experiment's history",
            )
    report = verbs.add_parser("report", help="significance report (table) and optional chart")
    report.add_argument("id")
    report.add_argument("--chart", default=None, help="write a PNG of lift over time")
    history = verbs.add_parser("history", help="stored state changes with their numbers")
    history.add_argument("id")
    history.add_argument("--evaluations", action="store_true", help="include periodic evaluations")
