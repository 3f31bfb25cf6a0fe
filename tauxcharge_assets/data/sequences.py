"""Model-ready tensors: the last 288 values of every name (24 h), with a mask for missing points."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd

from tauxcharge_assets.data.cleaning import CleanedSeries
from tauxcharge_assets.data.name_ids import UNKNOWN_NAME_ID
from tauxcharge_assets.settings import WINDOW_STEPS


@dataclass(frozen=True)
class SequenceTensors:
    names: list[str]
    name_ids: np.ndarray  # (n,) int32
    values: np.ndarray  # (n, window) float32, gaps filled (see ``fill_for_model``)
    mask: np.ndarray  # (n, window) float32, 1 where the point had a value after cleaning
    timestamps: pd.DatetimeIndex  # (window,) the slots, oldest first
    skipped_names: list[str]  # names without a single value in the window: nothing to forecast from

    @property
    def next_timestamp(self) -> pd.Timestamp:
        return self.timestamps[-1] + (self.timestamps[1] - self.timestamps[0])


def fill_for_model(values: np.ndarray) -> np.ndarray:
    """Carry the last value forward (then the first one backward) so the LSTM never sees NaN.

    Rows are series (n, window); all rows at once with index arithmetic, no per-row work.
    """
    values = np.asarray(values, dtype=np.float32)
    if values.size == 0:
        return values.copy()
    missing = np.isnan(values)
    position = np.arange(values.shape[1])
    last_seen = np.maximum.accumulate(np.where(missing, -1, position), axis=1)
    first_seen = np.argmax(~missing, axis=1)
    source = np.where(last_seen >= 0, last_seen, first_seen[:, None])
    return np.take_along_axis(values, source, axis=1)


def build_sequences(cleaned: CleanedSeries, name_ids: dict[str, int], window: int = WINDOW_STEPS) -> SequenceTensors:
    values = cleaned.values.iloc[-window:]
    if len(values) < window:
        raise ValueError(f"cleaned_series holds {len(values)} slots, fewer than the {window} a sequence needs.")
    raw = values.to_numpy(dtype=np.float32).T  # (names, window)
    has_data = ~np.isnan(raw).all(axis=1)
    names = [name for name, keep in zip(values.columns, has_data, strict=True) if keep]
    skipped = [name for name, keep in zip(values.columns, has_data, strict=True) if not keep]
    raw = raw[has_data]
    return SequenceTensors(
        names=names,
        name_ids=np.array([name_ids.get(name, UNKNOWN_NAME_ID) for name in names], dtype=np.int32),
        values=fill_for_model(raw) if len(names) else raw,
        mask=(~np.isnan(raw)).astype(np.float32),
        timestamps=values.index,
        skipped_names=skipped,
    )
