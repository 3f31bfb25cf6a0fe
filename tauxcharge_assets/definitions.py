"""The code location: what ``dagster dev -w workspace.yaml`` loads.

Each pipeline stage under ``defs/`` holds its assets, checks and automation; this module only lists
them and binds the resources, so the whole graph reads in one screen.
"""

from __future__ import annotations

from dagster import Definitions

from tauxcharge_assets.defs.alerts.sensors import run_failure_alerts
from tauxcharge_assets.defs.capacity.assets import capacity_forecast
from tauxcharge_assets.defs.capacity.jobs import capacity_job, capacity_schedule
from tauxcharge_assets.defs.features.assets import encoded_names, sequence_tensors
from tauxcharge_assets.defs.ingest import checks as ingest_checks
from tauxcharge_assets.defs.ingest.assets import cleaned_series, quarantined_documents, raw_es_extract
from tauxcharge_assets.defs.io_manager import RetainedFilesystemIOManager
from tauxcharge_assets.defs.model import checks as model_checks
from tauxcharge_assets.defs.model.assets import champion_model, trained_model
from tauxcharge_assets.defs.model.jobs import hyperparameter_search_job, retrain_job
from tauxcharge_assets.defs.model.sensors import retrain_sensor
from tauxcharge_assets.defs.model.tuning import hyperparameter_search
from tauxcharge_assets.defs.resources import alerts_from_env, elasticsearch_from_env, mlflow_from_env
from tauxcharge_assets.defs.serving import checks as serving_checks
from tauxcharge_assets.defs.serving.assets import anomaly_report, forecasts
from tauxcharge_assets.defs.serving.jobs import tick_job
from tauxcharge_assets.defs.serving.schedules import tick_schedule
from tauxcharge_assets.settings import data_dir

ALL_ASSETS = [
    raw_es_extract,
    cleaned_series,
    quarantined_documents,
    encoded_names,
    sequence_tensors,
    trained_model,
    champion_model,
    forecasts,
    anomaly_report,
    capacity_forecast,
    hyperparameter_search,
]
ALL_CHECKS = [*ingest_checks.ALL_CHECKS, *serving_checks.ALL_CHECKS, *model_checks.ALL_CHECKS]


def build_resources(io_manager_base_dir: str | None = None) -> dict[str, object]:
    return {
        "elasticsearch": elasticsearch_from_env(),
        "mlflow": mlflow_from_env(),
        "alerts": alerts_from_env(),
        # Tick outputs are pickled per partition; retention keeps a few per asset (see ``defs.io_manager``).
        "io_manager": RetainedFilesystemIOManager(base_dir=io_manager_base_dir or str(data_dir() / "storage")),
    }


defs = Definitions(
    assets=ALL_ASSETS,
    asset_checks=ALL_CHECKS,
    jobs=[tick_job, retrain_job, hyperparameter_search_job, capacity_job],
    schedules=[tick_schedule, capacity_schedule],
    sensors=[retrain_sensor, run_failure_alerts],
    resources=build_resources(),
)
