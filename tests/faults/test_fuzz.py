"""Hypothesis fuzz over every request message of every RPC, and over raw wire bytes.

One real server per test (hostile messages on SQLite and PostgreSQL, raw bytes on
SQLite). The RPCs are enumerated from the descriptors of `tacit.v1`, so a new RPC is
fuzzed without touching this file; requests are built from the message descriptor by one
generic strategy (`message_strategy`) that fills every field with hostile values, alone
or written over a valid baseline request. The properties:

- never INTERNAL or UNKNOWN, never DEADLINE_EXCEEDED within a generous deadline (a hang),
  only the statuses listed per case below;
- an INVALID_ARGUMENT carries a BadRequest field violation naming a field;
- no error (message or trailing details) echoes the sentinel planted in string fields;
- health Check still answers SERVING afterwards, and the process's resident memory grew
  by less than `MAX_RSS_GROWTH_MB` (peak and final) over the fuzz.

Run with `-s` to see the counts by status per service and in total.
"""

from __future__ import annotations

import gc
import importlib
import math
import os
import pkgutil
import tracemalloc
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import grpc
import pytest
from google.protobuf import descriptor, json_format, message, message_factory
from google.rpc import error_details_pb2, status_pb2
from grpc_health.v1 import health_pb2, health_pb2_grpc
from hypothesis import HealthCheck, Phase, given, settings
from hypothesis import strategies as st

import tacit.v1
from tacit.server.auth import Role, required_roles

FieldDescriptor = descriptor.FieldDescriptor

# Planted in string fields; it matches the id, slot, feature-name and experiment-id
# patterns, so it gets past the first checks and reaches the deeper ones.
SENTINEL = "zqsentinelq7"
CALL_TIMEOUT = 20.0
MAX_RSS_GROWTH_MB = 300
# Per RPC; TACIT_FUZZ_EXAMPLES scales both for a longer local run.
MESSAGE_EXAMPLES = int(os.environ.get("TACIT_FUZZ_EXAMPLES", "100"))
BYTES_EXAMPLES = MESSAGE_EXAMPLES * 3 // 4
MAX_DEPTH = 4

# A hang shows as DEADLINE_EXCEEDED; INTERNAL and UNKNOWN are bugs. Everything else a
# hostile but authenticated caller may see:
# - OK: hostile is not always invalid (an empty List, an unknown enum ignored ...);
# - INVALID_ARGUMENT: the request is bad (the common case);
# - NOT_FOUND: a well-formed name (slot, experiment, model, event id) that does not exist;
# - FAILED_PRECONDITION: a valid request in the wrong state (experiment transitions,
#   no model trained yet, not enough decisions to evaluate or report drift);
# - ALREADY_EXISTS: a CreateExperiment whose id an earlier example created, a reused request id;
# - RESOURCE_EXHAUSTED: the anonymization cost budget or the stream budget.
MESSAGE_ALLOWED = frozenset(
    {
        grpc.StatusCode.OK,
        grpc.StatusCode.INVALID_ARGUMENT,
        grpc.StatusCode.NOT_FOUND,
        grpc.StatusCode.FAILED_PRECONDITION,
        grpc.StatusCode.ALREADY_EXISTS,
        grpc.StatusCode.RESOURCE_EXHAUSTED,
    }
)
# Raw bytes, per case:
# - with the right token, bytes that do not parse as the request type: INVALID_ARGUMENT with
#   reason MALFORMED_REQUEST and nothing else (the handler never sees them);
# - with the right token, bytes that parse: a hostile message like any other (above);
# - with no token, an unknown one, another scheme or another role's: UNAUTHENTICATED or
#   PERMISSION_DENIED from the auth interceptor before anything parses (RPCs every role may call
#   have no wrong role, so those examples may meet any answer above).
MALFORMED_ALLOWED = frozenset({grpc.StatusCode.INVALID_ARGUMENT})
BYTES_ALLOWED = MESSAGE_ALLOWED | {grpc.StatusCode.PERMISSION_DENIED, grpc.StatusCode.UNAUTHENTICATED}

FUZZ_SETTINGS = settings(
    deadline=None,
    derandomize=True,
    database=None,
    phases=(Phase.explicit, Phase.generate),
    suppress_health_check=list(HealthCheck),
)


@dataclass(frozen=True)
class Rpc:
    service: str
    name: str
    path: str
    request_class: type[message.Message]
    server_streaming: bool
    client_streaming: bool


