"""Metric definitions experimenters write over the anonymized events: what is counted per subject.

A `MetricSpec` names event types and (optionally) a numeric property, a per-subject
aggregation, the window after the subject's first exposure, a direction and optional
capping; a ratio metric is two such `Side`s. Definitions are versioned resources (see
`metric_catalog`); `sql_stats` turns one into a single GROUP BY query. Built-in metrics
that are defined over events (conversion, dwell time, engagement rate, bounce rate) are
specs too; `click_through` and `revenue_per_click` read the decision log's rewards and keep
their own queries in `repository`.
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from enum import StrEnum
from types import MappingProxyType
from typing import Any

from tacit.experiments.errors import SpecError
from tacit.experiments.metrics import BUILTIN_METRICS, MetricDefinition, MetricKind

METRIC_NAME = re.compile(r"^[a-z][a-z0-9_]{0,63}$")
PROPERTY_NAME = re.compile(r"^[a-z][a-z0-9_]{0,63}$")
EVENT_TYPES = frozenset({"page_view", "click", "conversion", "session_start", "custom"})
MAX_WINDOW_SECONDS = 365 * 86_400.0
MAX_DESCRIPTION_CHARS = 500


class Aggregation(StrEnum):
    """How one subject's matching events become one number."""

    ANY = "any"  # 1 when at least one matching event, else 0 (a proportion)
    SINGLE = "single"  # 1 when exactly one matching event, else 0 (a bounce)
    COUNT = "count"  # number of matching events
    SUM = "sum"  # sum of the property (0 without events)
    MEAN = "mean"  # mean of the property (subjects without a value are left out)
    MAX = "max"  # largest value of the property (subjects without a value are left out)
    QUANTILE = "quantile"  # nearest-rank quantile of the property (subjects without one left out)


VALUED = frozenset({Aggregation.SUM, Aggregation.MEAN, Aggregation.MAX, Aggregation.QUANTILE})
INDICATORS = frozenset({Aggregation.ANY, Aggregation.SINGLE})
# Aggregations that give every exposed subject a value (0 without events): ratio sides.
TOTAL = frozenset({Aggregation.ANY, Aggregation.SINGLE, Aggregation.COUNT, Aggregation.SUM})


@dataclass(frozen=True)
class Side:
    """Per subject: `aggregation` over events of `event_types` (of `value_property` × `scale`)."""

    event_types: tuple[str, ...]
    aggregation: Aggregation
    value_property: str = ""
    quantile: float = math.nan  # QUANTILE only, in (0, 1]
    scale: float = 1.0  # multiplies each property value (dwell_ms → seconds: 0.001)

    def validate(self, prefix: str) -> None:
        if not self.event_types:
            raise SpecError(f"{prefix}.event_types", "at least one event type is required")
        for index, event_type in enumerate(self.event_types):
            if event_type not in EVENT_TYPES:
                raise SpecError(f"{prefix}.event_types[{index}]", f"must be one of {sorted(EVENT_TYPES)}")
        if len(set(self.event_types)) != len(self.event_types):
            raise SpecError(f"{prefix}.event_types", "repeats an event type")
        if self.aggregation in VALUED:
            if not PROPERTY_NAME.match(self.value_property):
                raise SpecError(f"{prefix}.property", f"{self.aggregation.value} needs a property name")
        elif self.value_property:
            raise SpecError(f"{prefix}.property", f"{self.aggregation.value} counts events: no property")
        if self.aggregation is Aggregation.QUANTILE:
            if not (math.isfinite(self.quantile) and 0 < self.quantile <= 1):
                raise SpecError(f"{prefix}.quantile", "must be in (0, 1]")
        elif not math.isnan(self.quantile):
            raise SpecError(f"{prefix}.quantile", "applies to the quantile aggregation only")
        if not (math.isfinite(self.scale) and self.scale > 0):
            raise SpecError(f"{prefix}.scale", "must be finite and positive")

    def to_json(self) -> dict[str, Any]:
        data: dict[str, Any] = {"event_types": list(self.event_types), "aggregation": self.aggregation.value}
        if self.value_property:
            data["property"] = self.value_property
        if not math.isnan(self.quantile):
            data["quantile"] = self.quantile
        if self.scale != 1.0:
            data["scale"] = self.scale
        return data

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> Side:
        return cls(
            event_types=tuple(data["event_types"]),
            aggregation=Aggregation(data["aggregation"]),
            value_property=str(data.get("property", "")),
            quantile=float(data.get("quantile", math.nan)),
            scale=float(data.get("scale", 1.0)),
        )


