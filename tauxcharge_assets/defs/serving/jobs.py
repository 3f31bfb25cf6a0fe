"""The tick job: every 5 minutes, one partition, the whole tick in one process."""

from __future__ import annotations

from dagster import AssetSelection, define_asset_job, in_process_executor

from tauxcharge_assets.defs.features.assets import encoded_names, sequence_tensors
from tauxcharge_assets.defs.ingest.assets import cleaned_series, quarantined_documents, raw_es_extract
from tauxcharge_assets.defs.partitions import tick_partitions
from tauxcharge_assets.defs.resources import ELASTICSEARCH_HEAVY
from tauxcharge_assets.defs.serving.assets import anomaly_report, forecasts

TICK_ASSETS = [
    raw_es_extract,
    cleaned_series,
    quarantined_documents,
    encoded_names,
    sequence_tensors,
    forecasts,
    anomaly_report,
]

tick_job = define_asset_job(
    "tick_job",
    tags=ELASTICSEARCH_HEAVY,
    selection=AssetSelection.assets(*TICK_ASSETS),
    partitions_def=tick_partitions,
    # One process for the whole tick: the multiprocess default pays 4-6 s of imports per step.
    executor_def=in_process_executor,
    description="Fetch, clean, encode, build sequences, forecast and report anomalies for one 5-minute window.",
)
