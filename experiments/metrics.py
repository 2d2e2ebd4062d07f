"""Metric registry: plain data naming each metric, its kind and its good direction.

The lead computes the sufficient statistics from the database; this module only says
what a metric *is*, so that decision rules know which statistics to expect and which
direction counts as a win or as harm.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from enum import StrEnum
from types import MappingProxyType


class MetricKind(StrEnum):
    """How a metric is aggregated per subject, which decides its sufficient statistics."""

    PROPORTION = "proportion"  # 0/1 per subject -> SampleStats
    MEAN = "mean"  # real value per subject -> SampleStats
    RATIO = "ratio"  # sum(num)/sum(den) over subjects -> RatioStats (delta method)


@dataclass(frozen=True)
class MetricDefinition:
    """A named metric; `higher_is_better` tells wins from harm.

    `supports_covariate`: the metric is one value per exposed subject, so the same metric
    over a window before the subject's first exposure can serve as its CUPED covariate.
    """

    name: str
    kind: MetricKind
    higher_is_better: bool = True
    description: str = ""
    supports_covariate: bool = False


def make_registry(definitions: tuple[MetricDefinition, ...]) -> Mapping[str, MetricDefinition]:
    """Build a read-only name -> definition mapping, refusing duplicate names."""
    registry: dict[str, MetricDefinition] = {}
    for definition in definitions:
        if definition.name in registry:
            raise ValueError(f"duplicate metric name {definition.name!r}")
        registry[definition.name] = definition
    return MappingProxyType(registry)


BUILTIN_METRICS: Mapping[str, MetricDefinition] = make_registry(
    (
        MetricDefinition("click_through", MetricKind.PROPORTION, True, "share of subjects who clicked"),
        MetricDefinition("conversion", MetricKind.PROPORTION, True, "share of subjects who converted", True),
        MetricDefinition("dwell_time", MetricKind.MEAN, True, "mean dwell time per subject", True),
        MetricDefinition("revenue_per_click", MetricKind.RATIO, True, "total revenue / total clicks"),
    )
)
