"""The indices of one deployment and the composable index templates the project owns.

Everything uses only core index-template APIs: the integ-test build we run against has no ingest
pipelines, ES|QL, painless, update/delete-by-query or ILM, so the product must not depend on them.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import pandas as pd
from elasticsearch import ApiError, Elasticsearch

from tauxcharge_assets.elastic.client import retrying
from tauxcharge_assets.settings import to_utc


@dataclass(frozen=True)
class IndexNames:
    """The indices of one deployment; tests use their own prefix so they never touch real data."""

    prefix: str = "tauxcharge"

    @property
    def metrics(self) -> str:
        return f"{self.prefix}-metrics"

    @property
    def forecasts(self) -> str:
        return f"{self.prefix}-forecasts"

    @property
    def anomalies(self) -> str:
        return f"{self.prefix}-anomalies"

    @property
    def names(self) -> str:
        return f"{self.prefix}-names"

    @property
    def detector_state(self) -> str:
        return f"{self.prefix}-detector-state"

    @property
    def window_state(self) -> str:
        """Hourly copies of the tick's rolling window, for a new worker (``window.shared_store``)."""
        return f"{self.prefix}-window-state"

    @property
    def alerts(self) -> str:
        """Alert events and the claims that make each episode's message go out once (``alerts.episodes``)."""
        return f"{self.prefix}-alerts"

    @property
    def quarantine(self) -> str:
        """The base of the daily quarantine indices (``<prefix>-quarantine-YYYY.MM.DD``, see ``daily``)."""
        return f"{self.prefix}-quarantine"

    def daily(self, base: str, day: pd.Timestamp) -> str:
        """One index per UTC day, so retention drops whole indices (this build has no delete-by-query)."""
        return f"{base}-{to_utc(day):%Y.%m.%d}"


_SETTINGS = {"number_of_shards": 1, "number_of_replicas": 0, "refresh_interval": "1s"}

_KEYWORD_STRINGS = [{"strings_as_keywords": {"match_mapping_type": "string", "mapping": {"type": "keyword"}}}]

_TEMPLATES: dict[str, dict[str, Any]] = {
    "metrics": {
        "dynamic_templates": _KEYWORD_STRINGS,  # dimension fields (site, kind, ...) become keywords
        "properties": {
            "timestamp": {"type": "date", "ignore_malformed": True},
            "name": {"type": "keyword"},
            # Malformed values are kept in _source and counted by the cleaning step, never rejected.
            "value": {"type": "float", "ignore_malformed": True},
            "ingested_at": {"type": "date", "ignore_malformed": True},
        },
    },
    "forecasts": {
        "dynamic": "strict",
        "properties": {
            "name": {"type": "keyword"},
            "issued_at": {"type": "date"},
            "target_timestamp": {"type": "date"},
            "horizon_steps": {"type": "short"},
            # double, not float: the anomaly step reads them back from doc values, exactly as written
            "value": {"type": "double"},
            "lower": {"type": "double"},
            "upper": {"type": "double"},
            "model_name": {"type": "keyword"},
            "model_version": {"type": "keyword"},
            "partition_key": {"type": "keyword"},
            "method": {"type": "keyword"},  # lstm, or naive: the fallback for a sparse window (model.forecaster)
        },
    },
    "anomalies": {
        "dynamic": "strict",
        "properties": {
            "name": {"type": "keyword"},
            "timestamp": {"type": "date"},
            "actual": {"type": "float"},
            "forecast": {"type": "float"},
            "lower": {"type": "float"},
            "upper": {"type": "float"},
            "residual": {"type": "float"},
            "z_score": {"type": "float"},
            "evidence": {"type": "keyword"},
            "likelihood_decades": {"type": "float"},
            "recent_surprise": {"type": "float"},
            "usual_surprise": {"type": "float"},
            "score": {"type": "float"},
            "severity": {"type": "keyword"},
            "reason": {"type": "text", "fields": {"keyword": {"type": "keyword", "ignore_above": 512}}},
            "model_version": {"type": "keyword"},
            "partition_key": {"type": "keyword"},
            "detected_at": {"type": "date"},
        },
    },
    "detector_state": {  # hourly checkpoints of the detector, 500 names per document (detection.checkpoints)
        "dynamic": "strict",
        "properties": {
            "checkpoint_at": {"type": "date"},
            "chunk": {"type": "integer"},
            "chunks": {"type": "integer"},
            "day": {"type": "integer"},
            "shard": {"type": "keyword"},  # "i/n" for a name shard's checkpoint (data.shards); absent unsharded
            "state": {"type": "object", "enabled": False},  # kept in _source only, never indexed
        },
    },
    "window_state": {  # hourly rolling windows in base64 chunks (window.shared_store)
        "dynamic": "strict",
        "properties": {
            "key": {"type": "keyword"},
            "window_end": {"type": "date"},
            "chunk": {"type": "integer"},
            "chunks": {"type": "integer"},
            "digest": {"type": "keyword"},  # sha256 of the whole write: chunks of two writes never mix
            "state": {"type": "binary"},  # not searchable, kept in _source only
        },
    },
    "alerts": {  # events (record=event) and claims (record=claim) of alerts.episodes
        "dynamic": "strict",
        "properties": {
            "record": {"type": "keyword"},
            "kind": {"type": "keyword"},
            "subject": {"type": "keyword"},
            "at": {"type": "date"},
            "episode_start": {"type": "date"},
            "token": {"type": "keyword"},
            "partition_key": {"type": "keyword"},
            "run_id": {"type": "keyword"},
        },
    },
    "quarantine": {  # one entry per bad metric document (data.quarantine), in daily indices
        "dynamic": "strict",
        "properties": {
            "document_id": {"type": "keyword"},
            "metrics_index": {"type": "keyword"},
            "reason": {"type": "keyword"},
            "detail": {"type": "text"},
            "kept": {"type": "boolean"},
            "name": {"type": "keyword"},
            "timestamp": {"type": "date"},
            "ingested_at": {"type": "date"},
            "sent": {"type": "keyword", "ignore_above": 2048},
            "partition_key": {"type": "keyword"},
        },
    },
    "names": {
        "dynamic": "strict",
        "properties": {
            "name": {"type": "keyword"},
            "name_id": {"type": "integer"},
            "next_id": {"type": "integer"},
        },
    },
}


