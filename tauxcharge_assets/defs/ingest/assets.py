"""Tick assets that read Elasticsearch and put the series on the 5-minute grid.

``raw_es_extract`` keeps a rolling window per name (see ``incremental``): a tick reads only the new
slices and the late documents, unless the previous window is missing. Its value is a small summary
pointing at the stored window, so what Dagster persists per partition stays small.
"""

import dataclasses
from dataclasses import dataclass

import pandas as pd
from dagster import (
    AssetExecutionContext,
    AssetIn,
    Config,
    Failure,
    MetadataValue,
    Output,
    TableColumn,
    TableRecord,
    TableSchema,
)
from elasticsearch import Elasticsearch
from pydantic import Field

from tauxcharge_assets.data import cleaning, quarantine
from tauxcharge_assets.data.cleaning import CleanedSeries, CleaningRules, clean_window, value_counts
from tauxcharge_assets.data.name_ids import load_name_ids
from tauxcharge_assets.data.shards import UNSHARDED, Shard
from tauxcharge_assets.defs.partitions import tick_window
from tauxcharge_assets.defs.ranges import for_each_partition, one_or_range, tick_asset
from tauxcharge_assets.defs.resources import ElasticsearchResource, unavailable_as_failure
from tauxcharge_assets.elastic.bulk import bulk_write
from tauxcharge_assets.elastic.indices import IndexNames, drop_expired_daily
from tauxcharge_assets.elastic.queries import count_documents, count_malformed_timestamps
from tauxcharge_assets.window.incremental import ElasticsearchReader, ShardReader, update_window
from tauxcharge_assets.window.rolling import RollingWindow
from tauxcharge_assets.window.shared_store import SharedWindowStore
from tauxcharge_assets.window.store import WindowStore


@dataclass(frozen=True)
class RawExtract:
    """``raw_es_extract``'s value: the read's summary and where its rolling window is stored."""

    index: str
    window_end: pd.Timestamp
    mode: str
    documents_read: int
    documents: int  # documents in the 24 h window, as of its end
    invalid_values: int  # of them, values that are not a number in the default range
    newest_timestamp: pd.Timestamp | None
    # In a range run the window travels with the summary: the store keeps only the last few windows.
    carried_window: RollingWindow | None = None
    shard: Shard = UNSHARDED

    def window(self) -> RollingWindow:
        if self.carried_window is not None:
            return self.carried_window
        stored = WindowStore.for_index(self.index + self.shard.suffix).load(self.window_end)
        if stored is None:
            raise Failure(
                f"The rolling window of {self.index} ending {self.window_end} is no longer stored (retention). "
                "Materialize raw_es_extract for this partition again."
            )
        return stored


class ExtractConfig(Config):
    incremental: bool = Field(default=True, description="Read only what is new when the previous window is stored")
    overlap_minutes: float = Field(
        default=10.0, description="How far back an incremental read reaches: the longest indexing delay"
    )
    max_gap_ticks: int = Field(default=12, description="How many ticks back the previous window may end")
    shard_index: int = Field(default=0, description="The name shard this run reads (set by shard_run_config)")
    shard_count: int = Field(default=1, description="How many name shards the names are split into; 1: all names")
    shared_window: bool = Field(
        default=True,
        description="Keep the window ending on each hour in Elasticsearch too, and start from it on a worker "
        "without a window of its own (window.shared_store)",
    )


@tick_asset(
    group_name="ingest",
    kinds={"elasticsearch"},
)
def raw_es_extract(
    context: AssetExecutionContext,
    config: ExtractConfig,
    elasticsearch: ElasticsearchResource,
) -> Output:
    """The metric documents of the 24 h before the partition's end, exactly as they stood then (of the run's
    name shard only, when the names are sharded)."""
    with unavailable_as_failure():
        client = elasticsearch.get_client()
        index = elasticsearch.indices.metrics
        malformed = count_malformed_timestamps(client, index)
        carry = len(context.partition_keys) > 1
        shard = Shard(config.shard_index, config.shard_count)
        only = shard.prefilter(load_name_ids(client, elasticsearch.indices.names)) if shard.sharded else None
        return for_each_partition(
            context,
            lambda key, _last: _extract(
                key, config, client, index, elasticsearch.indices.window_state, malformed, carry, shard, only
            ),
            totals=("documents_read",),
        )