@dataclass(frozen=True)
class MetricSpec:
    """A metric over events: `value` per subject, or `value` / `denominator` (a ratio metric).

    `window_seconds` 0 means the server's conversion window. `cap_lower`/`cap_upper`
    winsorize each subject's value (NaN: no cap). `version` is assigned by the catalog.
    """

    name: str
    value: Side
    denominator: Side | None = None
    window_seconds: float = 0.0
    higher_is_better: bool = True
    cap_lower: float = math.nan
    cap_upper: float = math.nan
    description: str = ""
    version: int = 0
    extra: Mapping[str, Any] = field(default_factory=dict, compare=False, repr=False)

    @property
    def is_ratio(self) -> bool:
        return self.denominator is not None

    @property
    def is_proportion(self) -> bool:
        return self.denominator is None and self.value.aggregation in INDICATORS

    def definition(self) -> MetricDefinition:
        """What the rules need to know: its kind, direction and whether CUPED applies."""
        kind = (
            MetricKind.RATIO
            if self.is_ratio
            else MetricKind.PROPORTION
            if self.is_proportion
            else MetricKind.MEAN
        )
        return MetricDefinition(self.name, kind, self.higher_is_better, self.description, not self.is_ratio)

    def validate(self) -> None:
        """Raise `SpecError(field, message)` naming the first invalid field (never its value)."""
        if not METRIC_NAME.match(self.name):
            raise SpecError("metric.name", f"must match {METRIC_NAME.pattern}")
        self.value.validate("metric.value")
        if self.denominator is not None:
            self.denominator.validate("metric.denominator")
            for prefix, side in (("value", self.value), ("denominator", self.denominator)):
                if side.aggregation not in TOTAL:
                    raise SpecError(
                        f"metric.{prefix}.aggregation",
                        f"a ratio's sides must be one of {sorted(a.value for a in TOTAL)}",
                    )
        if not (math.isfinite(self.window_seconds) and 0 <= self.window_seconds <= MAX_WINDOW_SECONDS):
            raise SpecError("metric.window_seconds", "must be in [0, 365 days] (0: the server's window)")
        for name in ("cap_lower", "cap_upper"):
            cap = getattr(self, name)
            if math.isinf(cap):
                raise SpecError(f"metric.{name}", "must be finite (unset: no cap)")
            if not math.isnan(cap) and (self.is_ratio or self.is_proportion):
                raise SpecError(f"metric.{name}", "capping applies to count, sum, mean, max and quantile")
        if self.cap_lower > self.cap_upper:
            raise SpecError("metric.cap_upper", "must not be below cap_lower")
        if len(self.description) > MAX_DESCRIPTION_CHARS:
            raise SpecError("metric.description", f"is longer than {MAX_DESCRIPTION_CHARS} characters")

    def to_json(self) -> dict[str, Any]:
        data: dict[str, Any] = {
            "name": self.name,
            "value": self.value.to_json(),
            "window_seconds": self.window_seconds,
            "higher_is_better": self.higher_is_better,
            "description": self.description,
            "version": self.version,
        }
        if self.denominator is not None:
            data["denominator"] = self.denominator.to_json()
        for name in ("cap_lower", "cap_upper"):
            if not math.isnan(getattr(self, name)):
                data[name] = getattr(self, name)
        return data

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> MetricSpec:
        return cls(
            name=data["name"],
            value=Side.from_json(data["value"]),
            denominator=Side.from_json(data["denominator"]) if data.get("denominator") else None,
            window_seconds=float(data.get("window_seconds", 0.0)),
            higher_is_better=bool(data.get("higher_is_better", True)),
            cap_lower=float(data.get("cap_lower", math.nan)),
            cap_upper=float(data.get("cap_upper", math.nan)),
            description=str(data.get("description", "")),
            version=int(data.get("version", 0)),
        )


def _builtin(spec: MetricSpec) -> MetricSpec:
    spec.validate()
    return spec


BUILTIN_SPECS: Mapping[str, MetricSpec] = MappingProxyType(
    {
        spec.name: spec
        for spec in (
            _builtin(
                MetricSpec(
                    "conversion",
                    Side(("conversion",), Aggregation.ANY),
                    description=BUILTIN_METRICS["conversion"].description,
                    version=1,
                )
            ),
            _builtin(
                MetricSpec(
                    "dwell_time",
                    Side(("page_view", "custom"), Aggregation.SUM, "dwell_ms", scale=0.001),
                    description=BUILTIN_METRICS["dwell_time"].description,
                    version=1,
                )
            ),
            _builtin(
                MetricSpec(
                    "engagement_rate",
                    Side(("click", "conversion"), Aggregation.ANY),
                    description="share of exposed subjects who clicked or converted",
                    version=1,
                )
            ),
            _builtin(
                MetricSpec(
                    "bounce_rate",
                    Side(("page_view",), Aggregation.SINGLE),
                    Side(("page_view",), Aggregation.ANY),
                    higher_is_better=False,
                    description="visits with a single page view, over visits with any page view",
                    version=1,
                )
            ),
        )
    }
)
"""Built-in event metrics; their names are reserved (the catalog refuses to redefine them)."""

# Built-ins over the decision log (rewards), computed by `repository`; reserved names too.
DECISION_METRICS = frozenset({"click_through", "revenue_per_click"})
RESERVED_NAMES = frozenset(BUILTIN_SPECS) | DECISION_METRICS
