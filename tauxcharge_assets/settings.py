"""Paths and constants shared by every module.

Everything the project writes on disk (the local Elasticsearch, MLflow's sqlite store, Dagster's
storage) lives under one data folder so that a user can see and delete it in one place.
"""

from __future__ import annotations

import os
from pathlib import Path

import pandas as pd

STEP_MINUTES = 5
WINDOW_STEPS = 288  # 24 h of 5-minute points: the sequence each forecast is made from
QUANTILES = (0.1, 0.5, 0.9)  # the forecast distribution: p10, p50, p90 (an 80 % interval around the median)
REPO_ROOT = Path(__file__).resolve().parents[1]


def data_dir() -> Path:
    """The project's data folder: ``TAUXCHARGE_HOME`` or ``.tauxcharge/`` at the repository root."""
    path = Path(os.environ.get("TAUXCHARGE_HOME", REPO_ROOT / ".tauxcharge")).resolve()
    path.mkdir(parents=True, exist_ok=True)
    return path


def default_mlflow_tracking_uri() -> str:
    """``MLFLOW_TRACKING_URI`` when set, else a sqlite store in the data folder."""
    uri = os.environ.get("MLFLOW_TRACKING_URI")
    if uri:
        return uri
    return f"sqlite:///{data_dir() / 'mlflow.db'}"


def default_mlflow_artifact_location() -> str:
    return (data_dir() / "mlartifacts").as_uri()


def automation_enabled() -> bool:
    """``TAUXCHARGE_AUTOMATION=on`` starts the schedule and the sensor; off by default, so a fresh
    ``dagster dev`` does not hammer an empty cluster."""
    return os.environ.get("TAUXCHARGE_AUTOMATION", "").lower() in ("1", "on", "true", "yes")


def to_utc(ts: object) -> pd.Timestamp:
    """A UTC timestamp from anything pandas parses; naive values are taken as UTC."""
    stamp = pd.Timestamp(ts)
    return stamp.tz_localize("UTC") if stamp.tzinfo is None else stamp.tz_convert("UTC")
