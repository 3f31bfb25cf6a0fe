"""Elasticsearch access: connection with retries, index templates, as-of reads, idempotent writes.

Everything here uses only core search, bulk, point-in-time and index-template APIs: the
integ-test build we run against has no ingest pipelines, ES|QL, painless, update/delete-by-query
or ILM, so the product must not depend on them.
"""

from __future__ import annotations

import hashlib
import time
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import pandas as pd
from elasticsearch import ApiError, Elasticsearch, TransportError
from elasticsearch.serializer import OrjsonSerializer

# Re-exported: callers keep importing the I/O helpers from here.
from tauxcharge_assets.es_io import (  # noqa: F401
    BulkWriteError,
    bulk_write,
    delete_documents,
    gc_paused,
    point_in_time,
    scan_pages,
    scan_pit,
)
from tauxcharge_assets.settings import to_utc

RAW_FIELDS = ["timestamp", "name", "value", "ingested_at"]


class ElasticsearchUnavailableError(RuntimeError):
    """Raised when the server cannot be reached after retries; the message names its address."""


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


def connect(
    url: str,
    api_key: str | None = None,
    attempts: int = 5,
    backoff_s: float = 1.0,
    request_timeout_s: float = 60.0,
) -> Elasticsearch:
    """A client whose server answered ``_cluster/health``; retried with backoff, then a clear error.

    ``ping()``/``info()`` cannot be used: the integ-test build answers ``GET /`` with 405.
    """
    client = Elasticsearch(
        url,
        api_key=api_key or None,
        serializer=OrjsonSerializer(),  # orjson decodes search pages several times faster than json
        request_timeout=request_timeout_s,
        max_retries=3,
        retry_on_timeout=True,
    )
    last_error: Exception | None = None
    for attempt in range(attempts):
        try:
            client.cluster.health(wait_for_status="yellow", timeout="30s")
            return client
        except (TransportError, ApiError) as error:
            last_error = error
            if attempt + 1 < attempts:
                time.sleep(backoff_s * 2**attempt)
    raise ElasticsearchUnavailableError(
        f"Elasticsearch at {url} did not answer _cluster/health after {attempts} attempts "
        f"({type(last_error).__name__}: {last_error}). Start the local server with "
        "`python -m tauxcharge_assets es start`, or set TAUXCHARGE_ES_URL (and TAUXCHARGE_ES_API_KEY) "
        "to a reachable server."
    )


def deterministic_id(*parts: object) -> str:
    """Same parts, same id: writes become idempotent and reruns never duplicate documents."""
    digest = hashlib.blake2b("\x1f".join(str(part) for part in parts).encode(), digest_size=16)
    return digest.hexdigest()


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
            "ratio_to_record": {"type": "float"},
            "score": {"type": "float"},
            "severity": {"type": "keyword"},
            "reason": {"type": "text", "fields": {"keyword": {"type": "keyword", "ignore_above": 512}}},
            "model_version": {"type": "keyword"},
            "partition_key": {"type": "keyword"},
            "detected_at": {"type": "date"},
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


def ensure_indices(client: Elasticsearch, indices: IndexNames) -> None:
    """Install the composable index templates we own, then create the indices if missing."""
    for kind, mappings in _TEMPLATES.items():
        index = getattr(indices, kind)
        client.indices.put_index_template(
            name=f"{index}-template",
            index_patterns=[f"{index}*"],
            priority=500,
            template={"settings": _SETTINGS, "mappings": mappings},
            meta={"owner": "tauxcharge_assets"},
        )
        if not client.indices.exists(index=index):
            try:
                client.indices.create(index=index)
            except ApiError as error:
                if error.status_code != 400 or "resource_already_exists" not in str(error):
                    raise
    client.cluster.health(wait_for_status="yellow", timeout="30s")


def _iso(ts: datetime | pd.Timestamp) -> str:
    return to_utc(ts).isoformat()


def as_of_window_query(start: datetime, end: datetime, as_of: datetime) -> dict[str, Any]:
    """Documents with ``start <= timestamp < end`` that had arrived by ``as_of``.

    Filtering on ``ingested_at`` is what makes a backfill equal the live run: a document that arrived
    late is invisible to the partitions that ran before it arrived. Documents without
    ``ingested_at`` count as arrived at their own timestamp.
    """
    return {
        "bool": {
            "filter": [
                {"range": {"timestamp": {"gte": _iso(start), "lt": _iso(end)}}},
                {
                    "bool": {
                        "should": [
                            {"range": {"ingested_at": {"lte": _iso(as_of)}}},
                            {"bool": {"must_not": {"exists": {"field": "ingested_at"}}}},
                        ],
                        "minimum_should_match": 1,
                    }
                },
            ]
        }
    }


