"""What the dashboard shows, read from Elasticsearch, MLflow and the Dagster instance and shaped into frames.

Plain functions, so the page (``dashboard/app.py``) only lays them out and each one is tested on its own.
The page reads one name at a time (an operator looks at one name): these are small requests, unlike the
tick's reads of every name.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd
from dagster import AssetCheckKey, DagsterInstance
from elasticsearch import Elasticsearch

from tauxcharge_assets.capacity.saturation import SaturationRules, at_risk
from tauxcharge_assets.data.cleaning import clean_series
from tauxcharge_assets.elastic.bulk import scan_pages
from tauxcharge_assets.elastic.client import retrying
from tauxcharge_assets.elastic.indices import IndexNames
from tauxcharge_assets.elastic.queries import RAW_FIELDS, daily_peaks, newest_timestamp
from tauxcharge_assets.model.promotion import CHALLENGER
from tauxcharge_assets.settings import STEP_MINUTES, to_utc

STEP = pd.Timedelta(minutes=STEP_MINUTES)
SEVERITY_RANK = {"critical": 0, "warning": 1, "normal": 2}
ANOMALY_COLUMNS = ["timestamp", "name", "severity", "score", "actual", "forecast", "lower", "upper", "reason"]
FORECAST_COLUMNS = ["target_timestamp", "issued_at", "horizon_steps", "value", "lower", "upper", "model_version"]


def _iso(stamp: pd.Timestamp) -> str:
    return to_utc(stamp).isoformat()


def _search(client: Elasticsearch, index: str, what: str, **body: Any) -> dict[str, Any]:
    return retrying(lambda: client.search(index=index, **body), what=what, client=client)


def _stamps(values: Iterable[Any]) -> pd.DatetimeIndex:
    return pd.DatetimeIndex(pd.to_datetime(list(values), utc=True, format="ISO8601"))


# --- the name explorer --------------------------------------------------------------------------------


def known_names(client: Elasticsearch, indices: IndexNames, page_size: int = 10_000) -> list[str]:
    """Every name with metric documents, sorted (one composite aggregation, paged)."""
    composite: dict[str, Any] = {"size": page_size, "sources": [{"name": {"terms": {"field": "name"}}}]}
    names: list[str] = []
    while True:
        response = _search(client, indices.metrics, f"the names of {indices.metrics}", size=0,
                           aggs={"names": {"composite": composite}})  # fmt: skip
        result = response["aggregations"]["names"]
        names.extend(str(bucket["key"]["name"]) for bucket in result["buckets"])
        if len(result["buckets"]) < page_size or "after_key" not in result:
            return sorted(names)
        composite = {**composite, "after": result["after_key"]}


def newest_data(client: Elasticsearch, indices: IndexNames) -> pd.Timestamp | None:
    """The newest metric timestamp: where the explorer's time range ends by default."""
    return newest_timestamp(client, indices.metrics)


def actual_values(
    client: Elasticsearch, indices: IndexNames, name: str, start: pd.Timestamp, end: pd.Timestamp
) -> pd.DataFrame:
    """The name's values on the 5-minute grid of ``[start, end)`` by the pipeline's own cleaning rules.

    Only observed slots (no gap filling): the chart shows what arrived. Columns: timestamp, actual.
    """
    start, end = to_utc(start).floor(STEP), to_utc(end).ceil(STEP)
    query = {"bool": {"filter": [{"term": {"name": name}},
                                 {"range": {"timestamp": {"gte": _iso(start), "lt": _iso(end)}}}]}}  # fmt: skip
    rows = [hit["_source"] for page in scan_pages(client, indices.metrics, query, source=RAW_FIELDS) for hit in page]
    raw = pd.DataFrame.from_records(rows, columns=RAW_FIELDS)
    raw["timestamp"] = pd.to_datetime(raw["timestamp"], utc=True, errors="coerce", format="ISO8601")
    raw["ingested_at"] = pd.to_datetime(raw["ingested_at"], utc=True, errors="coerce", format="ISO8601")
    cleaned = clean_series(raw, start, end)
    if name not in cleaned.values.columns:
        return pd.DataFrame({"timestamp": pd.DatetimeIndex([], tz="UTC"), "actual": np.empty(0)})
    values = cleaned.values[name].where(cleaned.observed[name]).dropna()
    return pd.DataFrame({"timestamp": values.index, "actual": values.to_numpy(dtype=np.float64)})


def _forecast_rows(hits: Iterable[Mapping[str, Any]], columns: list[str] = FORECAST_COLUMNS) -> pd.DataFrame:
    frame = pd.DataFrame.from_records([hit["_source"] for hit in hits], columns=columns)
    for column in ("target_timestamp", "issued_at"):
        frame[column] = _stamps(frame[column])
    for column in ("value", "lower", "upper"):
        frame[column] = frame[column].astype(np.float64)
    return frame.sort_values("target_timestamp", ignore_index=True)


