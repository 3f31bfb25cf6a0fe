"""Forecast documents, and anomalies found by comparing actual values with the forecasts made for them."""

from __future__ import annotations

import math
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd

from tauxcharge_assets.es_store import deterministic_id
from tauxcharge_assets.sequences import SequenceTensors
from tauxcharge_assets.settings import STEP_MINUTES

DETECTOR = "lstm-residual"


def forecast_frame(
    sequences: SequenceTensors,
    predictions: np.ndarray,
    model_name: str,
    model_version: str,
    partition_key: str,
    value_range: tuple[float, float] = (0.0, 100.0),
) -> pd.DataFrame:
    """One row per (name, horizon): the value forecast for ``issued_at + (h - 1) * 5 min``."""
    n, horizon = predictions.shape
    issued_at = sequences.next_timestamp
    steps = np.arange(1, horizon + 1)
    return pd.DataFrame(
        {
            "name": np.repeat(sequences.names, horizon),
            "issued_at": issued_at,
            "target_timestamp": issued_at + pd.to_timedelta(np.tile(steps - 1, n) * STEP_MINUTES, unit="min"),
            "horizon_steps": np.tile(steps, n).astype(np.int16),
            "value": np.clip(predictions.reshape(-1), *value_range).astype(np.float64),
            "model_name": model_name,
            "model_version": str(model_version),
            "partition_key": partition_key,
        }
    )


def forecast_documents(forecasts: pd.DataFrame) -> Iterator[tuple[str, dict[str, Any]]]:
    """Ids from (name, issued_at, horizon): a rerun or a backfill overwrites, never duplicates."""
    for row in forecasts.itertuples(index=False):
        issued = row.issued_at.isoformat()
        yield (
            deterministic_id("forecast", row.name, issued, row.horizon_steps),
            {
                "name": row.name,
                "issued_at": issued,
                "target_timestamp": row.target_timestamp.isoformat(),
                "horizon_steps": int(row.horizon_steps),
                "value": round(float(row.value), 4),
                "model_name": row.model_name,
                "model_version": row.model_version,
                "partition_key": row.partition_key,
            },
        )


@dataclass(frozen=True)
class AnomalyThresholds:
    warning_z: float = 4.0
    critical_z: float = 7.0
    min_scale: float = 0.5  # load-rate points: below this, variation is measurement noise


def usual_variation(values: np.ndarray, mask: np.ndarray, min_scale: float) -> np.ndarray:
    """A robust scale of each name's 5-minute changes over its window (1.4826 x median |diff|)."""
    observed = np.where(mask > 0, values, np.nan)
    with np.errstate(invalid="ignore"):
        scale = 1.4826 * np.nanmedian(np.abs(np.diff(observed, axis=1)), axis=1)
    return np.maximum(np.nan_to_num(scale, nan=min_scale), min_scale)


def detect_anomalies(
    actuals: pd.DataFrame,
    forecasts: pd.DataFrame,
    scale: pd.Series,
    thresholds: AnomalyThresholds,
) -> pd.DataFrame:
    """Every actual value that had a forecast, scored; ``is_anomaly`` marks those over the threshold.

    ``actuals``: name, timestamp, actual. ``forecasts``: name, target_timestamp, value, model_version.
    The score is the two-sided normal probability of a residual that small, in [0, 1].
    """
    merged = actuals.merge(
        forecasts.rename(columns={"target_timestamp": "timestamp", "value": "forecast"}),
        on=["name", "timestamp"],
        how="inner",
    )
    merged["residual"] = merged["actual"] - merged["forecast"]
    merged["scale"] = merged["name"].map(scale).fillna(thresholds.min_scale).clip(lower=thresholds.min_scale)
    merged["z_score"] = merged["residual"].abs() / merged["scale"]
    merged["score"] = [math.erf(z / math.sqrt(2.0)) for z in merged["z_score"]]
    merged["severity"] = np.select(
        [merged["z_score"] >= thresholds.critical_z, merged["z_score"] >= thresholds.warning_z],
        ["critical", "warning"],
        default="normal",
    )
    merged["is_anomaly"] = merged["severity"] != "normal"
    merged["reason"] = [
        f"actual {a:.1f} is {abs(r):.1f} points {'above' if r > 0 else 'below'} the forecast {f:.1f}: "
        f"{z:.1f}x the usual 5-minute variation of {s:.2f} (warning at {thresholds.warning_z:g}x)"
        for a, r, f, z, s in zip(
            merged["actual"],
            merged["residual"],
            merged["forecast"],
            merged["z_score"],
            merged["scale"],
            strict=True,
        )
    ]
    return merged.sort_values(["z_score"], ascending=False, kind="stable").reset_index(drop=True)


def anomaly_documents(
    anomalies: pd.DataFrame, partition_key: str, detected_at: pd.Timestamp
) -> Iterator[tuple[str, dict[str, Any]]]:
    for row in anomalies.itertuples(index=False):
        timestamp = row.timestamp.isoformat()
        yield (
            deterministic_id("anomaly", DETECTOR, row.name, timestamp),
            {
                "name": row.name,
                "timestamp": timestamp,
                "actual": float(row.actual),
                "forecast": float(row.forecast),
                "residual": float(row.residual),
                "z_score": float(row.z_score),
                "score": float(row.score),
                "severity": row.severity,
                "reason": row.reason,
                "model_version": str(row.model_version),
                "partition_key": partition_key,
                "detected_at": detected_at.isoformat(),
            },
        )
