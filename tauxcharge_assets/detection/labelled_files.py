"""Causal anomaly detection over labelled files, in the Numenta Anomaly Benchmark's results layout.

``python -m tauxcharge_assets detect --input DIR --output DIR`` reads every ``timestamp,value`` CSV
and writes ``timestamp,value,anomaly_score``. The detector is ``detector.score_matrix``, the loop of
``detector.step`` the ``anomaly_report`` asset runs: an anomaly likelihood of the surprise of each
value against the LSTM's one-step p10/p50/p90 forecast, and a 30-day range rule (see ``detector``).

The score at row t uses rows up to t only: the forecast of row t comes from the rows before it, the
detector's state is built from earlier rows, and what is fitted on a file itself (its scale, and the
model when it is trained here) comes from its first 15 % only, the benchmark's probationary period.
A model trained on other series (the simulator's) may be passed in or added to the training set.
"""

from __future__ import annotations

import dataclasses
import pickle
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from tauxcharge_assets.detection import detector
from tauxcharge_assets.detection.input_rows import InputReport, read_labelled_csv
from tauxcharge_assets.model.forecaster import (
    ForecastModel,
    SeriesData,
    robust_floor,
    series_from_frame,
    train_forecast_model,
    windows,
)
from tauxcharge_assets.model.network import ModelHyperparameters

PROBATIONARY_FRACTION = 0.15
SCALE_ROWS = 600  # about 15 % of a two-week file of 5-minute rows


def read_input(path: Path) -> pd.DataFrame:
    """``timestamp,value`` rows in file order (see ``input_rows``: repeats, steps back and gaps are kept)."""
    return read_labelled_csv(path).frame


def probationary_length(rows: int) -> int:
    return max(int(rows * PROBATIONARY_FRACTION), 1)


def fit_detector_model(
    files: Mapping[str, pd.DataFrame],
    hp: ModelHyperparameters,
    simulated: pd.DataFrame | None = None,
    callbacks: list[Any] | None = None,
) -> ForecastModel:
    """A model that learned only from the probationary part of each file (plus simulated series if given).

    ``callbacks`` are extra Keras callbacks for the fit (the command line's epoch progress bar).
    """
    data = [
        SeriesData(name, 0, frame["value"].to_numpy(np.float32)[: probationary_length(len(frame))], first_stamp(frame))
        for name, frame in files.items()
    ]
    vocabulary = 1
    if simulated is not None:
        ids = {str(name): i + 1 for i, name in enumerate(simulated.columns)}
        data += series_from_frame(simulated, ids)
        vocabulary = len(ids) + 1
    return train_forecast_model(data, hp, vocabulary, callbacks)


def first_stamp(frame: pd.DataFrame) -> pd.Timestamp:
    return pd.Timestamp(pd.to_datetime(frame["timestamp"].iloc[0], utc=True))


def causal_scales(values: np.ndarray) -> np.ndarray:
    """Scale for forecasting each row: the mean one-step change of the rows before it, frozen after SCALE_ROWS.

    A scale fitted on the first 15 % would depend on the file's length (cutting the file would change
    the scores of the rows it keeps); this one depends on earlier rows only and still settles early.
    """
    known = values[:SCALE_ROWS]
    changes = np.abs(np.diff(known))
    observed = np.concatenate([[0.0], np.isfinite(changes).cumsum()])
    total = np.concatenate([[0.0], np.nan_to_num(changes).cumsum()])
    with np.errstate(invalid="ignore", divide="ignore"):
        mean_change = total / observed
    level = pd.Series(known).expanding().median().to_numpy()
    seen = np.minimum(np.arange(len(values)), len(known))  # row t sees rows 0..t-1 of the first SCALE_ROWS
    return robust_floor(mean_change[np.maximum(seen - 1, 0)], np.concatenate([[np.nan], level])[seen])


def one_step_quantiles(model: ForecastModel, name: str, values: np.ndarray, start: pd.Timestamp) -> np.ndarray:
    """(rows, 3): the p10/p50/p90 forecast of every row from the rows before it (NaN for row 0)."""
    origins = np.arange(1, len(values))
    batch, _ = windows(SeriesData(name, 0, values.astype(np.float32), start), origins, model.hp, model.scaler)
    batch = dataclasses.replace(batch, scale=causal_scales(values)[origins])
    quantiles = model.predict_quantiles(batch)[:, 0, :]
    return np.vstack([np.full((1, 3), np.nan), quantiles])


def score_file(
    frame: pd.DataFrame, model: ForecastModel, config: detector.DetectorConfig, name: str = "series"
) -> pd.DataFrame:
    """NAB results rows for one file; see ``causal_scales`` for the scale the network sees."""
    values = frame["value"].to_numpy(np.float64)
    quantiles = one_step_quantiles(model, name, values, first_stamp(frame))
    scores = detector.score_matrix(values, quantiles[:, 0], quantiles[:, 1], quantiles[:, 2], config)
    return pd.DataFrame(
        {
            "timestamp": frame["timestamp"],
            "value": frame["value"],
            "anomaly_score": np.nan_to_num(scores[:, 0], nan=0.0),
        }
    )


def save_detector_model(model: ForecastModel, prefix: Path) -> None:
    """``prefix.keras`` + ``prefix.pkl`` (hyperparameters, scales, interval calibration), for reuse."""
    model.network.save(prefix.with_suffix(".keras"))
    with prefix.with_suffix(".pkl").open("wb") as handle:
        pickle.dump((model.hp, model.scaler, model.interval_adjustment), handle)


def load_detector_model(prefix: Path) -> ForecastModel:
    """The model ``save_detector_model`` wrote (a trusted local file: it is unpickled)."""
    import keras

    from tauxcharge_assets.model.network import custom_objects

    custom_objects()
    with prefix.with_suffix(".pkl").open("rb") as handle:
        hp, scaler, adjustment = pickle.load(handle)
    return ForecastModel(keras.models.load_model(prefix.with_suffix(".keras")), hp, scaler, adjustment)


def detect_directory(
    input_dir: Path,
    output_dir: Path,
    config: detector.DetectorConfig,
    hp: ModelHyperparameters,
    model: ForecastModel | None = None,
    simulated: pd.DataFrame | None = None,
    detector_name: str = "tauxcharge",
    progress: Callable[[str], None] | None = None,
    on_read: Callable[[InputReport], None] | None = None,
) -> dict[str, Path]:
    """Score every CSV of ``input_dir`` into ``output_dir/<detector>_<file>.csv``; returns the files written.

    ``progress`` is called with each file's name once it is scored (the command line's progress bar).
    ``on_read`` is called with each file's ``InputReport`` once all are read, before any training or
    scoring, so the caller can say what it accepted (``report.needed_handling``, ``report.summary()``).
    """
    paths = sorted(Path(input_dir).glob("*.csv"))
    if not paths:
        raise FileNotFoundError(f"No CSV files in {input_dir}: pass a folder of timestamp,value CSVs.")
    inputs = {path.stem: read_labelled_csv(path) for path in paths}
    files = {name: read.frame for name, read in inputs.items()}
    if on_read is not None:
        for read in inputs.values():
            on_read(read.report)
    model = model or fit_detector_model(files, hp, simulated)
    output_dir.mkdir(parents=True, exist_ok=True)
    written: dict[str, Path] = {}
    for name, frame in files.items():
        target = output_dir / f"{detector_name}_{name}.csv"
        score_file(frame, model, config, name).to_csv(target, index=False)
        written[name] = target
        if progress is not None:
            progress(name)
    return written