def _extract(
    partition_key: str,
    config: ExtractConfig,
    client: Elasticsearch,
    index: str,
    state_index: str,
    malformed: int,
    carry: bool,
    shard: Shard,
    only: dict | None,
) -> Output[RawExtract]:
    window_bounds = tick_window(partition_key)
    reader = ElasticsearchReader(client, index, only)
    window, report = update_window(
        ShardReader(reader, shard) if shard.sharded else reader,
        window_bounds.end,
        WindowStore.for_index(index + shard.suffix),
        incremental=config.incremental,
        overlap_minutes=config.overlap_minutes,
        max_gap=config.max_gap_ticks,
        shared=SharedWindowStore(client, state_index, index + shard.suffix) if config.shared_window else None,
    )
    counts = value_counts(window, CleaningRules())
    extract = RawExtract(
        index=index,
        window_end=window.end,
        mode=report.mode,
        documents_read=report.documents_read,
        documents=counts["documents"],
        invalid_values=counts["non_numeric"] + counts["out_of_range"],
        newest_timestamp=window.newest_timestamp,
        carried_window=window if carry else None,
        shard=shard,
    )
    return Output(
        extract,
        metadata={
            "read": report.mode,
            "why": report.reason,
            "documents_read": report.documents_read,
            "documents_added": report.documents_added,
            "read_seconds": round(report.seconds, 3),
            "documents": extract.documents,
            "names": len(window.names),
            "window_start": window.start.isoformat(),
            "window_end": window.end.isoformat(),
            "as_of": window_bounds.as_of.isoformat(),
            "newest_timestamp": extract.newest_timestamp.isoformat() if extract.newest_timestamp else "none",
            "stored_window_bytes": window.nbytes(),
            "index_documents_with_malformed_timestamp": malformed,
            "name_shard": shard.label,
        },
    )


class CleaningConfig(Config):
    value_min: float = 0.0
    value_max: float = 100.0
    max_gap_fill: int = 3


@tick_asset(
    group_name="ingest",
    kinds={"pandas"},
    ins={"raw_es_extract": AssetIn(dagster_type=one_or_range(RawExtract))},
)
def cleaned_series(context: AssetExecutionContext, config: CleaningConfig, raw_es_extract: RawExtract) -> Output:
    """Every name on the 5-minute grid; each rule's effect is counted in the metadata."""
    rules = CleaningRules(config.value_min, config.value_max, config.max_gap_fill)
    return for_each_partition(context, lambda _key, _last, raw: _clean(rules, raw), raw_es_extract)


def _clean(rules: CleaningRules, raw_es_extract: RawExtract) -> Output[CleanedSeries]:
    cleaned = dataclasses.replace(clean_window(raw_es_extract.window(), rules), shard=raw_es_extract.shard)
    observed_share = cleaned.observed.mean(axis=0)
    return Output(
        cleaned,
        metadata={
            **{f"count_{key}": value for key, value in cleaned.counts.items()},
            "names": len(cleaned.names),
            "slots": len(cleaned.values),
            "median_observed_share": float(observed_share.median()) if len(observed_share) else 0.0,
            "rules": MetadataValue.md(cleaning.__doc__ or ""),
        },
    )


@dataclass(frozen=True)
class QuarantineSummary:
    """``quarantined_documents``' value: what arrived in the partition's 5 minutes and what was bad."""

    index: str  # the daily quarantine index the entries went to
    arrived: int
    by_reason: dict[str, int]
    max_rejected_share: float

    @property
    def rejected(self) -> int:
        return sum(self.by_reason[reason] for reason in quarantine.REJECTED)

    @property
    def rejected_share(self) -> float:
        return self.rejected / self.arrived if self.arrived else 0.0


class QuarantineConfig(Config):
    max_rejected_share: float = Field(
        default=0.02, description="The check fails when more of a tick's arrivals than this are rejected"
    )
    retention_days: int = Field(default=14, description="Daily quarantine indices older than this are deleted")


