"""Elasticsearch access: connection with retries, index templates, as-of reads, idempotent writes.

Everything here uses only core search, bulk, point-in-time and index-template APIs: the
integ-test build we run against has no ingest pipelines, ES|QL, painless, update/delete-by-query
or ILM, so the product must not depend on them.
"""

from __future__ import annotations

import contextlib
import gc
import hashlib
import json
import time
from collections.abc import Iterable, Iterator, Mapping
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import pandas as pd
from elasticsearch import ApiError, Elasticsearch, TransportError

from tauxcharge_assets.settings import to_utc

RAW_FIELDS = ["timestamp", "name", "value", "ingested_at"]


class ElasticsearchUnavailableError(RuntimeError):
    """Raised when the server cannot be reached after retries; the message names its address."""


class BulkWriteError(RuntimeError):
    """Raised when Elasticsearch rejected documents of a bulk write; nothing is silently lost."""


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
            "value": {"type": "float"},
            "lower": {"type": "float"},
            "upper": {"type": "float"},
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


@contextlib.contextmanager
def gc_paused() -> Iterator[None]:
    """Pause Python's cyclic garbage collector while millions of short-lived hit dicts are parsed.

    Measured on a 2.88M-document read: the collector alone cost 25-35 % of the time, for nothing
    (parsed JSON holds no reference cycles). The previous state is restored afterwards.
    """
    was_enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if was_enabled:
            gc.enable()


@contextlib.contextmanager
def point_in_time(client: Elasticsearch, index: str, keep_alive: str = "2m") -> Iterator[str]:
    """A point in time: several queries inside it see one consistent snapshot of the index."""
    pit = client.open_point_in_time(index=index, keep_alive=keep_alive)["id"]
    try:
        yield pit
    finally:
        client.close_point_in_time(id=pit)


def scan_pages(
    client: Elasticsearch,
    index: str,
    query: Mapping[str, Any],
    source: list[str] | None = None,
    with_ids: bool = False,
    page_size: int = 10_000,
    pit: str | None = None,
    keep_alive: str = "2m",
) -> Iterator[list[dict[str, Any]]]:
    """Pages of hits of ``query`` through a point in time and ``search_after``: consistent and unbounded.

    Each hit carries only ``_source`` (filtered to ``source``), ``sort`` and, when asked, ``_id``:
    ``filter_path`` drops ``_index``/``_score``/``_ignored`` so the client decodes less JSON.
    ``pit`` reuses a point in time opened by the caller (several queries, one snapshot).
    """
    if pit is None:
        with point_in_time(client, index, keep_alive) as own:
            yield from scan_pages(client, index, query, source, with_ids, page_size, own, keep_alive)
        return
    fields = ["hits.hits._source", "hits.hits.sort", *(["hits.hits._id"] if with_ids else [])]
    search_after: list[Any] | None = None
    while True:
        body: dict[str, Any] = {
            "size": page_size,
            "query": query,
            "pit": {"id": pit, "keep_alive": keep_alive},
            "sort": [{"_shard_doc": "asc"}],
            "track_total_hits": False,
            "filter_path": fields,
        }
        if source is not None:
            body["source"] = source
        if search_after is not None:
            body["search_after"] = search_after
        hits = client.search(**body).body.get("hits", {}).get("hits", [])
        if not hits:
            return
        yield hits
        if len(hits) < page_size:
            return
        search_after = hits[-1]["sort"]


def scan_pit(
    client: Elasticsearch,
    index: str,
    query: Mapping[str, Any],
    source: list[str] | None = None,
    page_size: int = 10_000,
    keep_alive: str = "2m",
) -> Iterator[dict[str, Any]]:
    """Every hit of ``query`` (``_id``, ``_source``) through a point in time and ``search_after``."""
    for page in scan_pages(client, index, query, source, with_ids=True, page_size=page_size, keep_alive=keep_alive):
        yield from page


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
    """Raw metric documents of the window as they stood at ``as_of``; values are left unparsed."""
    rows = [hit["_source"] for hit in scan_pit(client, index, as_of_window_query(start, end, as_of), source=RAW_FIELDS)]
    frame = pd.DataFrame.from_records(rows, columns=RAW_FIELDS)
    frame["timestamp"] = pd.to_datetime(frame["timestamp"], utc=True, errors="coerce", format="ISO8601")
    frame["ingested_at"] = pd.to_datetime(frame["ingested_at"], utc=True, errors="coerce", format="ISO8601")
    return frame


def count_malformed_timestamps(client: Elasticsearch, index: str) -> int:
    """Documents whose timestamp could not be parsed: no time window can find them, so count them."""
    return int(client.count(index=index, query={"term": {"_ignored": "timestamp"}})["count"])


