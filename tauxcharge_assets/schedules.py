"""Every 5 minutes, materialize the tick assets for the window that just closed."""

from __future__ import annotations

import os

from dagster import DefaultScheduleStatus, build_schedule_from_partitioned_job

from tauxcharge_assets.jobs import tick_job


def automation_default_status() -> DefaultScheduleStatus:
    """Off unless ``TAUXCHARGE_AUTOMATION=on``: a fresh ``dagster dev`` must not hammer an empty cluster."""
    on = os.environ.get("TAUXCHARGE_AUTOMATION", "").lower() in ("1", "on", "true", "yes")
    return DefaultScheduleStatus.RUNNING if on else DefaultScheduleStatus.STOPPED


tick_schedule = build_schedule_from_partitioned_job(
    tick_job,
    name="tick_every_5_minutes",
    description="Runs tick_job for the latest closed 5-minute partition.",
    default_status=automation_default_status(),
)
