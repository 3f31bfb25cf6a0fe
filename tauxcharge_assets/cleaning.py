"""Raw documents to a regular 5-minute grid, by explicit rules whose effects are all counted.

Rules, applied in this order:
1. a document without a name or with an unparseable timestamp cannot be placed: counted, not used;
2. a value that is not a number is counted as ``non_numeric`` and the point is missing;
3. a number outside ``[value_min, value_max]`` is counted as ``out_of_range`` and the point is missing
   (a load rate of 250 % is a collector bug, not a load);
4. a timestamp off the 5-minute grid is floored onto it (``off_grid``);
5. several documents for one (name, slot) keep the one that arrived last (``duplicates``);
6. gaps of at most ``max_gap_fill`` points between two observed points are filled linearly
   (``interpolated``); longer gaps stay missing and the sequence mask says so.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd

from tauxcharge_assets.settings import STEP_MINUTES


@dataclass(frozen=True)
class CleaningRules:
    value_min: float = 0.0
    value_max: float = 100.0
    max_gap_fill: int = 3


@dataclass(frozen=True)
class CleanedSeries:
    values: pd.DataFrame  # grid (UTC) x names; NaN where still missing after gap filling
    observed: pd.DataFrame  # grid x names; True where a valid document was found
    counts: dict[str, int]

    @property
    def names(self) -> list[str]:
        return list(self.values.columns)


def grid(start: pd.Timestamp, end: pd.Timestamp) -> pd.DatetimeIndex:
    """The 5-minute slots of ``[start, end)``."""
    return pd.date_range(start=start, end=end, freq=f"{STEP_MINUTES}min", inclusive="left", name="timestamp")


def clean_series(
    raw: pd.DataFrame, start: pd.Timestamp, end: pd.Timestamp, rules: CleaningRules | None = None
) -> CleanedSeries:
    rules = rules or CleaningRules()
    slots = grid(start, end)
    names = raw["name"]
    has_name = names.notna() & (names.astype(str).str.len() > 0)
    has_time = raw["timestamp"].notna()
    placeable = has_name & has_time
    numeric = pd.to_numeric(raw["value"], errors="coerce")
    non_numeric = placeable & numeric.isna()
    out_of_range = placeable & numeric.notna() & ~numeric.between(rules.value_min, rules.value_max)
    slot = raw["timestamp"].dt.floor(f"{STEP_MINUTES}min")
    valid = placeable & ~non_numeric & ~out_of_range

    kept = pd.DataFrame(
        {
            "name": names[valid].astype(str),
            "slot": slot[valid],
            "value": numeric[valid].astype("float64"),
            "ingested_at": raw["ingested_at"][valid],
        }
    )
    kept = kept.sort_values(["name", "slot", "ingested_at"], na_position="first", kind="stable")
    deduplicated = kept.drop_duplicates(["name", "slot"], keep="last")
    all_names = sorted(set(names[placeable].astype(str)))
    observed_values = deduplicated.pivot(index="slot", columns="name", values="value").reindex(
        index=slots, columns=all_names
    )
    observed_values.index.name = "timestamp"
    observed_values.columns.name = "name"
    observed = observed_values.notna()
    filled, interpolated = fill_short_gaps(observed_values, rules.max_gap_fill)
    counts = {
        "documents": len(raw),
        "without_name_or_timestamp": int((~placeable).sum()),
        "non_numeric": int(non_numeric.sum()),
        "out_of_range": int(out_of_range.sum()),
        "off_grid": int((valid & (slot != raw["timestamp"])).sum()),
        "duplicates": len(kept) - len(deduplicated),
        "grid_points": observed.size,
        "observed_points": int(observed.to_numpy().sum()),
        "interpolated": interpolated,
        "missing_after_cleaning": int(filled.isna().to_numpy().sum()),
    }
    return CleanedSeries(values=filled, observed=observed, counts=counts)


def fill_short_gaps(values: pd.DataFrame, max_gap: int) -> tuple[pd.DataFrame, int]:
    """Linearly fill interior gaps of at most ``max_gap`` points; longer gaps are left untouched."""
    if values.empty or max_gap <= 0:
        return values.copy(), 0
    missing = values.isna().to_numpy()
    steps = missing.shape[0]
    forward = np.zeros(missing.shape, dtype=np.int32)  # length of the NaN run up to t
    backward = np.zeros(missing.shape, dtype=np.int32)  # length of the NaN run from t
    for t in range(steps):
        forward[t] = np.where(missing[t], (forward[t - 1] if t else 0) + 1, 0)
    for t in range(steps - 1, -1, -1):
        backward[t] = np.where(missing[t], (backward[t + 1] if t < steps - 1 else 0) + 1, 0)
    run_length = forward + backward - 1
    interior = (forward <= np.arange(1, steps + 1)[:, None] - 1) & (
        backward <= (steps - np.arange(steps))[:, None] - 1
    )  # a run that touches either edge has no neighbour to interpolate from
    fillable = missing & (run_length <= max_gap) & interior
    interpolated = values.interpolate(method="linear", axis=0, limit_area="inside")
    result = values.where(~fillable, interpolated)
    return result, int(fillable.sum())
