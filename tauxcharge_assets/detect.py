"""Causal anomaly detection over labelled files, in the Numenta Anomaly Benchmark's results layout.

``python -m tauxcharge_assets detect --input DIR --output DIR`` reads every ``timestamp,value`` CSV
and writes ``timestamp,value,anomaly_score``. The score at row t uses rows up to t only: forecasts
for row t come from the rows before it, the scoring is causal (see ``scoring``), and what is fitted
on a file itself (its scale, and the model when it is trained here) comes from its first 15 % only,
the benchmark's probationary period. The scoring is the code the ``anomaly_report`` asset runs.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from pathlib import Path

import numpy as np
import pandas as pd

from tauxcharge_assets import scoring
from tauxcharge_assets.forecaster import (
    ForecastModel,
    NameScaler,
    SeriesData,
    series_from_frame,
    train_forecast_model,
    windows,
)
from tauxcharge_assets.model import ModelHyperparameters

PROBATIONARY_FRACTION = 0.15


def read_input(path: Path) -> pd.DataFrame:
    frame = pd.read_csv(path)
    missing = {"timestamp", "value"} - set(frame.columns)
    if missing:
        raise ValueError(f"{path}: missing column(s) {sorted(missing)}; detect expects CSVs with timestamp,value.")
    values = pd.to_numeric(frame["value"], errors="coerce")
    if values.isna().any():
        bad = frame.loc[values.isna(), "value"].head(3).tolist()
        raise ValueError(
            f"{path}: {int(values.isna().sum())} non-numeric value(s), e.g. {bad}; fix or drop those rows."
        )
    return pd.DataFrame({"timestamp": frame["timestamp"], "value": values.astype(np.float64)})


def probationary_length(rows: int) -> int:
    return max(int(rows * PROBATIONARY_FRACTION), 1)


def fit_detector_model(
    files: Mapping[str, pd.DataFrame], hp: ModelHyperparameters, simulated: pd.DataFrame | None = None
) -> ForecastModel:
    """A model that learned only from the probationary part of each file (plus simulated series if given)."""
    data = [
        SeriesData(name, 0, frame["value"].to_numpy(np.float32)[: probationary_length(len(frame))], first_stamp(frame))
        for name, frame in files.items()
    ]
    vocabulary = 1
    if simulated is not None:
        ids = {str(name): i + 1 for i, name in enumerate(simulated.columns)}
        data += series_from_frame(simulated, ids)
        vocabulary = len(ids) + 1
    return train_forecast_model(data, hp, vocabulary)


def first_stamp(frame: pd.DataFrame) -> pd.Timestamp:
    return pd.Timestamp(pd.to_datetime(frame["timestamp"].iloc[0], utc=True))


def one_step_quantiles(model: ForecastModel, name: str, values: np.ndarray, start: pd.Timestamp) -> np.ndarray:
    """(rows, 3): the p10/p50/p90 forecast of every row from the rows before it (NaN for row 0)."""
    origins = np.arange(1, len(values))
    batch, _ = windows(SeriesData(name, 0, values.astype(np.float32), start), origins, model.hp, model.scaler)
    quantiles = model.predict_quantiles(batch)[:, 0, :]
    return np.vstack([np.full((1, 3), np.nan), quantiles])


def score_file(
    frame: pd.DataFrame, model: ForecastModel, config: scoring.ScoringConfig, name: str = "series"
) -> pd.DataFrame:
    values = frame["value"].to_numpy(np.float64)
    probation = values[: probationary_length(len(values))]
    scaler = NameScaler({**model.scaler.scales, **NameScaler.fit({name: probation}).scales})
    quantiles = one_step_quantiles(dataclasses.replace(model, scaler=scaler), name, values, first_stamp(frame))
    z = scoring.standardised_residuals(values, quantiles[:, 0], quantiles[:, 1], quantiles[:, 2])
    scores = scoring.score_residuals(z[:, None], config)
    return pd.DataFrame(
        {
            "timestamp": frame["timestamp"],
            "value": frame["value"],
            "anomaly_score": np.nan_to_num(scores.score[:, 0], nan=0.0),
        }
    )


def detect_directory(
    input_dir: Path,
    output_dir: Path,
    config: scoring.ScoringConfig,
    hp: ModelHyperparameters,
    model: ForecastModel | None = None,
    simulated: pd.DataFrame | None = None,
    detector_name: str = "tauxcharge",
) -> dict[str, Path]:
    """Score every CSV of ``input_dir`` into ``output_dir/<detector>_<file>.csv``; returns the files written."""
    paths = sorted(Path(input_dir).glob("*.csv"))
    if not paths:
        raise FileNotFoundError(f"No CSV files in {input_dir}: pass a folder of timestamp,value CSVs.")
    files = {path.stem: read_input(path) for path in paths}
    model = model or fit_detector_model(files, hp, simulated)
    output_dir.mkdir(parents=True, exist_ok=True)
    written: dict[str, Path] = {}
    for name, frame in files.items():
        target = output_dir / f"{detector_name}_{name}.csv"
        score_file(frame, model, config, name).to_csv(target, index=False)
        written[name] = target
    return written