def tacit_rpcs() -> list[Rpc]:
    """Every RPC of every service in the generated `tacit.v1` modules."""
    rpcs = []
    for module_info in pkgutil.iter_modules(tacit.v1.__path__):
        if not module_info.name.endswith("_pb2"):
            continue
        module = importlib.import_module(f"tacit.v1.{module_info.name}")
        for service in module.DESCRIPTOR.services_by_name.values():
            for method in service.methods:
                rpcs.append(
                    Rpc(
                        service=service.name,
                        name=method.name,
                        path=f"/{service.full_name}/{method.name}",
                        request_class=message_factory.GetMessageClass(method.input_type),
                        server_streaming=method.server_streaming,
                        client_streaming=method.client_streaming,
                    )
                )
    return sorted(rpcs, key=lambda rpc: rpc.path)


RPCS = tacit_rpcs()


def role_for(path: str) -> Role:
    """The least privileged role allowed to call `path`."""
    roles = required_roles(path)
    if roles is None:
        return Role.SERVICE
    return sorted(roles, key=lambda role: (role is Role.ADMIN, role.value))[0]


# ---------------------------------------------------------------- strategies

# Values a real client would send somewhere in the API: they get hostile requests past
# the first checks so the fuzz reaches the deeper code.
PLAUSIBLE_TEXT = [
    "home",
    "conversion",
    "churn",
    "bandit:home",
    "uniform",
    "static:first",
    "bandit:default",
    "vw:--cb_explore_adf --epsilon 0.1",
    "experiments/exp-1",
    "exp-1",
    "models/conversion/versions/1",
    "page_view",
    "click",
    "custom",
    "reward",
    "device",
    "title",
    "search_query",
    "abcdefgh1234",
    "a1b2c3d4-e5f6-4711-8899-aabbccddeeff",
    "control",
    "treatment",
]
SENTINEL_TEXT = [
    SENTINEL,
    f"experiments/{SENTINEL}",
    f"bandit:{SENTINEL}",
    f"models/{SENTINEL}/versions/1",
    f"models/bandit:home/versions/{SENTINEL}",
    f"vw:--{SENTINEL}",
    f"vw:--cb_explore_adf -q {SENTINEL}",
    f"model:{SENTINEL}",
    f"static:{SENTINEL}",
    f"{SENTINEL} call 555-123-4567 or mail a.b@example.com",
    f'{{"seq": 1, "x": "{SENTINEL}"}}',
    SENTINEL * 200,
]
ODD_TEXT = [
    "",
    " ",
    "\x00",
    "\x00" * 9,
    "\u202e\u200b\ufeff",
    "e\u0301" * 50,
    "\U0001f600" * 40,
    "١٢٣٤٥٦٧٨٩٠١٢",  # Arabic-Indic digits
    "ＡＢＣＤＥＦＧＨ",  # fullwidth
    "../../etc/passwd",
    "'; DROP TABLE decisions; --",
    "%s%n%x{0}",
    "\r\n\t",
]


def text_strategy(small: bool) -> st.SearchStrategy[str]:
    """Plausible, sentinel-bearing, odd and random text; long text (up to 100,001 characters)
    unless `small` (inside a big list or map, where the product would only cost the client memory)."""
    lengths = [63, 64, 65, 128, 129] if small else [63, 64, 65, 128, 129, 2_048, 2_049, 5_000, 100_001]
    long_lengths = st.sampled_from(lengths)
    return st.one_of(
        st.sampled_from(PLAUSIBLE_TEXT),
        st.sampled_from(SENTINEL_TEXT),
        st.sampled_from(ODD_TEXT),
        st.text(max_size=30),
        st.text(max_size=10).map(lambda text: text + SENTINEL),
        st.tuples(st.sampled_from(["a", "é", "\x01", "9"]), long_lengths).map(lambda p: p[0] * p[1]),
        long_lengths.map(lambda n: SENTINEL + "x" * n),
    )


def float_strategy() -> st.SearchStrategy[float]:
    return st.one_of(
        st.sampled_from([0.0, -0.0, 0.5, 1.0, -1.0, 1e308, -1e308, 5e-324, math.inf, -math.inf, math.nan]),
        st.floats(allow_nan=True, allow_infinity=True),
    )


def int_strategy(bits: int, signed: bool) -> st.SearchStrategy[int]:
    low, high = (-(2 ** (bits - 1)), 2 ** (bits - 1) - 1) if signed else (0, 2**bits - 1)
    edges = sorted({low, high, 0, 1, -1 if signed else 2, 100, 1_000, 1_001, 10_001})
    return st.one_of(st.sampled_from([e for e in edges if low <= e <= high]), st.integers(low, high))


