"""The registered model as one MLflow pyfunc: raw recent values per name in, the tick's forecasts out.

A registered version answers ``mlflow.pyfunc.load_model("models:/<name>@champion").predict(frame)``
and ``mlflow models serve`` without Elasticsearch and without TensorFlow. It carries:

* the network's weights (run by ``numpy_network``), the per-name scales, the interval calibration,
  the hyperparameters and the name -> id mapping it was trained with (``registry.write_sidecar``'s
  folder, the same files the ticks load from the run);
* the input preparation: this package as the model's code (``code_paths``) and the cleaning rules in
  its ``model_config``, so a request goes through the tick's own steps: ``clean_series`` (the grid,
  range, duplicate and short-gap rules), ``build_sequences`` (the last 288 slots, the mask, the ids;
  a name the training never saw gets ``UNKNOWN_NAME_ID``, the embedding every id beyond the
  network's vocabulary falls back to in a tick), ``ForecastModel.batch_for`` and ``forecast_frame``.

The forecasts are issued at the slot after the newest timestamp of the request (the tick: after its
window's last slot), or at the ``issued_at`` parameter; the 288 slots before it are the window.
"""

from __future__ import annotations

import dataclasses
from importlib.metadata import version
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from mlflow.models import ModelSignature
from mlflow.pyfunc import PythonModel, PythonModelContext
from mlflow.types.schema import ColSpec, ParamSchema, ParamSpec, Schema

from tauxcharge_assets.data.cleaning import CleaningRules, clean_series
from tauxcharge_assets.data.documents import NAT, parse_times
from tauxcharge_assets.data.sequences import build_sequences
from tauxcharge_assets.model.forecast_documents import forecast_frame
from tauxcharge_assets.model.forecaster import ForecastModel
from tauxcharge_assets.settings import STEP_MINUTES, WINDOW_STEPS, to_utc

ARTIFACT = "forecaster"  # the pyfunc's artifact: ``registry.write_sidecar``'s folder
INPUT_COLUMNS = ("name", "timestamp", "value")
OUTPUT_COLUMNS = ("name", "issued_at", "target_timestamp", "horizon_steps", "lower", "value", "upper", "method")
PACKAGE = Path(__file__).resolve().parents[1]  # tauxcharge_assets: the input preparation, carried as code
# What the package imports on the serving path (``--env-manager virtualenv`` installs these; ``local`` uses
# the current environment, where the package itself is installed too).
REQUIREMENTS = ("mlflow", "numpy", "pandas", "scikit-learn", "elasticsearch")

# ``timestamp`` is ISO 8601 text, as in the metric documents (any offset, e.g. "2026-03-02T11:55:00Z"):
# MLflow's ``datetime`` type takes only timezone-naive values.
SIGNATURE = ModelSignature(
    inputs=Schema([ColSpec("string", "name"), ColSpec("string", "timestamp"), ColSpec("double", "value")]),
    outputs=Schema(
        [
            ColSpec("string", "name"),
            ColSpec("datetime", "issued_at"),
            ColSpec("datetime", "target_timestamp"),
            ColSpec("long", "horizon_steps"),
            ColSpec("double", "lower"),
            ColSpec("double", "value"),
            ColSpec("double", "upper"),
            ColSpec("string", "method"),  # lstm, or naive for a window too sparse (as in a tick)
        ]
    ),
    params=ParamSchema([ParamSpec("issued_at", "string", "")]),
)


def issue_time(recent: pd.DataFrame, issued_at: str | None = None) -> pd.Timestamp:
    """When the forecasts start: ``issued_at`` on the grid, else the slot after the newest timestamp."""
    if issued_at:
        return to_utc(issued_at).floor(f"{STEP_MINUTES}min")
    stamps = parse_times(recent["timestamp"])
    stamps = stamps[stamps != NAT]
    if not len(stamps):
        raise ValueError("No parseable timestamp in the request: send ISO 8601 times (or give issued_at).")
    newest = pd.Timestamp(int(stamps.max()), unit="ns", tz="UTC")
    return newest.floor(f"{STEP_MINUTES}min") + pd.Timedelta(minutes=STEP_MINUTES)


def forecast_recent(
    model: ForecastModel, recent: pd.DataFrame, rules: CleaningRules, issued_at: str | None = None
) -> pd.DataFrame:
    """One row per (name, horizon step) from long-format ``name``, ``timestamp``, ``value`` rows.

    A name with no usable value in the 288 slots before the issue time gets no rows (as in a tick).
    """
    end = issue_time(recent, issued_at)
    start = end - pd.Timedelta(minutes=STEP_MINUTES * WINDOW_STEPS)
    sequences = build_sequences(clean_series(recent[list(INPUT_COLUMNS)], start, end, rules), model.name_ids)
    quantiles, methods = model.forecast_tick(
        sequences.names, sequences.name_ids, sequences.values, sequences.mask, sequences.next_timestamp
    )
    frame = forecast_frame(sequences, quantiles, "", "", "", methods)
    return frame[list(OUTPUT_COLUMNS)].astype({"horizon_steps": np.int64})


class ForecastService(PythonModel):
    """The pyfunc: loads the sidecar folder once (numpy only), then answers ``forecast_recent``."""

    def load_context(self, context: PythonModelContext) -> None:
        from tauxcharge_assets.model.registry import read_sidecar

        self.model = read_sidecar(Path(context.artifacts[ARTIFACT]))
        self.rules = CleaningRules(**(context.model_config or {}).get("cleaning_rules", {}))

    def predict(
        self, context: PythonModelContext, model_input: pd.DataFrame, params: dict[str, Any] | None = None
    ) -> pd.DataFrame:
        return forecast_recent(self.model, model_input, self.rules, (params or {}).get("issued_at") or None)


def log_pyfunc(sidecar: Path, registered_model_name: str) -> Any:  # -> mlflow.models.model.ModelInfo
    """Log ``sidecar`` as the active run's pyfunc model ``model`` and register it as a new version."""
    import mlflow

    return mlflow.pyfunc.log_model(
        name="model",
        python_model=ForecastService(),
        artifacts={ARTIFACT: str(sidecar)},
        code_paths=[str(PACKAGE)],
        model_config={"cleaning_rules": dataclasses.asdict(CleaningRules())},
        signature=SIGNATURE,
        registered_model_name=registered_model_name,
        pip_requirements=[f"{package}=={version(package)}" for package in REQUIREMENTS],  # no inference subprocess
    )
