"""The tick job (every 5 minutes, partitioned) and the retrain job."""

from __future__ import annotations

from dagster import AssetSelection, define_asset_job, in_process_executor

from tauxcharge_assets.assets import MODEL_ASSETS, TICK_ASSETS, hyperparameter_search
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
    selection=AssetSelection.assets(*MODEL_ASSETS),
    executor_def=in_process_executor,
    description=(
        "Retrain the global LSTM on the latest history, register it in MLflow, and make it the champion "
        "if it beats the current one and the baselines on the same backtest."
    ),
)

hyperparameter_search_job = define_asset_job(
    "hyperparameter_search_job",
    selection=AssetSelection.assets(hyperparameter_search),
    executor_def=in_process_executor,
    description="Train and backtest a small grid of hyperparameters; every trial is an MLflow run.",
)