INT_TYPES = {
    FieldDescriptor.TYPE_INT32: (32, True),
    FieldDescriptor.TYPE_SINT32: (32, True),
    FieldDescriptor.TYPE_SFIXED32: (32, True),
    FieldDescriptor.TYPE_INT64: (64, True),
    FieldDescriptor.TYPE_SINT64: (64, True),
    FieldDescriptor.TYPE_SFIXED64: (64, True),
    FieldDescriptor.TYPE_UINT32: (32, False),
    FieldDescriptor.TYPE_FIXED32: (32, False),
    FieldDescriptor.TYPE_UINT64: (64, False),
    FieldDescriptor.TYPE_FIXED64: (64, False),
}

# google.protobuf.Timestamp: valid from 0001-01-01 to 9999-12-31; beyond both ends too.
TIMESTAMP_SECONDS = [
    -(2**63),
    -62_135_596_801,
    -62_135_596_800,
    -1,
    0,
    1_700_000_000,
    4_102_444_800,
    253_402_300_799,
    253_402_300_800,
    2**63 - 1,
]
TIMESTAMP_NANOS = [-1, 0, 500, 999_999_999, 1_000_000_000, 2**31 - 1, -(2**31)]


def timestamp_strategy(message_class: type[message.Message]) -> st.SearchStrategy[message.Message]:
    return st.builds(
        lambda seconds, nanos: message_class(seconds=seconds, nanos=nanos),
        st.one_of(st.sampled_from(TIMESTAMP_SECONDS), st.integers(-(2**63), 2**63 - 1)),
        st.one_of(st.sampled_from(TIMESTAMP_NANOS), st.integers(-(2**31), 2**31 - 1)),
    )


def scalar_strategy(field: FieldDescriptor, small: bool) -> st.SearchStrategy[Any]:
    kind = field.type
    if kind == FieldDescriptor.TYPE_STRING:
        return text_strategy(small)
    if kind == FieldDescriptor.TYPE_BYTES:
        return st.binary(max_size=64)
    if kind in (FieldDescriptor.TYPE_DOUBLE, FieldDescriptor.TYPE_FLOAT):
        return float_strategy()
    if kind == FieldDescriptor.TYPE_BOOL:
        return st.booleans()
    if kind == FieldDescriptor.TYPE_ENUM:
        known = [value.number for value in field.enum_type.values]
        return st.one_of(st.sampled_from(known), int_strategy(32, True))  # open enums: unknown numbers too
    bits, signed = INT_TYPES[kind]
    return int_strategy(bits, signed)


def repeated_strategy(field: FieldDescriptor, depth: int, small: bool) -> st.SearchStrategy[list[Any]]:
    """Mostly short lists; unless `small`, sometimes one small element repeated up to and beyond
    the documented limits (32 experiment items, 200 candidates, 500 events)."""
    short = st.lists(field_strategy(field, depth, small), max_size=4)
    if small:
        return short
    sizes = st.sampled_from([32, 33, 65, 200, 201, 500, 501, 2_000])
    big = st.tuples(field_strategy(field, depth, True), sizes).map(lambda p: [p[0]] * p[1])
    return st.one_of(short, big)


def is_map(field: FieldDescriptor) -> bool:
    return field.type == FieldDescriptor.TYPE_MESSAGE and field.message_type.GetOptions().map_entry


def map_strategy(field: FieldDescriptor, depth: int, small: bool) -> st.SearchStrategy[dict[Any, Any]]:
    entry = field.message_type
    keys = field_strategy(entry.fields_by_name["key"], depth + 1, True)
    if entry.fields_by_name["key"].type == FieldDescriptor.TYPE_STRING:
        names = ["device", "hour", "title", "search_query", "text", "topic", "value", "email"]
        long_keys = st.sampled_from([65, 5_000, 100_001]).map(lambda n: SENTINEL + "k" * n)
        keys = st.one_of(st.sampled_from(names), keys, *([] if small else [long_keys]))
    values = field_strategy(entry.fields_by_name["value"], depth + 1, small)
    few = st.dictionaries(keys, values, max_size=5)
    if small:
        return few
    # At limits.max_map_entries (64) and beyond it.
    small_values = field_strategy(entry.fields_by_name["value"], depth + 1, True)
    big = st.tuples(small_values, st.sampled_from([64, 65, 500])).map(
        lambda p: {f"k{index}": p[0] for index in range(p[1])}
    )
    return st.one_of(few, big)


def field_strategy(field: FieldDescriptor, depth: int, small: bool) -> st.SearchStrategy[Any]:
    """One value for `field` (ignoring repetition)."""
    if field.type == FieldDescriptor.TYPE_MESSAGE:
        return message_strategy(field.message_type, depth + 1, small)
    return scalar_strategy(field, small)