_DAILY = {"quarantine"}  # created on first write, one per day; the others exist from the start


def ensure_indices(client: Elasticsearch, indices: IndexNames) -> None:
    """Install the composable index templates we own, then create the indices if missing."""
    for kind, mappings in _TEMPLATES.items():
        index = getattr(indices, kind)
        client.indices.put_index_template(
            name=f"{index}-template",
            index_patterns=[f"{index}-*" if kind in _DAILY else f"{index}*"],
            priority=500,
            template={"settings": _SETTINGS, "mappings": mappings},
            meta={"owner": "tauxcharge_assets"},
        )
        if kind in _DAILY:
            continue
        if not client.indices.exists(index=index):
            try:
                client.indices.create(index=index)
            except ApiError as error:
                if error.status_code != 400 or "resource_already_exists" not in str(error):
                    raise
        else:  # an index made by an older template gains the new fields (adding fields is always allowed)
            try:
                client.indices.put_mapping(index=index, properties=mappings["properties"])
            except ApiError as error:
                # The metrics belong to whoever writes them: a least-privilege role only reads them
                # (README "Secured clusters"), so their mapping is left as its owner made it.
                if kind != "metrics" or error.status_code != 403:
                    raise
    client.cluster.health(wait_for_status="yellow", timeout="30s")


def drop_expired_daily(client: Elasticsearch, base: str, today: pd.Timestamp, keep_days: int) -> list[str]:
    """Delete the daily indices of ``base`` older than ``keep_days`` before ``today``; returns their names.

    Whole indices are dropped: this build has neither ILM nor delete-by-query.
    """
    oldest_kept = (to_utc(today).normalize() - pd.Timedelta(days=keep_days)).strftime("%Y.%m.%d")
    existing = retrying(
        lambda: client.indices.get(index=f"{base}-*", allow_no_indices=True, ignore_unavailable=True),
        what=f"the list of {base} indices",
        client=client,
    )
    expired = sorted(name for name in existing if name.removeprefix(f"{base}-") < oldest_kept)
    for name in expired:
        retrying(lambda name=name: client.indices.delete(index=name), what=f"deleting {name}", client=client)
    return expired
