"""Dagster resources: Elasticsearch, MLflow and the alert webhook, configured from the environment.

Secrets never appear in code, logs or metadata: the API key and the password are passed as ``EnvVar``
and Dagster shows only the variables' names.
"""

from __future__ import annotations

import contextlib
import functools
import os
from collections.abc import Iterator
from typing import Any

import pandas as pd
from dagster import Backoff, ConfigurableResource, EnvVar, Failure, Jitter, RetryPolicy
from elasticsearch import ApiError, Elasticsearch
from pydantic import Field

from tauxcharge_assets.alerts.webhook import post_text
from tauxcharge_assets.data.shards import Shard
from tauxcharge_assets.elastic.client import (
    DEFAULT_RETRY_DEADLINE_S,
    ElasticsearchAccessError,
    ElasticsearchUnavailableError,
    Security,
    access_error,
    connect,
    is_access_denied,
)
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
    """An unreachable server, or one that refuses us, is an expected failure: reported as its one-line
    message, no traceback. A refusal is not retried by the step's ``RetryPolicy`` either: waiting does
    not fix a password (``allow_retries=False``)."""
    try:
        yield
    except ElasticsearchUnavailableError as error:
        raise Failure(description=str(error)) from None
    except ElasticsearchAccessError as error:
        raise Failure(description=str(error), allow_retries=False) from None


@functools.lru_cache(maxsize=8)
def _connected_client(
    url: str,
    api_key: str | None,
    prefix: str,
    attempts: int,
    retry_deadline_s: float = DEFAULT_RETRY_DEADLINE_S,
    security: Security | None = None,
) -> Elasticsearch:
    client = connect(url, api_key, attempts=attempts, retry_deadline_s=retry_deadline_s, security=security)
    try:
        ensure_indices(client, IndexNames(prefix))
    except ApiError as error:
        if not is_access_denied(error):
            raise
        raise access_error(url, f"the setup of the {prefix}-* index templates and indices", error) from None
    return client


class ElasticsearchResource(ConfigurableResource):
    """The metrics store; forecasts and anomalies are written back beside the metrics."""

    url: str = Field(default=DEFAULT_ES_URL, description="Base URL, e.g. https://es.example:9200")
    api_key: str | None = Field(default=None, description="Encoded API key; pass it as EnvVar, never inline")
    username: str | None = Field(default=None, description="Basic-auth user (instead of an API key)")
    password: str | None = Field(default=None, description="Basic-auth password; pass it as EnvVar, never inline")
    ca_certs: str | None = Field(default=None, description="Path to the PEM bundle of the CA that signed the server")
    verify_certs: bool = Field(default=True, description="Check the server's certificate (off only for testing)")
    ssl_assert_fingerprint: str | None = Field(
        default=None, description="SHA-256 fingerprint of the server's certificate, pinned instead of a CA bundle"
    )
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
            _resolved(self.url) or DEFAULT_ES_URL,
            _resolved(self.api_key),
            self.index_prefix,
            self.connect_attempts,
            self.retry_deadline_s,
            self.security(),
        )

    def security(self) -> Security:
        """The credentials and TLS settings; raises ``ElasticsearchAccessError`` when both kinds are set."""
        return Security(
            api_key=_resolved(self.api_key),
            username=_resolved(self.username),
            password=_resolved(self.password),
            ca_certs=_resolved(self.ca_certs),
            verify_certs=self.verify_certs,
            ssl_assert_fingerprint=_resolved(self.ssl_assert_fingerprint),
        )


def shard_run_config(shard: Shard, storage_dir: str, base: dict | None = None) -> dict:
    """Run config for one name shard's tick run (``data.shards``): ``raw_es_extract`` reads the shard's names
    (the shard then travels with the data to every later step) and the IO manager keeps the shard's outputs
    apart. ``storage_dir``: the IO manager's folder (run config replaces its whole configuration)."""
    config = dict(base or {})
    ops = dict(config.get("ops", {}))
    extract = dict(ops.get("raw_es_extract", {}).get("config", {}))
    ops["raw_es_extract"] = {"config": {**extract, "shard_index": shard.index, "shard_count": shard.count}}
    config["ops"] = ops
    config["resources"] = {
        **config.get("resources", {}),
        "io_manager": {"config": {"base_dir": storage_dir, "shard_index": shard.index, "shard_count": shard.count}},
    }
    return config


