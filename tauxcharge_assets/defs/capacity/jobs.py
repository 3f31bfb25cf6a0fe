"""The capacity job and its hourly schedule: the plan for the newest closed tick, refreshed every hour."""

from __future__ import annotations

from dagster import (
    AssetSelection,
    DefaultScheduleStatus,
    RunRequest,
    ScheduleEvaluationContext,
    define_asset_job,
    in_process_executor,
    schedule,
)

from tauxcharge_assets.defs.capacity.assets import capacity_forecast
from tauxcharge_assets.defs.partitions import partition_key_ending_at, tick_partitions
from tauxcharge_assets.defs.resources import ELASTICSEARCH_HEAVY
from tauxcharge_assets.settings import automation_enabled, to_utc

capacity_job = define_asset_job(
    "capacity_job",
    tags=ELASTICSEARCH_HEAVY,
    selection=AssetSelection.assets(capacity_forecast),
    partitions_def=tick_partitions,
    executor_def=in_process_executor,
    description="Names forecast to cross their saturation level, for one tick's forecasts.",
)


@schedule(
    job=capacity_job,
    cron_schedule="3 * * * *",  # 3 minutes past: the tick ending on the hour has written its forecasts
    execution_timezone="UTC",
    name="capacity_every_hour",
    default_status=DefaultScheduleStatus.RUNNING if automation_enabled() else DefaultScheduleStatus.STOPPED,
)
def capacity_schedule(context: ScheduleEvaluationContext) -> RunRequest:
    """The tick that ended on the hour."""
    key = partition_key_ending_at(to_utc(context.scheduled_execution_time).floor("h"))
    return RunRequest(run_key=key, partition_key=key)
