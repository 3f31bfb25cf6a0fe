"""5-minute tick partitions, and the time window each partition reads.

Start date rule: Dagster advises at most ~100k partitions per asset (about a year of 5-minute
windows). Partitions start on the first day of the month three months before the current one
(at most ~124 days, ~35,700 partitions), so the count stays bounded as time passes and moves only
once a month. ``TAUXCHARGE_PARTITIONS_START`` (an ISO date) overrides it, e.g. for a longer backfill.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

import pandas as pd
from dagster import TimeWindowPartitionsDefinition

from tauxcharge_assets.settings import STEP_MINUTES, WINDOW_STEPS, to_utc

PARTITION_KEY_FORMAT = "%Y-%m-%d-%H:%M"
HISTORY_MONTHS = 3


def partitions_start(today: pd.Timestamp | None = None) -> pd.Timestamp:
    if os.environ.get("TAUXCHARGE_PARTITIONS_START"):
        return to_utc(os.environ["TAUXCHARGE_PARTITIONS_START"])
    today = to_utc(today if today is not None else pd.Timestamp.now(tz="UTC"))
    return (today.normalize().replace(day=1) - pd.DateOffset(months=HISTORY_MONTHS)).normalize()


tick_partitions = TimeWindowPartitionsDefinition(
    cron_schedule=f"*/{STEP_MINUTES} * * * *",
    start=partitions_start().strftime(PARTITION_KEY_FORMAT),
    fmt=PARTITION_KEY_FORMAT,
    timezone="UTC",
)


@dataclass(frozen=True)
class TickWindow:
    """A partition ``[start, end)`` reads the ``WINDOW_STEPS`` slots before ``end``, as of ``end``."""

    partition_key: str
    start: pd.Timestamp
    end: pd.Timestamp

    @property
    def read_start(self) -> pd.Timestamp:
        return self.end - pd.Timedelta(minutes=STEP_MINUTES * WINDOW_STEPS)

    @property
    def as_of(self) -> pd.Timestamp:
        return self.end


def tick_window(partition_key: str) -> TickWindow:
    window = tick_partitions.time_window_for_partition_key(partition_key)
    return TickWindow(partition_key, to_utc(window.start), to_utc(window.end))


def partition_key_ending_at(end: pd.Timestamp) -> str:
    """The key of the partition whose window ends at ``end`` (a 5-minute boundary)."""
    return (to_utc(end) - pd.Timedelta(minutes=STEP_MINUTES)).strftime(PARTITION_KEY_FORMAT)