def message_strategy(
    message_descriptor: descriptor.Descriptor, depth: int = 0, small: bool = False
) -> st.SearchStrategy[Any]:
    """Any message of this type: each field absent or filled with hostile values, recursively."""
    message_class = message_factory.GetMessageClass(message_descriptor)
    if message_descriptor.full_name == "google.protobuf.Timestamp":
        return timestamp_strategy(message_class)
    if depth > MAX_DEPTH:
        return st.just(message_class())
    plain: dict[str, st.SearchStrategy[Any]] = {}
    oneofs: list[st.SearchStrategy[tuple[str, Any] | None]] = []
    for oneof in message_descriptor.oneofs:
        choices = [st.tuples(st.just(f.name), st.deferred(_lazy(f, depth, small))) for f in oneof.fields]
        oneofs.append(st.one_of(st.none(), *choices))
    for field in message_descriptor.fields:
        if field.containing_oneof is not None:
            continue
        if is_map(field):
            plain[field.name] = st.deferred(lambda f=field: map_strategy(f, depth, small))
        elif field.is_repeated:
            plain[field.name] = st.deferred(lambda f=field: repeated_strategy(f, depth, small))
        else:
            plain[field.name] = st.deferred(_lazy(field, depth, small))

    def build(values: dict[str, Any], chosen: tuple[tuple[str, Any] | None, ...]) -> message.Message:
        built = message_class()
        for name, value in [*values.items(), *(c for c in chosen if c is not None)]:
            assign(built, message_descriptor.fields_by_name[name], value)
        return built

    return st.builds(build, st.fixed_dictionaries({}, optional=plain), st.tuples(*oneofs))


def _lazy(field: FieldDescriptor, depth: int, small: bool) -> Callable[[], st.SearchStrategy[Any]]:
    return lambda: field_strategy(field, depth, small)


def assign(target: message.Message, field: FieldDescriptor, value: Any) -> None:
    if is_map(field):
        entries = getattr(target, field.name)
        message_values = field.message_type.fields_by_name["value"].type == FieldDescriptor.TYPE_MESSAGE
        for key, item in value.items():
            if message_values:
                entries[key].CopyFrom(item)
            else:
                entries[key] = item
    elif field.is_repeated:
        getattr(target, field.name).extend(value)
    elif field.type == FieldDescriptor.TYPE_MESSAGE:
        getattr(target, field.name).CopyFrom(value)
    else:
        setattr(target, field.name, value)


# Valid requests of the RPCs that need several fields right before they do any work. Half
# of the examples write a hostile message over one of these (`overlay`), so that hostile
# values reach the code behind the first checks too. An RPC without a baseline starts from
# the empty request. Keyed by request type, not by RPC.
BASELINES: dict[str, dict[str, Any]] = {
    "tacit.v1.RankRequest": {
        "slot": "home",
        "subject_id": "user-1",
        "context": {"values": {"device": {"string_value": "mobile"}, "hour": {"number_value": 9}}},
        "candidates": [
            {"id": "article-1", "features": {"values": {"topic": {"string_value": "sport"}}}},
            {"id": "article-2"},
        ],
    },
    "tacit.v1.RewardRequest": {"event_id": "evt-fuzz-0001", "value": 1.0},
    "tacit.v1.ActivateRequest": {"event_id": "evt-fuzz-0001"},
    "tacit.v1.TrackEventsRequest": {
        "events": [
            {
                "event_id": "evt-fuzz-0002",
                "subject_id": "user-1",
                "event_type": "click",
                "properties": {"values": {"text": {"string_value": "read more"}}},
            }
        ]
    },
    "tacit.v1.PredictRequest": {"subject_id": "user-1"},
    "tacit.v1.CreateExperimentRequest": {
        "experiment_id": "exp-fuzz",
        "experiment": {
            "slot": "home",
            "arms": [
                {"name": "control", "policy": "static:first", "weight": 0.5},
                {"name": "treatment", "policy": "uniform", "weight": 0.5},
            ],
            "primary_metric": "click_through",
            "guardrails": [{"metric": "conversion", "tolerance": 0.05}],
            "stages": [{"percent": 5, "min_sample": 10}, {"percent": 100, "min_sample": 10}],
        },
    },
    "tacit.v1.ExperimentActionRequest": {"name": "experiments/exp-fuzz", "reason": "fuzz"},
    "tacit.v1.GetExperimentRequest": {"name": "experiments/exp-fuzz"},
    "tacit.v1.GetExperimentReportRequest": {"name": "experiments/exp-fuzz"},
    "tacit.v1.ListExperimentChangesRequest": {"name": "experiments/exp-fuzz"},
    "tacit.v1.EraseSubjectRequest": {"subject_id": "user-2", "request_id": "erase-fuzz-0001"},
    "tacit.v1.EvaluatePoliciesRequest": {"slot": "home", "policies": ["uniform"]},
    "tacit.v1.GetDriftReportRequest": {"task": "bandit:home"},
    "tacit.v1.GetModelRequest": {"name": "models/bandit:home/versions/1"},
}


