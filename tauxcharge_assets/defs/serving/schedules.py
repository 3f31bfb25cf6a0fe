"""Every 5 minutes, materialize the tick assets for the window that just closed."""

from __future__ import annotations

from dagster import DefaultScheduleStatus, build_schedule_from_partitioned_job

from tauxcharge_assets.defs.serving.jobs import tick_job
from tauxcharge_assets.settings import automation_enabled

tick_schedule = build_schedule_from_partitioned_job(
    tick_job,
    name="tick_every_5_minutes",
    description="Runs tick_job for the latest closed 5-minute partition.",
    default_status=DefaultScheduleStatus.RUNNING if automation_enabled() else DefaultScheduleStatus.STOPPED,
)