def _resolved(value: str | None) -> str | None:
    """The variable's value for an ``EnvVar`` still unresolved (a resource used outside a run): never its
    name sent as a password."""
    if isinstance(value, EnvVar):
        return value.get_value() or None
    return value or None


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
        """Point the ``champion`` alias at ``version``, once it loads the way a tick loads it: a version whose
        files are damaged or do not fit the code raises ``ModelArtifactError`` and the alias stays put."""
        self.load_model(version)
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


ALERT_WEBHOOK_VARIABLE = "TAUXCHARGE_ALERT_WEBHOOK_URL"


class AlertWebhookResource(ConfigurableResource):
    """Where alerts go: a Slack- or Teams-style incoming webhook taking ``{"text": ...}``. Without a URL,
    alerting is off (and the metadata says so). The URL may hold a token: pass it as EnvVar, never inline."""

    url: str | None = Field(default=None, description=f"Webhook URL; from {ALERT_WEBHOOK_VARIABLE} as EnvVar")
    timeout_s: float = Field(default=10.0, description="Seconds to wait for the receiver's answer, per attempt")
    attempts: int = Field(default=3, ge=1, description="Attempts in all on 5xx, 429, timeouts, connection errors")
    backoff_s: float = Field(default=1.0, description="Wait before the second attempt, doubling after")
    episode_gap_minutes: float = Field(
        default=60.0, description="An event with none of its subject this long before starts a new episode"
    )
    anomaly_max_age_minutes: float | None = Field(
        default=60.0,
        description="Critical anomalies older than this when found (a backfill of the past) are recorded but not "
        "sent; None: no limit",
    )

    @property
    def enabled(self) -> bool:
        return bool(self.url)

    @property
    def episode_gap(self) -> pd.Timedelta:
        return pd.Timedelta(minutes=self.episode_gap_minutes)

    @property
    def anomaly_max_age(self) -> pd.Timedelta | None:
        return None if self.anomaly_max_age_minutes is None else pd.Timedelta(minutes=self.anomaly_max_age_minutes)

    def send_text(self, text: str) -> None:
        """POST ``{"text": text}``, retried; raises ``AlertDeliveryError`` (never naming the URL)."""
        if not self.url:
            raise RuntimeError(f"Alerting is off: {ALERT_WEBHOOK_VARIABLE} is not set.")
        post_text(self.url, text, self.timeout_s, self.attempts, self.backoff_s)


def _env_or(name: str, default: str | None) -> str | EnvVar | None:
    """``EnvVar(name)`` when the variable is set, so Dagster reads it at run time and never shows it."""
    return EnvVar(name) if os.environ.get(name) else default


def _flag(name: str, default: bool) -> bool:
    value = os.environ.get(name, "").strip().lower()
    if not value:
        return default
    if value in ("1", "true", "yes", "on"):
        return True
    if value in ("0", "false", "no", "off"):
        return False
    raise ValueError(f"{name}={value!r}: expected true or false")


def elasticsearch_from_env(connect_attempts: int = 5) -> ElasticsearchResource:
    """The resource from ``TAUXCHARGE_ES_*``: the secrets (API key, user, password) as ``EnvVar``."""
    return ElasticsearchResource(
        url=_env_or("TAUXCHARGE_ES_URL", DEFAULT_ES_URL),
        api_key=_env_or("TAUXCHARGE_ES_API_KEY", None),
        username=_env_or("TAUXCHARGE_ES_USERNAME", None),
        password=_env_or("TAUXCHARGE_ES_PASSWORD", None),
        ca_certs=os.environ.get("TAUXCHARGE_ES_CA_CERTS") or None,
        verify_certs=_flag("TAUXCHARGE_ES_VERIFY_CERTS", True),
        ssl_assert_fingerprint=os.environ.get("TAUXCHARGE_ES_SSL_ASSERT_FINGERPRINT") or None,
        index_prefix=os.environ.get("TAUXCHARGE_INDEX_PREFIX", "tauxcharge"),
        connect_attempts=connect_attempts,
    )


def name_shards_from_env() -> int:
    """``TAUXCHARGE_NAME_SHARDS``: how many runs each tick is split into (1 by default)."""
    raw = os.environ.get("TAUXCHARGE_NAME_SHARDS", "1").strip() or "1"
    if not raw.isdigit() or int(raw) < 1:
        raise ValueError(f"TAUXCHARGE_NAME_SHARDS={raw!r}: expected a whole number of shards, 1 or more")
    return int(raw)


def alerts_from_env() -> AlertWebhookResource:
    return AlertWebhookResource(url=_env_or(ALERT_WEBHOOK_VARIABLE, None))


def mlflow_from_env() -> MlflowResource:
    return MlflowResource(tracking_uri=_env_or("MLFLOW_TRACKING_URI", default_mlflow_tracking_uri()))