def fetch_raw_metrics(
    client: Elasticsearch, index: str, start: datetime, end: datetime, as_of: datetime
) -> pd.DataFrame:
    """Raw metric documents of the window as they stood at ``as_of``; values are left unparsed.

    The tick reads doc values instead (``documents.read_batch``); this frame, with the values exactly
    as sent (``"n/a"`` included), is for training and inspection. Whole ``_source``, two slices.
    """
    query = as_of_window_query(start, end, as_of)
    with gc_paused():
        rows = [hit["_source"] for page in scan_pages(client, index, query, slices=2) for hit in page]
    frame = pd.DataFrame.from_records(rows, columns=RAW_FIELDS)
    frame["timestamp"] = pd.to_datetime(frame["timestamp"], utc=True, errors="coerce", format="ISO8601")
    frame["ingested_at"] = pd.to_datetime(frame["ingested_at"], utc=True, errors="coerce", format="ISO8601")
    return frame


def count_malformed_timestamps(client: Elasticsearch, index: str) -> int:
    """Documents whose timestamp could not be parsed: no time window can find them, so count them."""
    return int(client.count(index=index, query={"term": {"_ignored": "timestamp"}})["count"])


def count_documents(client: Elasticsearch, index: str, query: Mapping[str, Any] | None = None) -> int:
    return int(client.count(index=index, query=query or {"match_all": {}})["count"])


def _forecast_page(fields: list[dict[str, Any]]) -> dict[str, Any]:
    import numpy as np

    def column(name: str, missing: object) -> list[Any]:
        return [f.get(name, (missing,))[0] for f in fields]

    return {
        "name": np.array(column("name", None), dtype=object),
        "issued_at": np.array(column("issued_at", "0"), dtype=object).astype(np.int64),
        "target_timestamp": np.array(column("target_timestamp", "0"), dtype=object).astype(np.int64),
        "value": np.array(column("value", np.nan), dtype=np.float64),
        "lower": np.array(column("lower", np.nan), dtype=np.float64),
        "upper": np.array(column("upper", np.nan), dtype=np.float64),
        "model_version": np.array(column("model_version", None), dtype=object),
    }


def fetch_forecasts(
    client: Elasticsearch,
    index: str,
    target_start: datetime,
    target_end: datetime,
    issued_by: datetime,
    horizon_steps: int = 1,
    slices: int = 2,
) -> pd.DataFrame:
    """Forecasts made for targets in ``[target_start, target_end)`` by forecasts issued up to ``issued_by``.

    Columns: name, issued_at, target_timestamp, horizon_steps, value, lower, upper, model_version; rows
    in no particular order. Read from doc values (every field is a keyword, a date or a number: the
    values are mapped as ``double``, so they come back exactly), two slices at a time. The anomaly step reads
    them only when the previous tick's ``forecast_window`` is missing (360k of them at 10,000 names).
    """
    import numpy as np

    query = {
        "bool": {
            "filter": [
                {"range": {"target_timestamp": {"gte": _iso(target_start), "lt": _iso(target_end)}}},
                {"range": {"issued_at": {"lte": _iso(issued_by)}}},
                {"term": {"horizon_steps": horizon_steps}},
            ]
        }
    }
    requested: list[Any] = [
        "name",
        {"field": "issued_at", "format": "epoch_millis"},
        {"field": "target_timestamp", "format": "epoch_millis"},
        "value",
        "lower",
        "upper",
        "model_version",
    ]
    pages = []
    with gc_paused():
        for page in scan_pages(client, index, query, slices=slices, docvalue_fields=requested):
            pages.append(_forecast_page([hit.get("fields", {}) for hit in page]))
    keys = ["name", "issued_at", "target_timestamp", "value", "lower", "upper", "model_version"]
    merged = {key: np.concatenate([page[key] for page in pages]) if pages else np.empty(0) for key in keys}
    frame = pd.DataFrame(
        {
            "name": merged["name"].astype(object),
            "issued_at": pd.to_datetime(merged["issued_at"].astype(np.int64), unit="ms", utc=True),
            "target_timestamp": pd.to_datetime(merged["target_timestamp"].astype(np.int64), unit="ms", utc=True),
            "horizon_steps": np.full(len(merged["name"]), horizon_steps, dtype=np.int64),
            "value": merged["value"].astype(np.float64),
            "lower": merged["lower"].astype(np.float64),
            "upper": merged["upper"].astype(np.float64),
            "model_version": merged["model_version"].astype(object),
        }
    )
    return frame
