"""Dagster resources: Elasticsearch and MLflow, configured from the environment.

Secrets never appear in code, logs or metadata: the API key is passed as ``EnvVar`` and Dagster
shows only the variable's name.
"""

from __future__ import annotations

import functools
import os
from typing import Any

from dagster import ConfigurableResource, EnvVar
from elasticsearch import Elasticsearch
from pydantic import Field

from tauxcharge_assets.elastic.client import connect
from tauxcharge_assets.elastic.indices import IndexNames, ensure_indices
from tauxcharge_assets.elastic.server import DEFAULT_PORT
from tauxcharge_assets.model import registry
from tauxcharge_assets.model.forecaster import ForecastModel
from tauxcharge_assets.model.registry import ModelHandle
from tauxcharge_assets.settings import default_mlflow_artifact_location, default_mlflow_tracking_uri

DEFAULT_ES_URL = f"http://127.0.0.1:{DEFAULT_PORT}"


@functools.lru_cache(maxsize=8)
def _connected_client(url: str, api_key: str | None, prefix: str, attempts: int) -> Elasticsearch:
    client = connect(url, api_key, attempts=attempts)
    ensure_indices(client, IndexNames(prefix))
    return client


class ElasticsearchResource(ConfigurableResource):
    """The metrics store; forecasts and anomalies are written back beside the metrics."""

    url: str = Field(default=DEFAULT_ES_URL, description="Base URL, e.g. https://es.example:9200")
    api_key: str | None = Field(default=None, description="Encoded API key; pass it as EnvVar, never inline")
    index_prefix: str = Field(default="tauxcharge", description="Indices are <prefix>-metrics, -forecasts, ...")
    connect_attempts: int = Field(default=5, description="Health-check attempts, with backoff, before failing")

    @property
    def indices(self) -> IndexNames:
        return IndexNames(self.index_prefix)

    def get_client(self) -> Elasticsearch:
        """A healthy client with the project's index templates and indices in place (once per process)."""
        return _connected_client(self.url, self.api_key, self.index_prefix, self.connect_attempts)


class MlflowResource(ConfigurableResource):
    """Where training runs are tracked and models registered (sqlite in the data folder by default)."""

    tracking_uri: str = Field(description="MLFLOW_TRACKING_URI, or sqlite:///<data folder>/mlflow.db")
    experiment_name: str = "tauxcharge-load-forecast"
    registered_model_name: str = "tauxcharge-load-lstm"
    artifact_location: str | None = Field(
        default=None,
        description="Artifact root for a new experiment; default: the data folder (sqlite store)",
    )

    def resolved_artifact_location(self) -> str | None:
        if self.artifact_location:
            return self.artifact_location
        return default_mlflow_artifact_location() if self.tracking_uri.startswith("sqlite") else None

    # The registry, said once: callers never pass (tracking_uri, registered_model_name) around.

    def champion_version(self) -> str | None:
        """The version the ``champion`` alias points at, or None before the first promotion."""
        return registry.champion_version(self.tracking_uri, self.registered_model_name)

    def latest_version(self) -> dict[str, Any] | None:
        """The newest registered version (version, created_at, tags), or None."""
        return registry.latest_version(self.tracking_uri, self.registered_model_name)

    def load_model(self, version: str) -> ForecastModel:
        """A registered version with its scales and calibration (cached per process and version)."""
        return registry.load_forecast_model(self.tracking_uri, self.registered_model_name, version)

    def promote(self, version: str) -> None:
        """Point the ``champion`` alias at ``version``."""
        registry.promote(self.tracking_uri, self.registered_model_name, version)

    def ensure_experiment(self) -> str:
        return registry.ensure_experiment(self.tracking_uri, self.experiment_name, self.resolved_artifact_location())

    def log_and_register(self, model: ForecastModel, metrics: dict[str, float], **details: Any) -> ModelHandle:
        """One MLflow run for a trained model and a new registered version (see ``registry.log_and_register``)."""
        return registry.log_and_register(
            model,
            metrics,
            tracking_uri=self.tracking_uri,
            experiment_name=self.experiment_name,
            registered_model_name=self.registered_model_name,
            artifact_location=self.resolved_artifact_location(),
            **details,
        )


def _env_or(name: str, default: str | None) -> str | EnvVar | None:
    """``EnvVar(name)`` when the variable is set, so Dagster reads it at run time and never shows it."""
    return EnvVar(name) if os.environ.get(name) else default


def elasticsearch_from_env() -> ElasticsearchResource:
    return ElasticsearchResource(
        url=_env_or("TAUXCHARGE_ES_URL", DEFAULT_ES_URL),
        api_key=_env_or("TAUXCHARGE_ES_API_KEY", None),
        index_prefix=os.environ.get("TAUXCHARGE_INDEX_PREFIX", "tauxcharge"),
    )


def mlflow_from_env() -> MlflowResource:
    return MlflowResource(tracking_uri=_env_or("MLFLOW_TRACKING_URI", default_mlflow_tracking_uri()))
