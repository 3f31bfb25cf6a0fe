"""Metric documents as columns: parsed once per page, compact enough for millions of documents.

A tick reads up to 2.88M documents (10,000 names x 288 slots) on a cold start. Keeping them as
Python dicts or an object DataFrame costs gigabytes and seconds; here every page of hits becomes
a few numpy arrays (names, nanosecond timestamps, float values) and the dicts are dropped at once.
The DataFrame path used by training and tests (``from_frame``) parses with the very same
functions, so a document means the same thing whichever way it was read.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import numpy as np
import pandas as pd
from elasticsearch import Elasticsearch

from tauxcharge_assets.es_store import _iso, as_of_window_query, gc_paused, point_in_time, scan_pages

NAT = np.iinfo(np.int64).min  # pandas' NaT as int64: sorts before every real time
SOURCE_FIELDS = ["timestamp", "name", "value", "ingested_at"]


@dataclass(frozen=True)
class DocumentBatch:
    """Documents as parallel arrays; ``ids`` only when the read asked for them."""

    name: np.ndarray  # (n,) object: the name as str, None when missing or empty
    timestamp: np.ndarray  # (n,) int64 ns UTC, NAT when unparseable
    ingested: np.ndarray  # (n,) int64 ns UTC, NAT when missing or unparseable
    value: np.ndarray  # (n,) float64, NaN when not a number
    ids: np.ndarray | None = None  # (n,) object

    def __len__(self) -> int:
        return len(self.timestamp)

    def take(self, selected: np.ndarray) -> DocumentBatch:
        return DocumentBatch(
            self.name[selected],
            self.timestamp[selected],
            self.ingested[selected],
            self.value[selected],
            None if self.ids is None else self.ids[selected],
        )

    @staticmethod
    def concat(batches: Sequence[DocumentBatch], with_ids: bool = False) -> DocumentBatch:
        if not batches:
            return empty_batch(with_ids)
        ids = np.concatenate([b.ids for b in batches]) if all(b.ids is not None for b in batches) else None
        return DocumentBatch(
            np.concatenate([b.name for b in batches]),
            np.concatenate([b.timestamp for b in batches]),
            np.concatenate([b.ingested for b in batches]),
            np.concatenate([b.value for b in batches]),
            ids,
        )


def empty_batch(with_ids: bool = False) -> DocumentBatch:
    return DocumentBatch(
        np.empty(0, object),
        np.empty(0, np.int64),
        np.empty(0, np.int64),
        np.empty(0, np.float64),
        np.empty(0, object) if with_ids else None,
    )


def parse_names(names: Iterable[Any]) -> np.ndarray:
    """A name is usable when present and not empty; it is used as its string form."""
    series = pd.Series(list(names), dtype=object)
    text = series.astype(str)
    usable = series.notna() & (text.str.len() > 0)
    return np.where(usable.to_numpy(), text.to_numpy(dtype=object), None)


def parse_times(values: Iterable[Any]) -> np.ndarray:
    """ISO 8601 strings (any offset) or epoch milliseconds, as Elasticsearch's default date format reads them."""
    series = pd.Series(list(values), dtype=object)
    parsed = pd.to_datetime(series, utc=True, errors="coerce", format="ISO8601").array.asi8.copy()
    missing = parsed == NAT
    if missing.any():
        numbers = pd.to_numeric(series[missing], errors="coerce")
        is_number = series[missing].map(lambda v: isinstance(v, int | float | str) and not isinstance(v, bool))
        millis = numbers.where(is_number & numbers.notna())
        fallback = pd.to_datetime(millis, unit="ms", utc=True, errors="coerce").array.asi8
        parsed[missing] = fallback
    return parsed


def parse_values(values: Iterable[Any]) -> np.ndarray:
    """Numbers (or numeric strings) as float64; anything else is NaN and counted as non-numeric."""
    return pd.to_numeric(pd.Series(list(values), dtype=object), errors="coerce").to_numpy(dtype=np.float64)


def from_sources(sources: Sequence[Mapping[str, Any]], ids: Sequence[str] | None = None) -> DocumentBatch:
    return DocumentBatch(
        name=parse_names(s.get("name") for s in sources),
        timestamp=parse_times(s.get("timestamp") for s in sources),
        ingested=parse_times(s.get("ingested_at") for s in sources),
        value=parse_values(s.get("value") for s in sources),
        ids=None if ids is None else np.array(ids, dtype=object),
    )


def from_frame(raw: pd.DataFrame) -> DocumentBatch:
    """The same parsing applied to a raw frame (``timestamp``, ``name``, ``value``, ``ingested_at``)."""
    return DocumentBatch(
        name=parse_names(raw["name"]),
        timestamp=parse_times(raw["timestamp"]),
        ingested=parse_times(raw["ingested_at"]) if "ingested_at" in raw else np.full(len(raw), NAT),
        value=parse_values(raw["value"]),
    )


def read_batch(
    client: Elasticsearch,
    index: str,
    query: Mapping[str, Any],
    with_ids: bool = False,
    pit: str | None = None,
    page_size: int = 10_000,
) -> DocumentBatch:
    """Every document matching ``query``, page by page into columns (collector paused meanwhile)."""
    batches = []
    with gc_paused():
        for page in scan_pages(client, index, query, SOURCE_FIELDS, with_ids=with_ids, pit=pit, page_size=page_size):
            sources = [hit["_source"] for hit in page]
            batches.append(from_sources(sources, [hit["_id"] for hit in page] if with_ids else None))
            del page, sources
    return DocumentBatch.concat(batches, with_ids)


def since_query(start: datetime, end: datetime, as_of: datetime, since: datetime) -> dict[str, Any]:
    """The window's documents (as of ``as_of``) with ``timestamp >= since`` or that arrived after ``since``.

    This is what an incremental tick reads: the new slices, plus any late document (old timestamp,
    new ``ingested_at``) anywhere in the window.
    """
    query = as_of_window_query(start, end, as_of)
    query["bool"]["filter"].append(
        {
            "bool": {
                "should": [
                    {"range": {"timestamp": {"gte": _iso(since)}}},
                    {"range": {"ingested_at": {"gt": _iso(since)}}},
                ],
                "minimum_should_match": 1,
            }
        }
    )
    return query


def before_query(start: datetime, end: datetime, as_of: datetime, since: datetime) -> dict[str, Any]:
    """The complement of ``since_query`` inside the window: old timestamps that arrived by ``since``."""
    query = as_of_window_query(start, end, as_of)
    query["bool"]["filter"].append({"range": {"timestamp": {"lt": _iso(since)}}})
    query["bool"]["filter"].append(
        {
            "bool": {
                "should": [
                    {"range": {"ingested_at": {"lte": _iso(since)}}},
                    {"bool": {"must_not": {"exists": {"field": "ingested_at"}}}},
                ],
                "minimum_should_match": 1,
            }
        }
    )
    return query


def read_window(
    client: Elasticsearch, index: str, start: datetime, end: datetime, as_of: datetime, recent_since: datetime
) -> tuple[DocumentBatch, DocumentBatch]:
    """A cold read in one snapshot: (older documents without ids, recent documents with their ids).

    Only the recent ones need ids (the next tick's read overlaps them); fetching ids for 2.88M
    documents would cost parsing time for nothing.
    """
    with point_in_time(client, index) as pit:
        older = read_batch(client, index, before_query(start, end, as_of, recent_since), pit=pit)
        recent = read_batch(client, index, since_query(start, end, as_of, recent_since), with_ids=True, pit=pit)
    return older, recent