def overlay(base: message.Message, hostile: message.Message) -> None:
    """Writes hostile's set fields over base, element by element, so that a valid request keeps
    its shape and gets hostile leaves (MergeFrom would only append to lists)."""
    for field, value in hostile.ListFields():
        target = getattr(base, field.name)
        if is_map(field) or not (field.type == FieldDescriptor.TYPE_MESSAGE or field.is_repeated):
            if is_map(field):
                target.MergeFrom(value)
            else:
                setattr(base, field.name, value)
        elif field.is_repeated and field.type == FieldDescriptor.TYPE_MESSAGE:
            for index, item in enumerate(value):
                if index < len(target):
                    overlay(target[index], item)
                else:
                    target.add().CopyFrom(item)
        elif field.is_repeated:
            target.extend(value)
        else:
            overlay(target, value)


def one_leaf_strategy(message_descriptor: descriptor.Descriptor, depth: int = 0) -> st.SearchStrategy[Any]:
    """A message with exactly one hostile leaf set (one path down from the root): written over a
    baseline it leaves every other field valid, so the leaf meets the deepest check for it."""
    message_class = message_factory.GetMessageClass(message_descriptor)
    fields = list(message_descriptor.fields)
    if not fields or depth > MAX_DEPTH or message_descriptor.full_name == "google.protobuf.Timestamp":
        return message_strategy(message_descriptor, depth)

    def value_for(field: FieldDescriptor) -> st.SearchStrategy[tuple[FieldDescriptor, Any]]:
        nested = field.type == FieldDescriptor.TYPE_MESSAGE and not is_map(field)
        if nested and field.is_repeated:
            values: st.SearchStrategy[Any] = st.lists(
                one_leaf_strategy(field.message_type, depth + 1), min_size=1, max_size=2
            )
        elif nested:
            values = one_leaf_strategy(field.message_type, depth + 1)
        elif is_map(field):
            values = map_strategy(field, depth, False)
        elif field.is_repeated:
            values = repeated_strategy(field, depth, False)
        else:
            values = field_strategy(field, depth, False)
        return st.tuples(st.just(field), values)

    def build(chosen: tuple[FieldDescriptor, Any]) -> message.Message:
        built = message_class()
        assign(built, *chosen)
        return built

    return st.sampled_from(fields).flatmap(value_for).map(build)


def request_strategy(request_class: type[message.Message]) -> st.SearchStrategy[message.Message]:
    """A hostile request, or a valid baseline with a hostile one (or one hostile leaf) over it."""
    hostile = message_strategy(request_class.DESCRIPTOR)
    one_leaf = one_leaf_strategy(request_class.DESCRIPTOR)

    def over_baseline(update: message.Message) -> message.Message:
        base = json_format.ParseDict(BASELINES.get(request_class.DESCRIPTOR.full_name, {}), request_class())
        overlay(base, update)
        return base

    return st.one_of(hostile, hostile.map(over_baseline), one_leaf.map(over_baseline))


# ---------------------------------------------------------------- calling and checking


@dataclass
class Outcome:
    code: grpc.StatusCode
    details: str
    trailers: tuple[tuple[str, Any], ...]


def call(channel: grpc.Channel, rpc: Rpc, payload: bytes, metadata: Any) -> Outcome:
    """Sends `payload` as the raw request bytes (no serializer) and reads the whole answer."""
    try:
        if rpc.client_streaming:
            raise AssertionError(f"{rpc.path}: client streaming is not fuzzed yet; add it here")
        if rpc.server_streaming:
            stream = channel.unary_stream(rpc.path)(payload, metadata=metadata, timeout=CALL_TIMEOUT)
            for _count, _line in zip(range(10_000), stream, strict=False):
                pass
            stream.cancel()
        else:
            channel.unary_unary(rpc.path)(payload, metadata=metadata, timeout=CALL_TIMEOUT)
    except grpc.RpcError as error:
        return Outcome(error.code(), error.details() or "", tuple(error.trailing_metadata() or ()))  # type: ignore[attr-defined]
    return Outcome(grpc.StatusCode.OK, "", ())


def status_details(outcome: Outcome) -> status_pb2.Status | None:
    for key, value in outcome.trailers:
        if key == "grpc-status-details-bin":
            return status_pb2.Status.FromString(value)
    return None


def error_reason(status: status_pb2.Status | None) -> str:
    for detail in status.details if status is not None else ():
        info = error_details_pb2.ErrorInfo()
        if detail.Unpack(info):
            return info.reason
    return ""


