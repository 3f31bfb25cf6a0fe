"""The rolling 24 h window of every name, kept between ticks so a tick reads only what is new.

The state is everything the cleaning rules need from the window's documents, reduced per
(slot, name) cell, independent of the rules' thresholds:

- the cell's only numeric document (value, arrival time, off-grid flag), in dense arrays;
- every numeric document of the rare cells that hold several (duplicates), in ``extra``;
- per slot, the counts of documents, of documents without a name, of non-numeric values;
- which names have any document in which slot (a name leaves when its last slot leaves);
- the ids of the recent documents, which the next tick's read overlaps.

Every update is a sum, a max or a set union per cell, so adding the documents of a cold read at
once or tick by tick gives the same state: that is why an incremental tick equals a cold read.
Adding a document twice would break this, hence the ids of the overlap.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import pandas as pd

from tauxcharge_assets.data.documents import NAT, DocumentBatch
from tauxcharge_assets.settings import STEP_MINUTES, WINDOW_STEPS, to_utc

STEP_NS = STEP_MINUTES * 60 * 10**9
RECENT_MARGIN_NS = 10**9  # the kept recent ids reach 1 s further back than the next read: sub-ms rounding


def _empty_extra() -> dict[str, np.ndarray]:
    return {
        "slot": np.empty(0, np.int64),  # absolute slot number (ns // STEP_NS)
        "column": np.empty(0, np.int64),
        "value": np.empty(0, np.float64),
        "ingested": np.empty(0, np.int64),
        "off_grid": np.empty(0, bool),
    }


def _empty_recent() -> dict[str, np.ndarray]:
    return {"id": np.empty(0, object), "timestamp": np.empty(0, np.int64), "ingested": np.empty(0, np.int64)}


@dataclass
class RollingWindow:
    """The reduced documents of ``[end - steps slots, end)``; see the module docstring."""

    end_slot: int
    steps: int
    overlap_ns: int
    names: np.ndarray  # (n,) object, in order of first appearance
    present: np.ndarray  # (steps, n) bool: a document with this name and a usable value or not
    count: np.ndarray  # (steps, n) uint8: numeric documents in the cell, saturating at 2
    value: np.ndarray  # (steps, n) float64: the cell's only numeric value (count == 1), else NaN
    ingested: np.ndarray  # (steps, n) int64 ns
    off_grid: np.ndarray  # (steps, n) bool
    slot_documents: np.ndarray  # (steps,) int64
    slot_unplaced: np.ndarray  # (steps,) int64: documents without a usable name or timestamp
    slot_non_numeric: np.ndarray  # (steps,) int64
    newest_ns: int = NAT
    extra: dict[str, np.ndarray] = field(default_factory=_empty_extra)
    recent: dict[str, np.ndarray] = field(default_factory=_empty_recent)

    @property
    def start_slot(self) -> int:
        return self.end_slot - self.steps

    @property
    def end(self) -> pd.Timestamp:
        return pd.Timestamp(self.end_slot * STEP_NS, tz="UTC")

    @property
    def start(self) -> pd.Timestamp:
        return pd.Timestamp(self.start_slot * STEP_NS, tz="UTC")

    @property
    def recent_since(self) -> pd.Timestamp:
        """The next tick re-reads everything from here: timestamps at or after it, or arrivals after it."""
        return pd.Timestamp(self.end_slot * STEP_NS - self.overlap_ns, tz="UTC")

    @property
    def newest_timestamp(self) -> pd.Timestamp | None:
        return None if self.newest_ns == NAT else pd.Timestamp(self.newest_ns, tz="UTC")

    def nbytes(self) -> int:
        arrays = [self.present, self.count, self.value, self.ingested, self.off_grid, *self.extra.values()]
        return int(sum(a.nbytes for a in arrays) + 64 * len(self.names) + 80 * len(self.recent["id"]))


def empty_window(end: pd.Timestamp, steps: int = WINDOW_STEPS, overlap_minutes: float = 10.0) -> RollingWindow:
    end_ns = to_utc(end).value
    if end_ns % STEP_NS:
        raise ValueError(f"A window ends on the {STEP_MINUTES}-minute grid; got {to_utc(end)}.")
    return RollingWindow(
        end_slot=end_ns // STEP_NS,
        steps=steps,
        overlap_ns=int(overlap_minutes * 60 * 10**9),
        names=np.empty(0, object),
        present=np.zeros((steps, 0), bool),
        count=np.zeros((steps, 0), np.uint8),
        value=np.full((steps, 0), np.nan),
        ingested=np.full((steps, 0), NAT, np.int64),
        off_grid=np.zeros((steps, 0), bool),
        slot_documents=np.zeros(steps, np.int64),
        slot_unplaced=np.zeros(steps, np.int64),
        slot_non_numeric=np.zeros(steps, np.int64),
    )


def _shift(array: np.ndarray, k: int, fill: object) -> np.ndarray:
    shifted = np.empty_like(array)
    if k < len(array):
        shifted[: len(array) - k] = array[k:]
    shifted[max(0, len(array) - k) :] = fill
    return shifted


def advance(window: RollingWindow, end: pd.Timestamp) -> RollingWindow:
    """The same window moved forward to ``end``: slots that leave take their documents with them."""
    new_end = to_utc(end).value // STEP_NS
    k = new_end - window.end_slot
    if k < 0:
        raise ValueError(f"A window only moves forward: {window.end} -> {to_utc(end)}.")
    if k == 0:
        return window
    start = new_end - window.steps
    keep_extra = window.extra["slot"] >= start
    moved = RollingWindow(
        end_slot=new_end,
        steps=window.steps,
        overlap_ns=window.overlap_ns,
        names=window.names,
        present=_shift(window.present, k, False),
        count=_shift(window.count, k, 0),
        value=_shift(window.value, k, np.nan),
        ingested=_shift(window.ingested, k, NAT),
        off_grid=_shift(window.off_grid, k, False),
        slot_documents=_shift(window.slot_documents, k, 0),
        slot_unplaced=_shift(window.slot_unplaced, k, 0),
        slot_non_numeric=_shift(window.slot_non_numeric, k, 0),
        newest_ns=window.newest_ns if window.newest_ns >= start * STEP_NS else NAT,
        extra={key: values[keep_extra] for key, values in window.extra.items()},
        recent={key: values[window.recent["timestamp"] >= start * STEP_NS] for key, values in window.recent.items()},
    )
    return _drop_absent_names(moved)


def _drop_absent_names(window: RollingWindow) -> RollingWindow:
    keep = window.present.any(axis=0)
    if keep.all():
        return window
    new_column = np.cumsum(keep) - 1
    window.names = window.names[keep]
    for attribute in ("present", "count", "value", "ingested", "off_grid"):
        setattr(window, attribute, np.ascontiguousarray(getattr(window, attribute)[:, keep]))
    window.extra["column"] = new_column[window.extra["column"]]
    return window


def _columns_for(window: RollingWindow, names: np.ndarray) -> np.ndarray:
    """Column of each name, appending columns for names never seen in the window."""
    codes, uniques = pd.factorize(names)
    known = pd.Index(window.names).get_indexer(uniques)
    new = known < 0
    if new.any():
        first = len(window.names)
        known[new] = first + np.arange(int(new.sum()))
        window.names = np.concatenate([window.names, uniques[new].astype(object)])
        grow = int(new.sum())
        steps = window.steps
        window.present = np.hstack([window.present, np.zeros((steps, grow), bool)])
        window.count = np.hstack([window.count, np.zeros((steps, grow), np.uint8)])
        window.value = np.hstack([window.value, np.full((steps, grow), np.nan)])
        window.ingested = np.hstack([window.ingested, np.full((steps, grow), NAT, np.int64)])
        window.off_grid = np.hstack([window.off_grid, np.zeros((steps, grow), bool)])
    return known[codes]


def add_documents(window: RollingWindow, batch: DocumentBatch) -> RollingWindow:
    """Fold documents into the window (in place). Each document must be added once: see ``new_documents``."""
    if not len(batch):
        return window
    steps = window.steps
    has_time = batch.timestamp != NAT
    slot_abs = np.where(has_time, batch.timestamp // STEP_NS, 0)
    row = slot_abs - window.start_slot
    in_window = has_time & (row >= 0) & (row < steps)
    # A timestamp Elasticsearch matched but that does not parse here is counted in the newest slot.
    row = np.where(in_window, row, steps - 1)
    placeable = in_window & (batch.name != None)  # noqa: E711 (element-wise)
    window.slot_documents += np.bincount(row, minlength=steps)
    window.slot_unplaced += np.bincount(row[~placeable], minlength=steps)
    numeric = ~np.isnan(batch.value)
    window.slot_non_numeric += np.bincount(row[placeable & ~numeric], minlength=steps)
    if has_time.any():
        window.newest_ns = max(window.newest_ns, int(batch.timestamp[has_time].max()))
    if not placeable.any():
        return window
    placed = np.flatnonzero(placeable)
    columns = _columns_for(window, batch.name[placed])
    rows = row[placed]
    window.present[rows, columns] = True
    numeric_placed = numeric[placed]
    _add_numeric(window, rows[numeric_placed], columns[numeric_placed], batch, placed[numeric_placed])
    return window


def _add_numeric(
    window: RollingWindow, rows: np.ndarray, columns: np.ndarray, batch: DocumentBatch, docs: np.ndarray
) -> None:
    if not len(docs):
        return
    n = len(window.names)
    cells = rows * n + columns
    unique_cells, first, per_cell = np.unique(cells, return_index=True, return_counts=True)
    existing = window.count.reshape(-1)[unique_cells]
    single = (existing == 0) & (per_cell == 1)
    value, ingested, off_grid = window.value.reshape(-1), window.ingested.reshape(-1), window.off_grid.reshape(-1)
    dense_cells, dense_docs = unique_cells[single], docs[first[single]]
    value[dense_cells] = batch.value[dense_docs]
    ingested[dense_cells] = batch.ingested[dense_docs]
    off_grid[dense_cells] = batch.timestamp[dense_docs] % STEP_NS != 0
    window.count.reshape(-1)[unique_cells] = np.minimum(existing.astype(np.int64) + per_cell, 2).astype(np.uint8)
    if single.all():
        return
    # Cells with several numeric documents keep all of them; the dense one moves out.
    moving = unique_cells[~single & (existing == 1)]
    to_extra = np.isin(cells, unique_cells[~single])
    new_docs = docs[to_extra]
    parts = [
        {
            "slot": moving // n + window.start_slot,
            "column": moving % n,
            "value": value[moving].copy(),
            "ingested": ingested[moving].copy(),
            "off_grid": off_grid[moving].copy(),
        },
        {
            "slot": rows[to_extra] + window.start_slot,
            "column": columns[to_extra],
            "value": batch.value[new_docs],
            "ingested": batch.ingested[new_docs],
            "off_grid": batch.timestamp[new_docs] % STEP_NS != 0,
        },
    ]
    value[moving] = np.nan
    window.extra = {key: np.concatenate([window.extra[key], *(p[key] for p in parts)]) for key in window.extra}


def new_documents(window: RollingWindow, batch: DocumentBatch) -> DocumentBatch:
    """The documents of an overlapping read that the window has not folded in yet (by id)."""
    if batch.ids is None:
        raise ValueError("An incremental read must carry document ids.")
    seen = pd.Index(window.recent["id"])
    return batch.take(~np.asarray(pd.Index(batch.ids).isin(seen)))


def remember_recent(window: RollingWindow, batch: DocumentBatch) -> RollingWindow:
    """Keep the ids of the documents the next tick's read will overlap (timestamp or arrival recent)."""
    if batch.ids is None:
        raise ValueError("Recent documents must carry their ids.")
    merged = {
        "id": np.concatenate([window.recent["id"], batch.ids]),
        "timestamp": np.concatenate([window.recent["timestamp"], batch.timestamp]),
        "ingested": np.concatenate([window.recent["ingested"], batch.ingested]),
    }
    since = window.end_slot * STEP_NS - window.overlap_ns - RECENT_MARGIN_NS
    keep = (merged["timestamp"] >= since) | (merged["ingested"] > since)
    keep &= merged["timestamp"] >= window.start_slot * STEP_NS
    window.recent = {key: values[keep] for key, values in merged.items()}
    return window