_WITHOUT_ANY_TIME = {"bool": {"must_not": [{"exists": {"field": "timestamp"}}, {"exists": {"field": "ingested_at"}}]}}
_TABLE = TableSchema(columns=[TableColumn(key, "string") for key in ("name", "reason", "detail", "document_id")])


@tick_asset(
    group_name="ingest",
    kinds={"elasticsearch"},
    ins={
        "raw_es_extract": AssetIn(dagster_type=one_or_range(RawExtract)),
        "cleaned_series": AssetIn(dagster_type=one_or_range(CleanedSeries)),
    },
)
def quarantined_documents(
    context: AssetExecutionContext,
    config: QuarantineConfig,
    elasticsearch: ElasticsearchResource,
    raw_es_extract: RawExtract,
    cleaned_series: CleanedSeries,
) -> Output:
    """Every bad document that arrived in the partition's 5 minutes, by id and reason, in a quarantine index.

    Beside the tick, not before it: a bad collector must not stop the forecasts of every other name
    (the cleaning already drops or rewrites what is bad); the check on this asset raises the alarm.
    """
    with unavailable_as_failure():
        client = elasticsearch.get_client()
        without_any_time = count_documents(client, elasticsearch.indices.metrics, _WITHOUT_ANY_TIME)
        return for_each_partition(
            context,
            lambda key, last, raw, cleaned: _quarantine(
                key, config, client, elasticsearch.indices, raw, cleaned, without_any_time, refresh=last
            ),
            raw_es_extract,
            cleaned_series,
            totals=("arrived", "quarantined", "rejected"),
        )


def _quarantine(
    partition_key: str,
    config: QuarantineConfig,
    client: Elasticsearch,
    names: IndexNames,
    raw_es_extract: RawExtract,
    cleaned_series: CleanedSeries,
    without_any_time: int,
    refresh: bool = True,
) -> Output[QuarantineSummary]:
    bounds = tick_window(partition_key)
    window, rules = raw_es_extract.window(), cleaned_series.rules
    query = quarantine.suspects_query(window, rules, bounds.start, bounds.end)
    shard = raw_es_extract.shard
    arrivals = quarantine.read_suspects(client, names.metrics, query).of_shard(shard)
    listed = quarantine.entries(arrivals, window, rules, names.metrics, partition_key)
    index = names.daily(names.quarantine, bounds.start)
    if listed:
        bulk_write(client, index, listed, refresh=refresh)
    if shard.sharded:
        own = {str(name) for name in window.names} | {str(name) for name in arrivals.batch.name if name}
        arrived_query = quarantine.shard_arrivals_query(bounds.start, bounds.end, sorted(own), shard.index == 0)
    else:
        arrived_query = quarantine.arrivals_query(bounds.start, bounds.end)
    summary = QuarantineSummary(
        index=index,
        arrived=count_documents(client, names.metrics, arrived_query),
        by_reason=quarantine.count_by_reason(listed),
        max_rejected_share=config.max_rejected_share,
    )
    expired = drop_expired_daily(client, names.quarantine, bounds.start, config.retention_days)
    by_name = pd.Series([entry["name"] or "(no name)" for _, entry in listed], dtype=object).value_counts()
    return Output(
        summary,
        metadata={
            "arrived": summary.arrived,
            "quarantined": len(listed),
            "rejected": summary.rejected,
            "rejected_share": summary.rejected_share,
            **{f"count_{reason}": count for reason, count in summary.by_reason.items()},
            "index": index,
            "expired_indices": ", ".join(expired) or "none",
            "names_most_quarantined": ", ".join(f"{name} ({n})" for name, n in by_name.head(10).items()) or "none",
            "index_documents_without_any_time": without_any_time,
            "first_entries": MetadataValue.table(
                [
                    TableRecord({key: str(entry[key]) for key in ("name", "reason", "detail", "document_id")})
                    for _, entry in listed[:20]
                ],
                schema=_TABLE,
            ),
            "reasons": MetadataValue.md(quarantine.__doc__ or ""),
        },
    )
