"""MLflow tracking and model registry: every training is a run, every trained model a registered version.

We talk to MLflow directly rather than through dagster-mlflow's ``mlflow_tracking`` resource: that
resource is not a ``ConfigurableResource`` and its end-run hook closes the run early in multi-op
jobs. The run is tagged with the Dagster run id so the two UIs link up.
"""

from __future__ import annotations

import functools
import json
import tempfile
import zipfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from tauxcharge_assets.model import numpy_network
from tauxcharge_assets.model.forecaster import ForecastModel, NameScaler
from tauxcharge_assets.model.network import CALENDAR_FEATURES, ModelHyperparameters, custom_objects
from tauxcharge_assets.settings import QUANTILES

SIDECAR = "forecaster"  # run artifacts the network needs around it: scales, calibration, hyperparameters
NETWORK_WEIGHTS = "network_weights.npz"  # the network's weights for ``numpy_network`` (no TensorFlow)
NAME_IDS = "name_ids.json"  # the name -> id mapping the network was trained with
KERAS_MODEL = "keras_model"  # the run's Keras model (the registered version is the pyfunc, ``serving``)
KERAS_MODEL_TAG = "keras_model_uri"  # version tag: where that version's Keras model is


CHAMPION_ALIAS = "champion"


@dataclass(frozen=True)
class ModelHandle:
    """A registered model version and how it was judged; the ``trained_model`` asset's value."""

    model_name: str
    version: str
    run_id: str
    trained_through: str
    hyperparameters: dict[str, Any]
    metrics: dict[str, float] = field(default_factory=dict)
    decision: dict[str, Any] = field(default_factory=dict)

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


def signature(hp: ModelHyperparameters):  # -> ModelSignature
    """Explicit tensor specs: ``log_model(input_example=...)`` fails for this multi-input model."""
    from mlflow.models import ModelSignature
    from mlflow.types.schema import Schema, TensorSpec

    f32 = np.dtype(np.float32)
    return ModelSignature(
        inputs=Schema(
            [
                TensorSpec(f32, (-1, hp.patches, 2 * hp.patch + CALENDAR_FEATURES), "sequence"),
                TensorSpec(f32, (-1, 2 * hp.patch), "recent"),
                TensorSpec(f32, (-1, 2 * hp.horizon), "seasonal"),
                TensorSpec(f32, (-1, CALENDAR_FEATURES), "calendar"),
                TensorSpec(np.dtype(np.int32), (-1,), "name_id"),
            ]
        ),
        outputs=Schema([TensorSpec(f32, (-1, hp.horizon, len(QUANTILES)), "quantiles")]),
    )


def pinned_requirements() -> list[str]:
    from importlib.metadata import version

    return [f"{package}=={version(package)}" for package in ("tensorflow", "keras", "numpy")]


def log_and_register(
    model: ForecastModel,
    metrics: dict[str, float],
    tracking_uri: str,
    experiment_name: str,
    registered_model_name: str,
    artifact_location: str | None,
    tags: dict[str, str],
    trained_through: pd.Timestamp,
    extra_params: dict[str, Any],
    figures: dict[str, Any] | None = None,
    tables: dict[str, pd.DataFrame] | None = None,
    decision: dict[str, Any] | None = None,
) -> ModelHandle:
    """One MLflow run per training: params, loss per epoch, metrics, plots, tables, the model, a version."""
    import mlflow

    from tauxcharge_assets.model import serving  # it loads through ``read_sidecar`` below

    hp = model.hp
    experiment_id = ensure_experiment(tracking_uri, experiment_name, artifact_location)
    with mlflow.start_run(experiment_id=experiment_id, tags=tags) as run:
        mlflow.log_params({**hp.as_params(), **extra_params, "trained_through": trained_through.isoformat()})
        for epoch in range(len(next(iter(model.history.values()), []))):
            mlflow.log_metrics({f"epoch_{key}": values[epoch] for key, values in model.history.items()}, step=epoch)
        mlflow.log_metrics({key: float(value) for key, value in metrics.items() if np.isfinite(value)})
        for name, figure in (figures or {}).items():
            mlflow.log_figure(figure, f"{name}.png")
        for name, table in (tables or {}).items():
            mlflow.log_table(table.reset_index(drop=True), f"{name}.json")
        if decision is not None:
            mlflow.log_dict(decision, "promotion_decision.json")
        with tempfile.TemporaryDirectory() as folder:
            sidecar = write_sidecar(model, Path(folder) / SIDECAR)
            mlflow.log_artifacts(str(sidecar), SIDECAR)  # what the ticks load (numpy, no TensorFlow)
            keras_model = mlflow.keras.log_model(  # kept for retraining and inspection, not registered
                model.network,
                name=KERAS_MODEL,
                signature=signature(hp),
                pip_requirements=pinned_requirements(),  # skips MLflow's inference: a subprocess re-importing TF
            )
            info = serving.log_pyfunc(sidecar, registered_model_name)
        version = str(info.registered_model_version)
        client = _client(tracking_uri)
        client.set_model_version_tag(registered_model_name, version, "trained_through", trained_through.isoformat())
        client.set_model_version_tag(registered_model_name, version, "run_id", run.info.run_id)
        client.set_model_version_tag(registered_model_name, version, KERAS_MODEL_TAG, keras_model.model_uri)
        return ModelHandle(
            model_name=registered_model_name,
            version=version,
            run_id=run.info.run_id,
            trained_through=trained_through.isoformat(),
            hyperparameters=hp.as_params(),
            metrics=metrics,
            decision=decision or {},
        )