def echoed(outcome: Outcome, status: status_pb2.Status | None) -> bool:
    """The sentinel in the message or any detail; a ResourceInfo's resource_name may name the
    resource the caller asked for (AIP-193), as long as the message does not."""
    if SENTINEL in outcome.details:
        return True
    for key, value in outcome.trailers:
        if key != "grpc-status-details-bin":
            text = value.decode("latin-1") if isinstance(value, bytes) else str(value)
            if SENTINEL in text:
                return True
    for detail in status.details if status is not None else ():
        resource = error_details_pb2.ResourceInfo()
        if detail.Unpack(resource):
            resource.resource_name = ""
            text = str(resource)
        else:
            text = detail.value.decode("latin-1")
        if SENTINEL in text or SENTINEL in status.message:
            return True
    return False


def violations(outcome: Outcome, allowed: frozenset[grpc.StatusCode], service: str) -> list[str]:
    """What is wrong with one answer (empty when nothing is)."""
    problems = []
    if outcome.code not in allowed:
        problems.append(f"status {outcome.code.name} not in the allowed set")
    if outcome.code is grpc.StatusCode.OK:
        return problems
    status = status_details(outcome)
    if echoed(outcome, status):
        problems.append("the error echoes a request value (the planted sentinel)")
    if outcome.code is grpc.StatusCode.INVALID_ARGUMENT:
        fields = []
        for detail in status.details if status is not None else ():
            bad = error_details_pb2.BadRequest()
            if detail.Unpack(bad):
                fields.extend(v.field for v in bad.field_violations)
        if not fields or not all(fields):
            problems.append("INVALID_ARGUMENT without a BadRequest field violation naming a field")
    return problems


class Tally:
    """Counts by service and status, and the failures with a short form of their request."""

    def __init__(self) -> None:
        self.counts: Counter[tuple[str, str]] = Counter()
        self.failures: list[str] = []

    def record(self, rpc: Rpc, outcome: Outcome, problems: list[str], request: str) -> None:
        self.counts[(rpc.service, outcome.code.name)] += 1
        for problem in problems:
            self.failures.append(
                f"{rpc.path}: {problem} ({outcome.code.name}: {outcome.details[:160]!r}) "
                f"request={request[:300]}"
            )

    def table(self, title: str) -> str:
        services = sorted({service for service, _ in self.counts})
        codes = sorted({code for _, code in self.counts})
        width = max(len(code) for code in codes) + 2
        lines = [title, f"{'service':<22}" + "".join(f"{code:>{width}}" for code in codes) + f"{'total':>8}"]
        for service in [*services, "total"]:
            row = [
                sum(n for (s, c), n in self.counts.items() if c == code and service in (s, "total"))
                for code in codes
            ]
            lines.append(f"{service:<22}" + "".join(f"{n:>{width}}" for n in row) + f"{sum(row):>8}")
        return "\n".join(lines)


def rss_kb(field: str = "VmRSS") -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(f"{field}:"):
            return int(line.split()[1])
    raise AssertionError(f"no {field} in /proc/self/status")


def reset_peak_rss() -> None:
    """Resets VmHWM to the current RSS (Linux >= 4.0), so the peak is that of the fuzz alone."""
    Path("/proc/self/clear_refs").write_text("5")


@pytest.fixture
def fuzzed_server(start_server: Callable[..., Any], request: pytest.FixtureRequest) -> Any:
    """A real server, on the test's `database_url` where it asks for one, else on SQLite."""
    url = request.getfixturevalue("database_url") if "database_url" in request.fixturenames else ""
    server = start_server(url)
    assert_still_serving(server)
    return server


def assert_still_serving(server: Any) -> None:
    """Health Check answers SERVING after the fuzz (within the generous call deadline)."""
    health = health_pb2_grpc.HealthStub(server.channel)
    answer = health.Check(health_pb2.HealthCheckRequest(), timeout=CALL_TIMEOUT)
    assert answer.status == health_pb2.HealthCheckResponse.SERVING


def warm_up(server: Any) -> None:
    from tacit.v1 import common_pb2, decision_pb2

    request = decision_pb2.RankRequest(
        slot="home",
        subject_id="warm-up-subject",
        candidates=[decision_pb2.Candidate(id=f"c{i}") for i in range(3)],
        context=common_pb2.Features(values={"search_query": common_pb2.Value(string_value="warm up text")}),
    )
    server.channel.unary_unary("/tacit.v1.DecisionService/Rank")(
        request.SerializeToString(), metadata=server.metadata(Role.SERVICE), timeout=CALL_TIMEOUT
    )


class MemoryWatch:
    def __init__(self) -> None:
        self.before_kb = rss_kb()
        reset_peak_rss()

    def check(self) -> str:
        peak = rss_kb("VmHWM") - self.before_kb
        after = rss_kb() - self.before_kb
        report = f"RSS growth over the fuzz: final {after / 1024:.1f} MB, peak {peak / 1024:.1f} MB"
        assert peak < MAX_RSS_GROWTH_MB * 1024, report
        assert after < MAX_RSS_GROWTH_MB * 1024, report
        return report


