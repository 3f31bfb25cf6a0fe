"""The one-step forecasts the anomaly step compares actual values with, kept from one tick to the next.

Each tick scores its newest slot against the forecast made for it one step before, and the detector
replays the slots since its hourly checkpoint (``detection.checkpoints``), which needs the forecasts
of those slots too (``AnomalyConfig.forecast_lookback_slots``). Reading them back from Elasticsearch
costs slots x names documents per tick (~5 s for 360,000 at 10,000 names, measured); instead each
tick leaves them in a small file (a ``WindowStore``) with its own new one-step forecasts appended, and
the next tick starts from that file. Elasticsearch stays the source
of truth: without the file (first tick, retention, a skipped partition) the tick reads them back
from there, and the result is the same (``tauxcharge_assets_tests/test_incremental.py``).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import pandas as pd

from tauxcharge_assets.settings import to_utc
from tauxcharge_assets.window.store import WindowStore

COLUMNS = ["name", "issued_at", "target_timestamp", "value", "lower", "upper", "model_version"]


@dataclass(frozen=True)
class OneStepForecasts:
    """One-step forecasts (``COLUMNS``) for targets in ``[start, end)``, as Elasticsearch holds them."""

    start: pd.Timestamp
    end: pd.Timestamp
    frame: pd.DataFrame

    def covers(self, start: pd.Timestamp) -> bool:
        """Whether it reaches back to ``start`` (a longer ``forecast_lookback_slots`` needs an ES read)."""
        return self.start <= to_utc(start)

    def between(self, start: pd.Timestamp, end: pd.Timestamp) -> pd.DataFrame:
        targets = self.frame["target_timestamp"]
        return self.frame.loc[(targets >= to_utc(start)) & (targets < to_utc(end))].reset_index(drop=True)


def store_for(forecast_index: str, base: Path | None = None) -> WindowStore:
    return WindowStore.for_index(forecast_index, base=base, kind=OneStepForecasts, folder="forecast_window")


def carry_forward(
    earlier: pd.DataFrame, issued: pd.DataFrame, start: pd.Timestamp, end: pd.Timestamp
) -> OneStepForecasts:
    """The window for targets in ``[start, end)``: what was kept plus this tick's new one-step forecasts.

    ``issued``: the forecasts frame of this tick as written to Elasticsearch (finite rows only);
    its ``horizon_steps == 1`` rows are the forecasts the next tick scores its newest slot against.
    """
    new = issued.loc[issued["horizon_steps"] == 1, COLUMNS]
    kept = earlier.loc[earlier["target_timestamp"] >= to_utc(start), COLUMNS]
    frame = pd.concat([kept, new], ignore_index=True) if len(kept) else new.reset_index(drop=True)
    frame = frame.loc[frame["target_timestamp"] < to_utc(end)]
    # One forecast per (name, target): a rerun of this tick replaces its own, as its documents do in ES.
    frame = frame.drop_duplicates(["name", "target_timestamp"], keep="last").reset_index(drop=True)
    return OneStepForecasts(start=to_utc(start), end=to_utc(end), frame=frame)