def forecast_band(
    client: Elasticsearch,
    indices: IndexNames,
    name: str,
    start: pd.Timestamp,
    end: pd.Timestamp,
    horizon_steps: int = 1,
) -> pd.DataFrame:
    """The forecasts made ``horizon_steps`` ahead for the name's targets in ``[start, end)``: p50 and the 80 % band."""
    query = {"bool": {"filter": [
        {"term": {"name": name}},
        {"term": {"horizon_steps": horizon_steps}},
        {"range": {"target_timestamp": {"gte": _iso(start), "lt": _iso(end)}}},
    ]}}  # fmt: skip
    return _forecast_rows(hit for page in scan_pages(client, indices.forecasts, query, source=FORECAST_COLUMNS)
                          for hit in page)  # fmt: skip


def latest_forecast(client: Elasticsearch, indices: IndexNames, name: str) -> pd.DataFrame:
    """The name's newest issued forecast, every horizon (the coming hour)."""
    newest = _search(client, indices.forecasts, f"the newest forecast of {name}", size=1,
                     query={"term": {"name": name}}, sort=[{"issued_at": "desc"}], source=["issued_at"])  # fmt: skip
    hits = newest["hits"]["hits"]
    if not hits:
        return _forecast_rows([])
    issued = hits[0]["_source"]["issued_at"]
    query = {"bool": {"filter": [{"term": {"name": name}}, {"term": {"issued_at": issued}}]}}
    response = _search(client, indices.forecasts, f"the newest forecast of {name}", size=100, query=query,
                       source=FORECAST_COLUMNS)  # fmt: skip
    return _forecast_rows(response["hits"]["hits"])


# --- anomalies ----------------------------------------------------------------------------------------


def anomalies(
    client: Elasticsearch,
    indices: IndexNames,
    start: pd.Timestamp,
    end: pd.Timestamp,
    name: str | None = None,
    limit: int = 1_000,
) -> pd.DataFrame:
    """The anomalies of ``[start, end)`` (of one name, or all), at most ``limit``, the most severe kept."""
    filters: list[dict[str, Any]] = [{"range": {"timestamp": {"gte": _iso(start), "lt": _iso(end)}}}]
    if name is not None:
        filters.append({"term": {"name": name}})
    response = _search(client, indices.anomalies, f"the anomalies of {indices.anomalies}", size=limit,
                       query={"bool": {"filter": filters}}, sort=[{"score": "desc"}, {"timestamp": "desc"}],
                       source=ANOMALY_COLUMNS)  # fmt: skip
    frame = pd.DataFrame.from_records([hit["_source"] for hit in response["hits"]["hits"]], columns=ANOMALY_COLUMNS)
    frame["timestamp"] = _stamps(frame["timestamp"])
    for column in ("score", "actual", "forecast", "lower", "upper"):
        frame[column] = pd.to_numeric(frame[column], errors="coerce").astype(np.float64)
    return frame


SORT_ORDERS = ("severity", "time")


def sort_anomalies(frame: pd.DataFrame, by: str) -> pd.DataFrame:
    """``severity``: critical first, then the higher score, then the newest; ``time``: the newest first."""
    if by not in SORT_ORDERS:
        raise ValueError(f"sort by one of {SORT_ORDERS}, not {by!r}")
    if by == "time":
        return frame.sort_values(["timestamp", "score", "name"], ascending=[False, False, True], ignore_index=True)
    rank = frame["severity"].map(SEVERITY_RANK).fillna(len(SEVERITY_RANK))
    ordered = frame.assign(_rank=rank).sort_values(
        ["_rank", "score", "timestamp", "name"], ascending=[True, False, False, True], ignore_index=True
    )
    return ordered.drop(columns="_rank")


# --- capacity -----------------------------------------------------------------------------------------


def newest_issue(client: Elasticsearch, indices: IndexNames) -> pd.Timestamp | None:
    """When the newest forecasts were issued (the end of the newest tick that ran), or None."""
    response = _search(client, indices.forecasts, f"the newest tick of {indices.forecasts}", size=0,
                       aggs={"newest": {"max": {"field": "issued_at"}}})  # fmt: skip
    value = response["aggregations"]["newest"]["value"]
    return None if value is None else pd.Timestamp(int(value), unit="ms", tz="UTC")


def issued_forecasts(client: Elasticsearch, indices: IndexNames, issued_at: pd.Timestamp | None) -> pd.DataFrame:
    """Every name's forecasts issued at ``issued_at`` (one tick's: names x 12 horizons); none for None."""
    columns = ["name", *FORECAST_COLUMNS]
    if issued_at is None:
        return _forecast_rows([], columns)
    query = {"term": {"issued_at": _iso(issued_at)}}
    return _forecast_rows((hit for page in scan_pages(client, indices.forecasts, query, source=columns)
                           for hit in page), columns)  # fmt: skip