def fuzz_messages(server: Any, rpc: Rpc, tally: Tally) -> None:
    metadata = server.metadata(role_for(rpc.path))

    @settings(FUZZ_SETTINGS, max_examples=MESSAGE_EXAMPLES)
    @given(request=request_strategy(rpc.request_class))
    def fuzz(request: message.Message) -> None:
        outcome = call(server.channel, rpc, request.SerializeToString(), metadata)
        problems = violations(outcome, MESSAGE_ALLOWED, rpc.service)
        tally.record(rpc, outcome, problems, str(request).replace("\n", " "))

    fuzz()


def test_every_rpc_answers_hostile_messages_with_a_client_status(
    database_url: str, fuzzed_server: Any
) -> None:
    warm_up(fuzzed_server)
    memory = MemoryWatch()
    tally = Tally()
    for rpc in RPCS:
        fuzz_messages(fuzzed_server, rpc, tally)
    print()
    print(tally.table(f"Hostile messages ({database_url.split(':')[0]}): answers by status"))
    assert_still_serving(fuzzed_server)
    print(memory.check())
    assert not tally.failures, "\n".join(tally.failures[:40])


def mutated_bytes(rpc: Rpc) -> st.SearchStrategy[bytes]:
    """Random bytes, and valid serialized requests with garbage appended or cut short."""
    valid = request_strategy(rpc.request_class).map(lambda m: m.SerializeToString())
    appended = st.tuples(valid, st.binary(min_size=1, max_size=32)).map(lambda p: p[0] + p[1])
    truncated = st.tuples(valid, st.integers(0, 10_000)).map(lambda p: p[0][: p[1] % max(1, len(p[0]))])
    return st.one_of(st.binary(max_size=256), appended, truncated)


# Besides the right token: none, one the server never issued, another scheme, another role's.
TOKENS = ["right", "right", "right", "none", "unknown", "basic", "wrong_role"]


def parses(rpc: Rpc, payload: bytes) -> bool:
    try:
        rpc.request_class.FromString(payload)
    except message.DecodeError:
        return False
    return True


def fuzz_bytes(server: Any, rpc: Rpc, tally: Tally) -> None:
    other_roles = [role for role in Role if role not in (required_roles(rpc.path) or ())]
    metadata = {
        "right": server.metadata(role_for(rpc.path)),
        "none": (),
        "unknown": (("authorization", "Bearer tct_not-a-token"),),
        "basic": (("authorization", "Basic Zm9vOmJhcg=="),),
        "wrong_role": server.metadata(other_roles[0]) if other_roles else (),
    }

    @settings(FUZZ_SETTINGS, max_examples=BYTES_EXAMPLES)
    @given(payload=mutated_bytes(rpc), token=st.sampled_from(TOKENS))
    def fuzz(payload: bytes, token: str) -> None:
        outcome = call(server.channel, rpc, payload, metadata[token])
        if token != "right":
            allowed = BYTES_ALLOWED  # the auth answer, or whatever the bytes meet after it
        elif parses(rpc, payload):
            allowed = MESSAGE_ALLOWED  # bytes that parse are a (hostile) message like any other
        else:
            allowed = MALFORMED_ALLOWED  # bytes that do not parse: refused as such, nothing else
        problems = violations(outcome, allowed, rpc.service)
        if allowed is MALFORMED_ALLOWED and error_reason(status_details(outcome)) != "MALFORMED_REQUEST":
            problems.append("malformed bytes answered without reason MALFORMED_REQUEST")
        tally.record(rpc, outcome, problems, f"token={token} bytes={payload[:120]!r}")

    fuzz()


def test_raw_wire_bytes_get_only_client_statuses(database_url: str, fuzzed_server: Any) -> None:
    warm_up(fuzzed_server)
    memory = MemoryWatch()
    tally = Tally()
    for rpc in RPCS:
        fuzz_bytes(fuzzed_server, rpc, tally)
    print()
    print(tally.table("Raw wire bytes: answers by status"))
    assert_still_serving(fuzzed_server)
    print(memory.check())
    assert not tally.failures, "\n".join(tally.failures[:40])


# ---------------------------------------------------------------- regressions found by the fuzz