class ModelArtifactError(ValueError):
    """A registered version that cannot forecast here: its stored files are unreadable, or do not fit the code."""


def _artifact_error(model_name: str, version: str, problem: str) -> ModelArtifactError:
    return ModelArtifactError(
        f"Version {version} of {model_name!r} cannot be used: {problem}. Point the champion alias at a working "
        "version (`python -m tauxcharge_assets promote --version N`) or retrain (retrain_job)."
    )


def write_sidecar(model: ForecastModel, folder: Path) -> Path:
    """The files a forecast needs around the network, and the network's weights for ``numpy_network``."""
    folder.mkdir(parents=True, exist_ok=True)
    calibration = {
        "interval_adjustment": [float(x) for x in model.interval_adjustment],
        "validation_coverage": model.validation_coverage,
    }
    for name, content in (
        ("hyperparameters.json", model.hp.as_params()),
        ("name_scales.json", model.scaler.scales_),
        ("calibration.json", calibration),
        (NAME_IDS, {name: int(name_id) for name, name_id in model.name_ids.items()}),
    ):
        (folder / name).write_text(json.dumps(content, indent=2))
    (folder / NETWORK_WEIGHTS).write_bytes(numpy_network.to_npz(numpy_network.weights_of(model.network)))
    return folder


def read_sidecar(folder: Path, network: Any | None = None) -> ForecastModel:
    """A ``ForecastModel`` from ``write_sidecar``'s folder, its network run by numpy unless one is given.

    The ticks (from the run's artifacts) and the served pyfunc (from its own) both load through here.
    """

    def stored(name: str) -> Any:
        return json.loads((folder / name).read_text())

    calibration = stored("calibration.json")
    return ForecastModel(
        network=network if network is not None else numpy_network.NumpyNetwork.from_npz(
            (folder / NETWORK_WEIGHTS).read_bytes()
        ),
        hp=ModelHyperparameters(**stored("hyperparameters.json")),
        scaler=NameScaler.from_scales(stored("name_scales.json")),
        interval_adjustment=np.asarray(calibration["interval_adjustment"], dtype=np.float32),
        validation_coverage=float(calibration["validation_coverage"]),
        name_ids=stored(NAME_IDS) if (folder / NAME_IDS).exists() else {},  # absent in early versions
    )


@functools.lru_cache(maxsize=4)
def load_forecast_model(tracking_uri: str, model_name: str, version: str) -> ForecastModel:
    """A registered version with its scales and calibration; loaded once per process and version.

    The network runs in numpy from the version's ``network_weights.npz`` (no TensorFlow import in a
    tick); a version registered before those weights were stored is loaded with Keras. A version whose
    files are there but unreadable (truncated, garbled) or do not fit the code (``check_usable``) raises
    ``ModelArtifactError`` naming it: never the Keras fallback, which would hide the damage.
    """
    import mlflow
    from mlflow.exceptions import MlflowException

    client = _client(tracking_uri)
    model_version = client.get_model_version(model_name, version)
    try:
        with tempfile.TemporaryDirectory() as folder:
            sidecar = Path(
                mlflow.artifacts.download_artifacts(
                    artifact_uri=f"runs:/{model_version.run_id}/{SIDECAR}", dst_path=folder
                )
            )
            network: Any = None
            if not (sidecar / NETWORK_WEIGHTS).exists():
                custom_objects()  # registers the network's own layer and loss before Keras deserialises them
                # Versions registered before the pyfunc are the Keras model itself; later ones name theirs.
                keras_uri = (model_version.tags or {}).get(KERAS_MODEL_TAG, f"models:/{model_name}/{version}")
                network = mlflow.keras.load_model(keras_uri)
            model = read_sidecar(sidecar, network)
        model.check_usable()
    except (MlflowException, OSError, EOFError, ValueError, KeyError, TypeError, zipfile.BadZipFile) as error:
        first_line = next(iter(str(error).splitlines()), "")
        raise _artifact_error(model_name, version, f"{type(error).__name__}: {first_line}") from error
    return model


def champion_version(tracking_uri: str, registered_model_name: str) -> str | None:
    """The version the ``champion`` alias points at, or None before the first promotion."""
    from mlflow.exceptions import MlflowException

    try:
        return str(_client(tracking_uri).get_model_version_by_alias(registered_model_name, CHAMPION_ALIAS).version)
    except MlflowException:
        return None


def version_metrics(tracking_uri: str, registered_model_name: str, version: str) -> dict[str, float]:
    """The metrics of the run that trained ``version``: its backtest beside the baselines (``backtest_*``)."""
    client = _client(tracking_uri)
    run_id = client.get_model_version(registered_model_name, version).run_id
    return dict(client.get_run(run_id).data.metrics) if run_id else {}


def promote(tracking_uri: str, registered_model_name: str, version: str) -> None:
    _client(tracking_uri).set_registered_model_alias(registered_model_name, CHAMPION_ALIAS, version)


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
