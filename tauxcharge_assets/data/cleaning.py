"""Raw documents to a regular 5-minute grid, by explicit rules whose effects are all counted.

Rules, applied in this order:
1. a document without a name or with an unparseable timestamp (or, for a frame, a timestamp outside
   the window) cannot be placed: counted, not used;
2. a value that is not a number is counted as ``non_numeric`` and the point is missing;
3. a number outside ``[value_min, value_max]`` is counted as ``out_of_range`` and the point is missing
   (a load rate of 250 % is a collector bug, not a load);
4. a timestamp off the 5-minute grid is floored onto it (``off_grid``);
5. several documents for one (name, slot) keep the one that arrived last (``duplicates``); on equal
   arrival times (or none) the larger value wins, so the choice never depends on read order;
6. gaps of at most ``max_gap_fill`` points between two observed points are filled linearly
   (``interpolated``); longer gaps stay missing and the sequence mask says so.

The rules are applied to a ``RollingWindow`` (the window's documents reduced per cell), so a tick
that updated its window incrementally and a cold read of the same documents clean identically.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd

from tauxcharge_assets.data.documents import from_frame
from tauxcharge_assets.data.shards import UNSHARDED, Shard
from tauxcharge_assets.settings import STEP_MINUTES
from tauxcharge_assets.window.rolling import RollingWindow, add_documents, empty_window


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
    rules: CleaningRules = CleaningRules()  # what produced it: the quarantine lists documents by the same rules
    shard: Shard = UNSHARDED  # the name shard it holds (data.shards); every name by default

    @property
    def names(self) -> list[str]:
        return list(self.values.columns)


def grid(start: pd.Timestamp, end: pd.Timestamp) -> pd.DatetimeIndex:
    """The 5-minute slots of ``[start, end)``."""
    return pd.date_range(start=start, end=end, freq=f"{STEP_MINUTES}min", inclusive="left", name="timestamp")


def clean_series(
    raw: pd.DataFrame, start: pd.Timestamp, end: pd.Timestamp, rules: CleaningRules | None = None
) -> CleanedSeries:
    """Clean a raw frame (``timestamp``, ``name``, ``value``, ``ingested_at``) of the window ``[start, end)``."""
    window = empty_window(end, steps=len(grid(start, end)))
    return clean_window(add_documents(window, from_frame(raw)), rules)


def kept_duplicates(window: RollingWindow, rules: CleaningRules) -> tuple[np.ndarray, np.ndarray]:
    """Rule 5 on the cells holding several numeric documents: (cells, kept), ``cells`` sorted (as
    ``row * names + column``) and ``kept`` the index into ``window.extra`` of each cell's kept document."""
    n = max(1, len(window.names))
    selected = np.flatnonzero(in_range(window.extra["value"], rules))
    if not len(selected):
        return np.empty(0, np.int64), selected
    cells = (window.extra["slot"][selected] - window.start_slot) * n + window.extra["column"][selected]
    # the last of each cell: latest arrival, then largest value
    order = np.lexsort((window.extra["value"][selected], window.extra["ingested"][selected], cells))
    ordered = cells[order]
    last = order[np.r_[ordered[1:] != ordered[:-1], True]]
    return cells[last], selected[last]


def in_range(values: np.ndarray, rules: CleaningRules) -> np.ndarray:
    with np.errstate(invalid="ignore"):
        return (values >= rules.value_min) & (values <= rules.value_max)


def value_counts(window: RollingWindow, rules: CleaningRules) -> dict[str, int]:
    """The document counts of rules 1-4 for ``window``, without building the grid (cheap)."""
    dense_in_range = in_range(window.value, rules)
    extra_in_range = in_range(window.extra["value"], rules)
    single = window.count == 1
    return {
        "documents": int(window.slot_documents.sum()),
        "without_name_or_timestamp": int(window.slot_unplaced.sum()),
        "non_numeric": int(window.slot_non_numeric.sum()),
        "out_of_range": int((single & ~np.isnan(window.value) & ~dense_in_range).sum()) + int((~extra_in_range).sum()),
        "off_grid": int((single & dense_in_range & window.off_grid).sum())
        + int((extra_in_range & window.extra["off_grid"]).sum()),
    }


def clean_window(window: RollingWindow, rules: CleaningRules | None = None) -> CleanedSeries:
    """The window on its grid, names sorted, with every rule's count (see the module docstring)."""
    rules = rules or CleaningRules()
    dense_valid = (window.count == 1) & in_range(window.value, rules)
    extra_in_range = in_range(window.extra["value"], rules)
    values = np.where(dense_valid, window.value, np.nan)
    cells, kept = kept_duplicates(window, rules)
    n = max(1, len(window.names))
    values[cells // n, cells % n] = window.extra["value"][kept]
    order = np.argsort(window.names.astype(str), kind="stable") if len(window.names) else np.empty(0, np.int64)
    values = np.ascontiguousarray(values[:, order])
    observed = ~np.isnan(values)
    filled, interpolated = fill_short_gaps_array(values, rules.max_gap_fill)
    slots = pd.date_range(window.start, periods=window.steps, freq=f"{STEP_MINUTES}min", name="timestamp")
    names = pd.Index(window.names[order], dtype=object, name="name")
    counts = {
        **value_counts(window, rules),
        "duplicates": int(extra_in_range.sum()) - len(kept),
        "grid_points": int(observed.size),
        "observed_points": int(observed.sum()),
        "interpolated": interpolated,
        "missing_after_cleaning": int(np.isnan(filled).sum()),
    }
    return CleanedSeries(
        values=pd.DataFrame(filled, index=slots, columns=names),
        observed=pd.DataFrame(observed, index=slots, columns=names),
        counts=counts,
        rules=rules,
    )


def fill_short_gaps_array(values: np.ndarray, max_gap: int) -> tuple[np.ndarray, int]:
    """Linearly fill interior NaN runs of at most ``max_gap`` points along axis 0, all columns at once."""
    if values.size == 0 or max_gap <= 0:
        return values.copy(), 0
    steps = values.shape[0]
    missing = np.isnan(values)
    position = np.arange(steps)[:, None]
    # Index of the last observed point at or before t, and of the first one at or after t.
    before = np.maximum.accumulate(np.where(missing, -1, position), axis=0)
    after = np.minimum.accumulate(np.where(missing, steps, position)[::-1], axis=0)[::-1]
    fillable = missing & (before >= 0) & (after < steps) & (after - before - 1 <= max_gap)
    if not fillable.any():
        return values.copy(), 0
    rows, cols = np.nonzero(fillable)
    x0, x1 = before[rows, cols], after[rows, cols]
    y0, y1 = values[x0, cols], values[x1, cols]
    result = values.copy()
    result[rows, cols] = y0 + (rows - x0) * ((y1 - y0) / (x1 - x0))
    return result, len(rows)


def fill_short_gaps(values: pd.DataFrame, max_gap: int) -> tuple[pd.DataFrame, int]:
    """Linearly fill interior gaps of at most ``max_gap`` points; longer gaps are left untouched."""
    filled, count = fill_short_gaps_array(values.to_numpy(dtype=np.float64), max_gap)
    return pd.DataFrame(filled, index=values.index, columns=values.columns), count
