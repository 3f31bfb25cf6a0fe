"""Dagster resources: Elasticsearch and MLflow, configured from the environment.

Secrets never appear in code, logs or metadata: the API key is passed as ``EnvVar`` and Dagster
shows only the variable's name.
"""

from __future__ import annotations

import contextlib
import functools
import os
from collections.abc import Iterator
from typing import Any

from dagster import Backoff, ConfigurableResource, EnvVar, Failure, Jitter, RetryPolicy
from elasticsearch import Elasticsearch
from pydantic import Field

from tauxcharge_assets.elastic.client import DEFAULT_RETRY_DEADLINE_S, ElasticsearchUnavailableError, connect
from tauxcharge_assets.elastic.indices import IndexNames, ensure_indices
from tauxcharge_assets.elastic.server import DEFAULT_PORT
from tauxcharge_assets.model import registry
from tauxcharge_assets.model.forecaster import ForecastModel
from tauxcharge_assets.model.registry import ModelHandle
from tauxcharge_assets.settings import default_mlflow_artifact_location, default_mlflow_tracking_uri

DEFAULT_ES_URL = f"http://127.0.0.1:{DEFAULT_PORT}"


# The tick assets retry a failed step 3 times, 5 s then 10 s then 20 s later (each +/- jitter). Inside a
# step every request to Elasticsearch is already retried for ``retry_deadline_s`` (60 s by default,
# see ``elastic.client.retrying``), so a server that stays down fails the run after at most about
# 60 s x (1 + 3) + 5 + 10 + 20 s (+ jitter, + ``connect``'s ~15 s of health checks per attempt),
# i.e. under 6 minutes, with one message naming the address; a server back within that rides it out.
TICK_RETRY_POLICY = RetryPolicy(max_retries=3, delay=5, backoff=Backoff.EXPONENTIAL, jitter=Jitter.PLUS_MINUS)


# Every job reads or writes Elasticsearch heavily; the production instance's queued run coordinator
# limits the runs carrying this tag (tauxcharge_assets/deploy/dagster.yaml).
ELASTICSEARCH_HEAVY = {"tauxcharge/elasticsearch": "heavy"}


@contextlib.contextmanager
def unavailable_as_failure() -> Iterator[None]:
    """An unreachable server is an expected failure: reported as its one-line message, no traceback."""
    try:
        yield
    except ElasticsearchUnavailableError as error:
        raise Failure(description=str(error)) from None


@functools.lru_cache(maxsize=8)
def _connected_client(
    url: str, api_key: str | None, prefix: str, attempts: int, retry_deadline_s: float = DEFAULT_RETRY_DEADLINE_S
) -> Elasticsearch:
    client = connect(url, api_key, attempts=attempts, retry_deadline_s=retry_deadline_s)
    ensure_indices(client, IndexNames(prefix))
    return client


class ElasticsearchResource(ConfigurableResource):
    """The metrics store; forecasts and anomalies are written back beside the metrics."""

    url: str = Field(default=DEFAULT_ES_URL, description="Base URL, e.g. https://es.example:9200")
    api_key: str | None = Field(default=None, description="Encoded API key; pass it as EnvVar, never inline")
    index_prefix: str = Field(default="tauxcharge", description="Indices are <prefix>-metrics, -forecasts, ...")
    connect_attempts: int = Field(default=5, description="Health-check attempts, with backoff, before failing")
    retry_deadline_s: float = Field(
        default=DEFAULT_RETRY_DEADLINE_S,
        description="How long each request retries transient errors (connection lost, 429, 502-504) before failing",
    )

    @property
    def indices(self) -> IndexNames:
        return IndexNames(self.index_prefix)

    def get_client(self) -> Elasticsearch:
        """A healthy client with the project's index templates and indices in place (once per process)."""
        return _connected_client(
            self.url, self.api_key, self.index_prefix, self.connect_attempts, self.retry_deadline_s
        )


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

    def version_metrics(self, version: str) -> dict[str, float]:
        """The metrics logged by the run that trained ``version`` (its backtest and the baselines')."""
        return registry.version_metrics(self.tracking_uri, self.registered_model_name, version)

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