def _nul_requests() -> list[tuple[str, message.Message, str]]:
    from tacit.v1 import audit_pb2, event_pb2, experiment_pb2

    event = event_pb2.Event(event_id="evt-nul-0001", subject_id="user-1", event_type="click\x00")
    return [
        # These two were INTERNAL on PostgreSQL (psycopg DataError: NUL in a text parameter).
        (
            "/tacit.v1.AuditService/ListAuditRecords",
            audit_pb2.ListAuditRecordsRequest(payload_kind="\x00"),
            "payload_kind",
        ),
        (
            "/tacit.v1.ExperimentService/ListExperiments",
            experiment_pb2.ListExperimentsRequest(slot="\x00"),
            "slot",
        ),
        (
            "/tacit.v1.EventService/TrackEvents",
            event_pb2.TrackEventsRequest(events=[event]),
            "events[0].event_type",
        ),
        (
            "/tacit.v1.ExperimentService/PauseExperiment",
            experiment_pb2.ExperimentActionRequest(name="experiments/exp-nul", reason="stop\x00"),
            "reason",
        ),
    ]


@pytest.mark.parametrize("index", range(len(_nul_requests())))
def test_a_nul_character_in_any_string_field_is_invalid_argument_naming_it(
    database_url: str, fuzzed_server: Any, index: int
) -> None:
    path, request, field = _nul_requests()[index]
    outcome = call(
        fuzzed_server.channel, _rpc(path), request.SerializeToString(), fuzzed_server.metadata(role_for(path))
    )
    assert outcome.code is grpc.StatusCode.INVALID_ARGUMENT, outcome
    status = status_details(outcome)
    assert error_reason(status) == "NUL_CHARACTER"
    bad = error_details_pb2.BadRequest()
    assert any(detail.Unpack(bad) for detail in status.details)  # type: ignore[union-attr]
    assert [v.field for v in bad.field_violations] == [field]


def test_a_nul_character_in_a_feature_value_drops_that_value_not_the_call(fuzzed_server: Any) -> None:
    """Feature values pass the privacy boundary, which drops control-character text (audited)."""
    from tacit.v1 import common_pb2, decision_pb2

    context = common_pb2.Features(values={"device": common_pb2.Value(string_value="mo\x00bile")})
    request = decision_pb2.RankRequest(
        slot="home", subject_id="user-1", context=context, candidates=[decision_pb2.Candidate(id="a-1")]
    )
    path = "/tacit.v1.DecisionService/Rank"
    outcome = call(
        fuzzed_server.channel, _rpc(path), request.SerializeToString(), fuzzed_server.metadata(role_for(path))
    )
    assert outcome.code is grpc.StatusCode.OK, outcome
    runtime = fuzzed_server.running.runtime
    runtime.decision_log.flush()
    from tacit.store.schema import Decision

    with runtime.db.transaction() as session:
        contexts = [row.context for row in session.query(Decision).all()]
    assert contexts and all("device" not in context for context in contexts)


def _rpc(path: str) -> Rpc:
    return next(rpc for rpc in RPCS if rpc.path == path)


def test_long_feature_names_are_refused_without_being_retained() -> None:
    """The feature-name cache held every key it checked: 8,192 keys of megabytes each, for good."""
    from tacit.server import converters
    from tacit.server.config import LimitSettings
    from tacit.v1 import common_pb2

    tracemalloc.start()
    try:
        before, _peak = tracemalloc.get_traced_memory()
        for index in range(40):  # 40 distinct keys of 1 MB
            key = f"k{index}" + "x" * 1_000_000
            features = common_pb2.Features(values={key: common_pb2.Value(bool_value=True)})
            with pytest.raises(converters.InvalidArgument) as raised:
                converters.features_to_dict("context", features, LimitSettings())
            assert raised.value.field == "context.values[#0]"
            del key, features, raised
        gc.collect()
        retained, _peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert retained - before < 5_000_000, (
        f"{(retained - before) / 1e6:.1f} MB retained by 40 refused requests"
    )


def test_large_distinct_contexts_are_not_retained_by_the_vw_line_cache() -> None:
    """The VW line cache (100,000 entries) kept every context: 1,000 Rank contexts of ten
    2,000-character values held 43 MB, so 100,000 would hold 4 GB. Small catalog lines stay cached."""
    from tacit.learning import bandit

    tracemalloc.start()
    try:
        before, _peak = tracemalloc.get_traced_memory()
        for index in range(1_000):
            context = {f"f{j}": f"{index}-{j}-" + "x" * 2_000 for j in range(10)}
            line = bandit.build_example(context, [{"topic": "sport"}])[0]
            assert line.startswith("shared |U f0=")
            del context, line
        gc.collect()
        retained, _peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert retained - before < 5_000_000, f"{(retained - before) / 1e6:.1f} MB retained by 1,000 contexts"
    hits = bandit._cached_line.cache_info().hits
    bandit.build_example({"device": "mobile"}, [{"topic": "sport"}])
    assert bandit._cached_line.cache_info().hits >= hits + 1  # the catalog line came from the cache
