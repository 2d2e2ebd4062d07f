"""`tacit metric …`: a gRPC client of MetricService with the experimenter's token.

    tacit metric create bounce_rate_home --event page_view --aggregation single \\
        --denominator-event page_view --denominator-aggregation any --lower-is-better
    tacit metric create order_value --event conversion --aggregation sum --property value \\
        --window-seconds 86400 --cap-upper 500
    tacit metric list
    tacit metric show order_value [--version 1]
"""

from __future__ import annotations

import argparse
import sys

import grpc

from tacit.cli.experiment import add_connection_arguments, connect, print_message
from tacit.v1 import metric_pb2, metric_pb2_grpc

AGGREGATIONS = {
    name.removeprefix("METRIC_AGGREGATION_").lower(): value
    for name, value in metric_pb2.MetricAggregation.items()
    if value != metric_pb2.METRIC_AGGREGATION_UNSPECIFIED
}


def _side(
    events: list[str], aggregation: str, prop: str, quantile: float, scale: float
) -> metric_pb2.MetricSide:
    return metric_pb2.MetricSide(
        event_types=events,
        aggregation=AGGREGATIONS[aggregation],
        property=prop,
        quantile=quantile,
        scale=scale,
    )


def _metric(args: argparse.Namespace) -> metric_pb2.Metric:
    metric = metric_pb2.Metric(
        name=args.name,
        value=_side(args.event, args.aggregation, args.property, args.quantile, args.scale),
        window_seconds=args.window_seconds,
        direction=metric_pb2.METRIC_DIRECTION_LOWER_IS_BETTER
        if args.lower_is_better
        else metric_pb2.METRIC_DIRECTION_HIGHER_IS_BETTER,
        description=args.description,
    )
    if args.denominator_event:
        metric.denominator.CopyFrom(
            _side(args.denominator_event, args.denominator_aggregation, args.denominator_property, 0.0, 1.0)
        )
    if args.cap_lower is not None:
        metric.cap_lower = args.cap_lower
    if args.cap_upper is not None:
        metric.cap_upper = args.cap_upper
    return metric


def cmd_metric(args: argparse.Namespace) -> int:
    metadata, channel = connect(args)
    stub = metric_pb2_grpc.MetricServiceStub(channel)
    try:
        if args.metric_command == "create":
            request = metric_pb2.CreateMetricRequest(metric=_metric(args), request_id=args.request_id or "")
            print_message(stub.CreateMetric(request, metadata=metadata))
        elif args.metric_command == "show":
            request = metric_pb2.GetMetricRequest(name=f"metrics/{args.name}", version=args.version)
            print_message(stub.GetMetric(request, metadata=metadata))
        else:
            token = ""
            while True:
                page = stub.ListMetrics(metric_pb2.ListMetricsRequest(page_token=token), metadata=metadata)
                for metric in page.metrics:
                    kind = (
                        "ratio"
                        if metric.HasField("denominator")
                        else metric_pb2.MetricAggregation.Name(metric.value.aggregation)
                        .removeprefix("METRIC_AGGREGATION_")
                        .lower()
                    )
                    origin = "built-in" if metric.builtin else "defined"
                    print(f"{metric.name}\tv{metric.version}\t{kind}\t{origin}\t{metric.description}")
                token = page.next_page_token
                if not token:
                    break
    except grpc.RpcError as error:
        print(f"tacit: {error.code().name}: {error.details()}", file=sys.stderr)
        return 1
    finally:
        channel.close()
    return 0


def register(sub: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    """Adds `tacit metric …` to the top-level parser."""
    metric = sub.add_parser("metric", help="define, list and show experiment metrics (versioned)")
    add_connection_arguments(metric)
    metric.set_defaults(func=cmd_metric)
    verbs = metric.add_subparsers(dest="metric_command", required=True)

    create = verbs.add_parser("create", help="define a metric (a new version when the name exists)")
    create.add_argument("name")
    create.add_argument("--event", action="append", required=True, help="event type; repeat for several")
    create.add_argument("--aggregation", choices=sorted(AGGREGATIONS), required=True)
    create.add_argument("--property", default="", help="numeric event property (sum, mean, max, quantile)")
    create.add_argument("--quantile", type=float, default=0.0, help="for --aggregation quantile, in (0, 1]")
    create.add_argument("--scale", type=float, default=1.0, help="multiplies each property value")
    create.add_argument("--denominator-event", action="append", default=None, help="makes a ratio metric")
    create.add_argument("--denominator-aggregation", choices=sorted(AGGREGATIONS), default="count")
    create.add_argument("--denominator-property", default="")
    create.add_argument("--window-seconds", type=float, default=0.0, help="0: the server's conversion window")
    create.add_argument("--lower-is-better", action="store_true")
    create.add_argument("--cap-lower", type=float, default=None)
    create.add_argument("--cap-upper", type=float, default=None)
    create.add_argument("--description", default="")
    create.add_argument("--request-id", default=None)

    show = verbs.add_parser("show", help="one metric definition")
    show.add_argument("name")
    show.add_argument("--version", type=int, default=0, help="0: the newest")

    verbs.add_parser("list", help="the newest version of every metric")
