"""The anomaly report of a tick: the newest actual values scored by the detector, worded for an operator,
and the Elasticsearch documents they become."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import numpy as np
import pandas as pd

from tauxcharge_assets.detection.scoring import ScoringConfig, score_series, severity, standardised_residuals
from tauxcharge_assets.elastic.bulk import deterministic_id

DETECTOR = "lstm-evidence-records"


SCORED_COLUMNS = [
    "name",
    "timestamp",
    "actual",
    "forecast",
    "lower",
    "upper",
    "residual",
    "z_score",
    "evidence",
    "ratio_to_record",
    "score",
    "severity",
    "is_anomaly",
    "reason",
    "model_version",
]
EVIDENCE_WORDS = {
    "forecast": "the error against the one-step forecast",
    "residual_level": "the shift of the recent forecast errors",
    "value_level": "the shift of the recent level",
    "variance": "the change in short-term variability",
}


def score_recent_slots(
    actuals: pd.DataFrame, forecasts: pd.DataFrame, config: ScoringConfig, evaluated_slots: int = 1
) -> pd.DataFrame:
    """Scores of the last ``evaluated_slots`` slots of ``actuals`` (slots x names, NaN = not observed).

    ``forecasts``: the one-step-ahead forecasts made for those slots and earlier ones (name,
    issued_at, target_timestamp, value, lower, upper, model_version). Slots without a forecast still
    carry value-based evidence (level shift, variability); see ``scoring.score_series``.
    """
    if actuals.empty:
        return pd.DataFrame(columns=SCORED_COLUMNS).astype({"is_anomaly": bool, "score": float})
    latest = forecasts.sort_values("issued_at").drop_duplicates(["name", "target_timestamp"], keep="last")

    def wide(column: str) -> np.ndarray:
        if latest.empty:
            return np.full(actuals.shape, np.nan)
        table = latest.pivot(index="target_timestamp", columns="name", values=column)
        return table.reindex(index=actuals.index, columns=actuals.columns).to_numpy(dtype=np.float64)

    p50, p10, p90 = wide("value"), wide("lower"), wide("upper")
    values = actuals.to_numpy(dtype=np.float64)
    evaluated_slots = min(evaluated_slots, len(values))
    result = score_series(values, p10, p50, p90, config, last_slots=evaluated_slots)
    rows = slice(len(values) - evaluated_slots, len(values))
    names = np.array(actuals.columns)
    stamps = actuals.index[rows]

    def flat(array: np.ndarray) -> np.ndarray:
        return np.asarray(array).reshape(-1)

    frame = pd.DataFrame(
        {
            "name": np.tile(names, len(stamps)),
            "timestamp": np.repeat(stamps, len(names)),
            "actual": flat(values[rows]),
            "forecast": flat(p50[rows]),
            "lower": flat(p10[rows]),
            "upper": flat(p90[rows]),
            "z_score": flat(standardised_residuals(values[rows], p10[rows], p50[rows], p90[rows])),
            "evidence": flat(result.strongest()),
            "ratio_to_record": flat(result.combined_ratio),
            "score": flat(result.score),
        }
    )
    frame = frame[np.isfinite(frame["score"])].reset_index(drop=True)
    frame["residual"] = frame["actual"] - frame["forecast"]
    frame["severity"] = severity(frame["score"].to_numpy(), config)
    frame["is_anomaly"] = frame["severity"] != "normal"
    versions = latest.set_index(["name", "target_timestamp"])["model_version"] if len(latest) else pd.Series()
    frame["model_version"] = versions.reindex(pd.MultiIndex.from_frame(frame[["name", "timestamp"]])).to_numpy()
    frame["reason"] = [
        f"actual {a:.4g} vs forecast {f:.4g} (80 % interval {lo:.4g}..{hi:.4g}): {EVIDENCE_WORDS[e]} "
        f"is {r:.1f}x its largest value of the previous {config.record_window} slots"
        for a, f, lo, hi, e, r in zip(
            frame["actual"],
            frame["forecast"],
            frame["lower"],
            frame["upper"],
            frame["evidence"],
            frame["ratio_to_record"],
            strict=True,
        )
    ]
    return frame[SCORED_COLUMNS].sort_values("score", ascending=False, kind="stable").reset_index(drop=True)


def _number(value: float) -> float | None:
    """JSON has no NaN: a value without a forecast is stored as null."""
    return float(value) if np.isfinite(value) else None


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
                "forecast": _number(row.forecast),
                "lower": _number(row.lower),
                "upper": _number(row.upper),
                "residual": _number(row.residual),
                "z_score": _number(row.z_score),
                "evidence": row.evidence,
                "ratio_to_record": float(row.ratio_to_record),
                "score": float(row.score),
                "severity": row.severity,
                "reason": row.reason,
                "model_version": None if pd.isna(row.model_version) else str(row.model_version),
                "partition_key": partition_key,
                "detected_at": detected_at.isoformat(),
            },
        )
