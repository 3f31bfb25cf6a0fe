"""Every 5 minutes, materialize the tick assets for the window that just closed: one run, or one run per
name shard when ``TAUXCHARGE_NAME_SHARDS`` splits the names (``data.shards``)."""

from __future__ import annotations

from collections.abc import Iterator

import pandas as pd
from dagster import (
    DefaultScheduleStatus,
    RunRequest,
    ScheduleDefinition,
    ScheduleEvaluationContext,
    build_schedule_from_partitioned_job,
    schedule,
)

from tauxcharge_assets.data.shards import Shard
from tauxcharge_assets.defs.partitions import partition_key_ending_at, tick_partitions
from tauxcharge_assets.defs.resources import name_shards_from_env, shard_run_config
from tauxcharge_assets.defs.serving.jobs import tick_job
from tauxcharge_assets.settings import automation_enabled, data_dir

SHARD_TAG = "tauxcharge/name_shard"
_STATUS = DefaultScheduleStatus.RUNNING if automation_enabled() else DefaultScheduleStatus.STOPPED
_DESCRIPTION = "Runs tick_job for the latest closed 5-minute partition"


def sharded_tick_schedule(count: int, storage_dir: str) -> ScheduleDefinition:
    """``count`` runs per tick, one per name shard, each with its shard's run config; the queued run
    coordinator (deploy/dagster.yaml) decides how many run at once, the run launcher where."""

    @schedule(
        job=tick_job,
        cron_schedule=tick_partitions.get_cron_schedule(),
        execution_timezone="UTC",
        name="tick_every_5_minutes",
        description=f"{_DESCRIPTION}, as {count} runs: one per name shard.",
        default_status=_STATUS,
    )
    def tick_every_5_minutes(context: ScheduleEvaluationContext) -> Iterator[RunRequest]:
        key = partition_key_ending_at(pd.Timestamp(context.scheduled_execution_time).floor("5min"))
        for index in range(count):
            shard = Shard(index, count)
            yield RunRequest(
                run_key=f"{key}{shard.suffix}",
                partition_key=key,
                run_config=shard_run_config(shard, storage_dir),
                tags={SHARD_TAG: shard.label},
            )

    return tick_every_5_minutes


def tick_schedule_for(count: int, storage_dir: str) -> ScheduleDefinition:
    if count == 1:
        return build_schedule_from_partitioned_job(
            tick_job, name="tick_every_5_minutes", description=f"{_DESCRIPTION}.", default_status=_STATUS
        )
    return sharded_tick_schedule(count, storage_dir)


tick_schedule = tick_schedule_for(name_shards_from_env(), str(data_dir() / "storage"))