def _bulk_body(index: str, chunk: list[tuple[str, Mapping[str, Any]]]) -> bytes:
    lines = []
    for doc_id, document in chunk:
        lines.append(json.dumps({"index": {"_index": index, "_id": doc_id}}, separators=(",", ":")))
        lines.append(json.dumps(document, separators=(",", ":"), ensure_ascii=False))
    lines.append("")
    return "\n".join(lines).encode()


def _send_chunk(
    client: Elasticsearch, index: str, chunk: list[tuple[str, Mapping[str, Any]]], max_retries: int
) -> tuple[int, list[dict[str, Any]]]:
    """One bulk request; items rejected with 429 (queue full) are retried with backoff, others reported."""
    pending, rejected = chunk, []
    for attempt in range(max_retries + 1):
        response = client.bulk(operations=_bulk_body(index, pending), filter_path="errors,items.*.status,items.*.error")
        if not response.get("errors"):
            pending = []
            break
        items = [next(iter(item.values())) for item in response["items"]]
        rejected += [item for item in items if item.get("status", 500) >= 300 and item.get("status") != 429]
        pending = [doc for doc, item in zip(pending, items, strict=True) if item.get("status") == 429]
        if not pending:
            break
        if attempt < max_retries:
            time.sleep(0.5 * 2**attempt)
    rejected += [{"status": 429, "error": "queue full after retries"} for _ in pending]
    return len(chunk) - len(rejected), rejected


def _chunks(
    documents: Iterable[tuple[str, Mapping[str, Any]]], size: int
) -> Iterator[list[tuple[str, Mapping[str, Any]]]]:
    chunk: list[tuple[str, Mapping[str, Any]]] = []
    for item in documents:
        chunk.append(item)
        if len(chunk) >= size:
            yield chunk
            chunk = []
    if chunk:
        yield chunk


def bulk_write(
    client: Elasticsearch,
    index: str,
    documents: Iterable[tuple[str, Mapping[str, Any]]],
    chunk_size: int = 5_000,
    refresh: bool = True,
    parallel: int = 2,
    max_retries: int = 3,
) -> int:
    """Index ``(id, document)`` pairs; a rerun overwrites the same ids instead of duplicating.

    Chunks of ``chunk_size`` documents go out as bulk requests, at most ``parallel`` in flight: one
    chunk is serialised while the server indexes the previous one, and memory stays bounded.
    """
    written = 0
    errors: list[dict[str, Any]] = []
    in_flight: list[Future[tuple[int, list[dict[str, Any]]]]] = []

    def collect(future: Future[tuple[int, list[dict[str, Any]]]]) -> None:
        nonlocal written
        ok, failed = future.result()
        written += ok
        errors.extend(failed)

    with ThreadPoolExecutor(max_workers=max(1, parallel), thread_name_prefix="bulk") as pool:
        for chunk in _chunks(documents, chunk_size):
            if len(in_flight) >= max(1, parallel):
                collect(in_flight.pop(0))
            in_flight.append(pool.submit(_send_chunk, client, index, chunk, max_retries))
        for future in in_flight:
            collect(future)
    if errors:
        raise BulkWriteError(
            f"Elasticsearch rejected {len(errors)} of {written + len(errors)} documents written to {index}; "
            f"first rejection: {errors[0]}"
        )
    if refresh:
        client.indices.refresh(index=index)
    return written


def count_documents(client: Elasticsearch, index: str, query: Mapping[str, Any] | None = None) -> int:
    return int(client.count(index=index, query=query or {"match_all": {}})["count"])


def fetch_forecasts(
    client: Elasticsearch,
    index: str,
    target_start: datetime,
    target_end: datetime,
    issued_by: datetime,
    horizon_steps: int = 1,
) -> pd.DataFrame:
    """Forecasts made for targets in ``[target_start, target_end)`` by forecasts issued up to ``issued_by``."""
    query = {
        "bool": {
            "filter": [
                {"range": {"target_timestamp": {"gte": _iso(target_start), "lt": _iso(target_end)}}},
                {"range": {"issued_at": {"lte": _iso(issued_by)}}},
                {"term": {"horizon_steps": horizon_steps}},
            ]
        }
    }
    columns = ["name", "issued_at", "target_timestamp", "horizon_steps", "value", "lower", "upper", "model_version"]
    frame = pd.DataFrame.from_records(
        [hit["_source"] for hit in scan_pit(client, index, query, source=columns)], columns=columns
    )
    for column in ("issued_at", "target_timestamp"):
        frame[column] = pd.to_datetime(frame[column], utc=True, format="ISO8601")
    return frame
