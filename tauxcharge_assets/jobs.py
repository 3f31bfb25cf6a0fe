"""The tick job (every 5 minutes, partitioned) and the retrain job."""

from __future__ import annotations

from dagster import AssetSelection, define_asset_job, in_process_executor

from tauxcharge_assets.assets import TICK_ASSETS, trained_model
from tauxcharge_assets.partitions import tick_partitions

tick_job = define_asset_job(
    "tick_job",
    selection=AssetSelection.assets(*TICK_ASSETS),
    partitions_def=tick_partitions,
    # One process for the whole tick: the multiprocess default pays 4-6 s of imports per step.
    executor_def=in_process_executor,
    description="Fetch, clean, encode, build sequences, forecast and report anomalies for one 5-minute window.",
)

retrain_job = define_asset_job(
    "retrain_job",
    selection=AssetSelection.assets(trained_model),
    executor_def=in_process_executor,
    description="Retrain the global LSTM on the latest history and register it in MLflow.",
)
