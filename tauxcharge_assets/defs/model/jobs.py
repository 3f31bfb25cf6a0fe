"""The retrain job (started by the retrain sensor) and the on-demand hyperparameter search job."""

from __future__ import annotations

from dagster import AssetSelection, define_asset_job, in_process_executor

from tauxcharge_assets.defs.model.assets import champion_model, trained_model
from tauxcharge_assets.defs.model.tuning import hyperparameter_search
from tauxcharge_assets.defs.resources import ELASTICSEARCH_HEAVY

MODEL_ASSETS = [trained_model, champion_model]

retrain_job = define_asset_job(
    "retrain_job",
    tags=ELASTICSEARCH_HEAVY,
    selection=AssetSelection.assets(*MODEL_ASSETS),
    executor_def=in_process_executor,
    description=(
        "Retrain the global LSTM on the latest history, register it in MLflow, and make it the champion "
        "if it beats the current one and the baselines on the same backtest."
    ),
)

hyperparameter_search_job = define_asset_job(
    "hyperparameter_search_job",
    tags=ELASTICSEARCH_HEAVY,
    selection=AssetSelection.assets(hyperparameter_search),
    executor_def=in_process_executor,
    description="Train and backtest a small grid of hyperparameters; every trial is an MLflow run.",
)
