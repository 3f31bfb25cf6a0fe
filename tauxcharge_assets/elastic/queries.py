"""Reads: as-of time-window queries (what a backfill equals the live run by), counts, kept forecasts."""

from __future__ import annotations

from collections.abc import Mapping
from datetime import datetime
from typing import Any

import pandas as pd
from elasticsearch import Elasticsearch

from tauxcharge_assets.elastic.bulk import gc_paused, scan_pages
from tauxcharge_assets.elastic.client import retrying
from tauxcharge_assets.settings import to_utc

RAW_FIELDS = ["timestamp", "name", "value", "ingested_at"]


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
    return count_documents(client, index, {"term": {"_ignored": "timestamp"}})


def count_documents(client: Elasticsearch, index: str, query: Mapping[str, Any] | None = None) -> int:
    response = retrying(
        lambda: client.count(index=index, query=query or {"match_all": {}}), what=f"a count of {index}", client=client
    )
    return int(response["count"])


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
    them only when the previous tick's ``window.kept_forecasts`` do not reach back far enough.
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


def daily_peaks(
    client: Elasticsearch,
    index: str,
    start: datetime,
    end: datetime,
    as_of: datetime,
    value_min: float,
    value_max: float,
    page_size: int = 10_000,
) -> pd.DataFrame:
    """The highest valid value of each name and UTC day in ``[start, end)`` as of ``as_of``: days x names.

    One composite aggregation (name, day) paged by ``after_key``: the server reduces 288 documents a day
    to one number, so 10,000 names x 28 days come back as 280,000 buckets, not 8M documents. Values
    outside ``[value_min, value_max]`` are left out, as the cleaning leaves them out.
    """
    query = as_of_window_query(start, end, as_of)
    query["bool"]["filter"].append({"range": {"value": {"gte": value_min, "lte": value_max}}})
    composite: dict[str, Any] = {
        "size": page_size,
        "sources": [
            {"name": {"terms": {"field": "name"}}},
            {"day": {"date_histogram": {"field": "timestamp", "calendar_interval": "1d", "time_zone": "UTC"}}},
        ],
    }
    rows: list[tuple[str, int, float]] = []
    while True:
        body = {"peaks": {"composite": composite, "aggs": {"peak": {"max": {"field": "value"}}}}}
        response = retrying(
            lambda body=body: client.search(index=index, query=query, size=0, aggs=body),
            what=f"the daily peaks of {index}",
            client=client,
        )
        result = response["aggregations"]["peaks"]
        rows.extend((b["key"]["name"], b["key"]["day"], b["peak"]["value"]) for b in result["buckets"])
        if len(result["buckets"]) < page_size or "after_key" not in result:
            break
        composite = {**composite, "after": result["after_key"]}
    if not rows:
        return pd.DataFrame(index=pd.DatetimeIndex([], tz="UTC", name="day"))
    frame = pd.DataFrame(rows, columns=["name", "day", "peak"])
    frame["day"] = pd.to_datetime(frame["day"], unit="ms", utc=True)
    frame["peak"] = frame["peak"].astype("float32").astype(str).astype(float)  # float32 doc values, as written
    peaks = frame.pivot(index="day", columns="name", values="peak")
    days = pd.date_range(to_utc(start).normalize(), to_utc(end), freq="D", inclusive="left", name="day")
    return peaks.reindex(days.union(peaks.index))


def newest_timestamp(client: Elasticsearch, index: str) -> pd.Timestamp | None:
    """The newest document timestamp of ``index``, or None when it holds none."""
    response = retrying(
        lambda: client.search(index=index, size=0, aggs={"newest": {"max": {"field": "timestamp"}}}),
        what=f"the newest timestamp of {index}",
        client=client,
    )
    value = response["aggregations"]["newest"]["value"]
    return None if value is None else pd.Timestamp(int(value), unit="ms", tz="UTC")
