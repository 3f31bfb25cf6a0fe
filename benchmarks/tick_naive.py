"""The naive tick, measured beside ours: one query per name for its last 288 values, one request per forecast.

This is how a first version of such a job is usually written. It reads the same documents (as of
the partition's end) and writes the same forecast documents under the same ids, so the two
approaches differ only in how they talk to Elasticsearch.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

import pandas as pd
from elasticsearch import Elasticsearch

from tauxcharge_assets.elastic.queries import as_of_window_query
from tauxcharge_assets.settings import WINDOW_STEPS

FIELDS = ["timestamp", "name", "value", "ingested_at"]


def list_names(client: Elasticsearch, index: str, start: pd.Timestamp, end: pd.Timestamp) -> list[str]:
    """The names with documents in the window (one terms aggregation, paged)."""
    names: list[str] = []
    after: dict[str, Any] | None = None
    while True:
        composite: dict[str, Any] = {"size": 10_000, "sources": [{"name": {"terms": {"field": "name"}}}]}
        if after:
            composite["after"] = after
        response = client.search(
            index=index,
            size=0,
            query={"range": {"timestamp": {"gte": start.isoformat(), "lt": end.isoformat()}}},
            aggregations={"names": {"composite": composite}},
        )
        buckets = response["aggregations"]["names"]["buckets"]
        names += [bucket["key"]["name"] for bucket in buckets]
        after = response["aggregations"]["names"].get("after_key")
        if not buckets or not after:
            return names


def fetch_per_name(
    client: Elasticsearch, index: str, names: Iterable[str], start: pd.Timestamp, end: pd.Timestamp
) -> pd.DataFrame:
    """One search per name: its newest documents of the window, as of ``end``."""
    rows: list[dict[str, Any]] = []
    for name in names:
        query = as_of_window_query(start, end, end)
        query["bool"]["filter"].append({"term": {"name": name}})
        hits = client.search(
            index=index, query=query, size=2 * WINDOW_STEPS, sort=[{"timestamp": "desc"}], source=FIELDS
        )["hits"]["hits"]
        rows += [hit["_source"] for hit in hits]
    frame = pd.DataFrame.from_records(rows, columns=FIELDS)
    for column in ("timestamp", "ingested_at"):
        frame[column] = pd.to_datetime(frame[column], utc=True, errors="coerce", format="ISO8601")
    return frame


def write_one_by_one(client: Elasticsearch, index: str, documents: Iterable[tuple[str, Mapping[str, Any]]]) -> int:
    """One index request per forecast document, then one refresh."""
    written = 0
    for doc_id, document in documents:
        client.index(index=index, id=doc_id, document=dict(document))
        written += 1
    client.indices.refresh(index=index)
    return written