def capacity(
    client: Elasticsearch, indices: IndexNames, rules: SaturationRules, now: pd.Timestamp | None = None
) -> pd.DataFrame:
    """The names forecast to cross ``rules.level``, soonest first: the ``capacity_forecast`` asset's rule
    (``capacity.saturation.at_risk``) on the newest tick's forecasts and the completed days' peaks."""
    issued = newest_issue(client, indices)
    now = to_utc(now) if now is not None else (issued or pd.Timestamp.now(tz="UTC").floor(STEP))
    peaks = daily_peaks(client, indices.metrics, now - pd.Timedelta(days=rules.trend_days), now, now, 0.0, 100.0)
    return at_risk(issued_forecasts(client, indices, issued), peaks, now, rules)


# --- pipeline health ----------------------------------------------------------------------------------


@dataclass(frozen=True)
class TickHealth:
    """The newest tick seen in the forecasts index, and how far behind the clock it is."""

    latest_tick: pd.Timestamp | None
    newest_data: pd.Timestamp | None
    now: pd.Timestamp

    @property
    def lag(self) -> pd.Timedelta | None:
        return None if self.latest_tick is None else self.now - self.latest_tick

    @property
    def lag_text(self) -> str:
        if self.lag is None:
            return "no tick yet"
        minutes = self.lag / pd.Timedelta(minutes=1)
        return f"{minutes:.0f} min" if abs(minutes) < 120 else f"{minutes / 60:.1f} h"


def tick_health(client: Elasticsearch, indices: IndexNames, now: pd.Timestamp | None = None) -> TickHealth:
    now = to_utc(now) if now is not None else pd.Timestamp.now(tz="UTC")
    return TickHealth(newest_issue(client, indices), newest_timestamp(client, indices.metrics), now)


CHECK_COLUMNS = ["asset", "check", "blocking", "result", "severity", "partition", "evaluated_at", "details"]


def _details(metadata: Mapping[str, Any], limit: int = 4) -> str:
    """The check's first few numbers, as the Dagster UI would show them in its metadata table."""
    parts = []
    for key, entry in list(metadata.items())[:limit]:
        value = getattr(entry, "value", entry)
        parts.append(f"{key}={value:.4g}" if isinstance(value, float) else f"{key}={value}")
    return ", ".join(parts)


def check_results(instance: DagsterInstance, checks: Iterable[tuple[AssetCheckKey, bool]]) -> pd.DataFrame:
    """The latest evaluation of every data-quality check, from the instance's event log.

    ``checks``: (key, blocking) of each check the code location defines; one that never ran says so.
    """
    rows = []
    for key, blocking in checks:
        record = instance.get_latest_asset_check_evaluation_record(key)
        evaluation = None
        if record is not None and record.event is not None and record.event.dagster_event is not None:
            evaluation = record.event.dagster_event.event_specific_data
        passed = getattr(evaluation, "passed", None)
        rows.append(
            {
                "asset": key.asset_key.to_user_string(),
                "check": key.name,
                "blocking": bool(blocking),
                "result": "not run" if passed is None else ("passed" if passed else "failed"),
                "severity": "" if evaluation is None else str(evaluation.severity.value).lower(),
                "partition": getattr(evaluation, "partition", None) or "",
                "evaluated_at": pd.Timestamp(record.create_timestamp, unit="s", tz="UTC") if record else pd.NaT,
                "details": _details(getattr(evaluation, "metadata", None) or {}),
            }
        )
    return pd.DataFrame(rows, columns=CHECK_COLUMNS)


_BACKTEST_METRIC = re.compile(r"^backtest_(?P<forecaster>.+)_(?P<metric>median_mase|mean_mase|coverage)_h(?P<h>.+)$")
BACKTEST_COLUMNS = {
    ("median_mase", "1"): "median MASE t+5 min",
    ("median_mase", "12"): "median MASE t+60 min",
    ("median_mase", "mean"): "median MASE, all steps",
    ("coverage", "mean"): "80 % band coverage",
}


def backtest_table(metrics: Mapping[str, float], version: str) -> pd.DataFrame:
    """The champion's backtest beside the baselines, from the metrics its training run logged.

    In that run the model was the ``challenger``; the version it replaced (if any) is ``champion``.
    One row per forecaster, best (lowest median MASE over all steps) first.
    """
    cells: dict[str, dict[str, float]] = {}
    for key, value in metrics.items():
        match = _BACKTEST_METRIC.match(key)
        if match is None or (match["metric"], match["h"]) not in BACKTEST_COLUMNS:
            continue
        cells.setdefault(match["forecaster"], {})[BACKTEST_COLUMNS[match["metric"], match["h"]]] = float(value)
    labels = {CHALLENGER: f"version {version} (champion)", "champion": "the version it replaced"}
    table = pd.DataFrame.from_dict(cells, orient="index", columns=list(BACKTEST_COLUMNS.values()))
    table.index = [labels.get(forecaster, forecaster) for forecaster in table.index]
    table.index.name = "forecaster"
    return table.sort_values("median MASE, all steps", kind="stable").reset_index()
