"""Tick assets that read Elasticsearch and put the series on the 5-minute grid."""

import pandas as pd
from dagster import AssetExecutionContext, Config, MetadataValue, Output, asset

from tauxcharge_assets import cleaning
from tauxcharge_assets.cleaning import CleanedSeries, CleaningRules, clean_series
from tauxcharge_assets.es_store import count_malformed_timestamps, fetch_raw_metrics
from tauxcharge_assets.partitions import tick_partitions, tick_window
from tauxcharge_assets.resources import ElasticsearchResource


@asset(partitions_def=tick_partitions, group_name="ingest", kinds={"elasticsearch", "pandas"})
def raw_es_extract(context: AssetExecutionContext, elasticsearch: ElasticsearchResource) -> Output[pd.DataFrame]:
    """The metric documents of the 24 h before the partition's end, exactly as they stood then."""
    window = tick_window(context.partition_key)
    client = elasticsearch.get_client()
    raw = fetch_raw_metrics(client, elasticsearch.indices.metrics, window.read_start, window.end, window.as_of)
    newest = raw["timestamp"].max() if len(raw) else None
    return Output(
        raw,
        metadata={
            "documents": len(raw),
            "names": int(raw["name"].nunique()),
            "window_start": window.read_start.isoformat(),
            "window_end": window.end.isoformat(),
            "as_of": window.as_of.isoformat(),
            "newest_timestamp": newest.isoformat() if newest is not None and pd.notna(newest) else "none",
            "index_documents_with_malformed_timestamp": count_malformed_timestamps(
                client, elasticsearch.indices.metrics
            ),
        },
    )


class CleaningConfig(Config):
    value_min: float = 0.0
    value_max: float = 100.0
    max_gap_fill: int = 3


@asset(partitions_def=tick_partitions, group_name="ingest", kinds={"pandas"})
def cleaned_series(
    context: AssetExecutionContext, config: CleaningConfig, raw_es_extract: pd.DataFrame
) -> Output[CleanedSeries]:
    """Every name on the 5-minute grid; each rule's effect is counted in the metadata."""
    window = tick_window(context.partition_key)
    rules = CleaningRules(config.value_min, config.value_max, config.max_gap_fill)
    cleaned = clean_series(raw_es_extract, window.read_start, window.end, rules)
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
