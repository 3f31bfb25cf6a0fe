"""The code location: what ``dagster dev -w workspace.yaml`` loads."""

from __future__ import annotations

from dagster import Definitions

from tauxcharge_assets.assets import ALL_ASSETS
from tauxcharge_assets.checks import ALL_CHECKS
from tauxcharge_assets.jobs import hyperparameter_search_job, retrain_job, tick_job
from tauxcharge_assets.resources import elasticsearch_from_env, mlflow_from_env
from tauxcharge_assets.retention import RetainedFilesystemIOManager
from tauxcharge_assets.schedules import tick_schedule
from tauxcharge_assets.sensors import retrain_sensor
from tauxcharge_assets.settings import data_dir


def build_resources(io_manager_base_dir: str | None = None) -> dict[str, object]:
    return {
        "elasticsearch": elasticsearch_from_env(),
        "mlflow": mlflow_from_env(),
        # Tick outputs are pickled per partition; retention keeps a few per asset (see ``retention``).
        "io_manager": RetainedFilesystemIOManager(base_dir=io_manager_base_dir or str(data_dir() / "storage")),
    }


defs = Definitions(
    assets=ALL_ASSETS,
    asset_checks=ALL_CHECKS,
    jobs=[tick_job, retrain_job, hyperparameter_search_job],
    schedules=[tick_schedule],
    sensors=[retrain_sensor],
    resources=build_resources(),
)
