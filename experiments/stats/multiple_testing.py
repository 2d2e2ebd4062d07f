"""Multiple testing across metrics: Holm (family-wise) and Benjamini–Hochberg (FDR)."""

from __future__ import annotations

from collections.abc import Sequence
from enum import StrEnum

import numpy as np
import numpy.typing as npt
from statsmodels.stats.multitest import multipletests


class Correction(StrEnum):
    """Multiple-testing corrections; values are statsmodels `multipletests` method names."""

    HOLM = "holm"
    BENJAMINI_HOCHBERG = "fdr_bh"


def adjust_p_values(
    p_values: Sequence[float] | npt.NDArray[np.float64], method: Correction = Correction.HOLM
) -> tuple[float, ...]:
    """Holm (family-wise) or Benjamini–Hochberg (FDR) adjusted p-values, same order.

    NaN p-values (degenerate metrics) stay NaN and do not count toward the family; any
    other value outside [0, 1] (or an infinity) is not a p-value and raises ValueError.
    Holm is p_(i)·(m − i + 1) with a running maximum, capped at 1, computed here with
    numpy because statsmodels' Holm branch runs a full ``gc.collect()`` per call (~100 ms
    in a large process); tests check it equals ``multipletests(method="holm")``.
    Benjamini–Hochberg comes from statsmodels ``multipletests(method="fdr_bh")``.
    """
    method = Correction(method)
    values = np.asarray(p_values, dtype=float)
    adjusted = np.full(values.shape, np.nan)
    if values.ndim != 1:
        raise ValueError("p_values must be a flat sequence")
    invalid = ~np.isnan(values) & ~((values >= 0) & (values <= 1))
    if invalid.any():
        raise ValueError(f"p_values[{int(np.argmax(invalid))}] is outside [0, 1]")
    finite = np.isfinite(values)
    if not finite.any():
        return tuple(float(v) for v in adjusted)
    family = values[finite]
    if method is Correction.HOLM:
        order = np.argsort(family, kind="stable")
        multipliers = np.arange(family.size, 0, -1)
        stepped = np.minimum(np.maximum.accumulate(family[order] * multipliers), 1.0)
        corrected = np.empty_like(family)
        corrected[order] = stepped
    else:
        corrected = multipletests(family, method=method.value)[1]
    adjusted[finite] = corrected
    return tuple(float(v) for v in adjusted)
