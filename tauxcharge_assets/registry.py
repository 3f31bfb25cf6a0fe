"""MLflow tracking and model registry: every training is a run, every trained model a registered version.

We talk to MLflow directly rather than through dagster-mlflow's ``mlflow_tracking`` resource: that
resource is not a ``ConfigurableResource`` and its end-run hook closes the run early in multi-op
jobs. The run is tagged with the Dagster run id so the two UIs link up.
"""

from __future__ import annotations

import functools
import json
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from tauxcharge_assets.model import ModelHyperparameters


@dataclass(frozen=True)
class ModelHandle:
    """What the forecasts need to find and use a trained model; the ``trained_model`` asset's value."""

    model_name: str
    version: str
    run_id: str
    trained_through: str
    hyperparameters: dict[str, Any]
    metrics: dict[str, float] = field(default_factory=dict)

    @property
    def model_uri(self) -> str:
        return f"models:/{self.model_name}/{self.version}"

    @property
    def hp(self) -> ModelHyperparameters:
        return ModelHyperparameters(**self.hyperparameters)


def _client(tracking_uri: str):
    import mlflow

    mlflow.set_tracking_uri(tracking_uri)
    mlflow.set_registry_uri(tracking_uri)
    return mlflow.MlflowClient(tracking_uri=tracking_uri, registry_uri=tracking_uri)


def ensure_experiment(tracking_uri: str, experiment_name: str, artifact_location: str | None) -> str:
    client = _client(tracking_uri)
    experiment = client.get_experiment_by_name(experiment_name)
    if experiment is not None:
        return experiment.experiment_id
    return client.create_experiment(experiment_name, artifact_location=artifact_location)


def log_and_register(
    model: Any,
    hp: ModelHyperparameters,
    metrics: dict[str, float],
    history: dict[str, list[float]],
    tracking_uri: str,
    experiment_name: str,
    registered_model_name: str,
    artifact_location: str | None,
    tags: dict[str, str],
    trained_through: pd.Timestamp,
    extra_params: dict[str, Any],
    figures: dict[str, Any] | None = None,
) -> ModelHandle:
    import mlflow
    from mlflow.models import ModelSignature
    from mlflow.types.schema import Schema, TensorSpec

    experiment_id = ensure_experiment(tracking_uri, experiment_name, artifact_location)
    signature = ModelSignature(
        inputs=Schema(
            [
                TensorSpec(np.dtype(np.float32), (-1, hp.patches, 2 * hp.patch + 2), "sequence"),
                TensorSpec(np.dtype(np.int32), (-1,), "name_id"),
            ]
        ),
        outputs=Schema([TensorSpec(np.dtype(np.float32), (-1, hp.horizon), "delta_forecast")]),
    )
    with mlflow.start_run(experiment_id=experiment_id, tags=tags) as run:
        mlflow.log_params({**hp.as_params(), **extra_params, "trained_through": trained_through.isoformat()})
        for epoch in range(len(next(iter(history.values()), []))):
            mlflow.log_metrics({f"epoch_{key}": values[epoch] for key, values in history.items()}, step=epoch)
        mlflow.log_metrics(metrics)
        for name, figure in (figures or {}).items():
            mlflow.log_figure(figure, f"{name}.png")
        with tempfile.TemporaryDirectory() as folder:
            path = Path(folder) / "hyperparameters.json"
            path.write_text(json.dumps(hp.as_params(), indent=2))
            mlflow.log_artifact(str(path))
        info = mlflow.keras.log_model(
            model, name="model", signature=signature, registered_model_name=registered_model_name
        )
        version = str(info.registered_model_version)
        _client(tracking_uri).set_model_version_tag(
            registered_model_name, version, "trained_through", trained_through.isoformat()
        )
        return ModelHandle(
            model_name=registered_model_name,
            version=version,
            run_id=run.info.run_id,
            trained_through=trained_through.isoformat(),
            hyperparameters=hp.as_params(),
            metrics=metrics,
        )


@functools.lru_cache(maxsize=4)
def load_model(tracking_uri: str, model_uri: str) -> Any:
    """Loaded once per process: a tick reuses the model the previous tick loaded."""
    import mlflow

    _client(tracking_uri)
    return mlflow.keras.load_model(model_uri)


def latest_version(tracking_uri: str, registered_model_name: str) -> dict[str, Any] | None:
    """The newest registered version with its creation time, or None when the model has none."""
    from mlflow.exceptions import MlflowException

    client = _client(tracking_uri)
    try:
        versions = client.search_model_versions(f"name = '{registered_model_name}'")
    except MlflowException:
        return None
    if not versions:
        return None
    newest = max(versions, key=lambda v: int(v.version))
    return {
        "version": str(newest.version),
        "created_at": pd.Timestamp(int(newest.creation_timestamp), unit="ms", tz="UTC"),
        "tags": dict(newest.tags or {}),
    }
