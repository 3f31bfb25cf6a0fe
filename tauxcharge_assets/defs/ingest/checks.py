"""Data-quality gates of the ingest stage. Blocking checks stop the downstream assets of the same run when they fail.

Each check is a plain function of the asset's value (tested on small frames) wrapped in an
``asset_check`` that applies it to every partition of the run (``defs.ranges.check_each_partition``: an
input is one value, or a range's ``LazyPartitions``, hence ``Any``); thresholds live in
``QualityThresholds`` so the description and the code agree.
"""

from dataclasses import dataclass
from typing import Any

import pandas as pd
from dagster import AssetCheckExecutionContext, AssetCheckResult, AssetCheckSeverity, asset_check

from tauxcharge_assets.data.cleaning import CleanedSeries, CleaningRules
from tauxcharge_assets.defs.ingest.assets import (
    QuarantineSummary,
    RawExtract,
    cleaned_series,
    quarantined_documents,
    raw_es_extract,
)
from tauxcharge_assets.defs.partitions import tick_partitions, tick_window
from tauxcharge_assets.defs.ranges import check_each_partition


@dataclass(frozen=True)
class QualityThresholds:
    max_staleness_minutes: float = 15.0
    max_invalid_value_share: float = 0.02
    min_points_share_per_name: float = 0.8
    min_complete_names_share: float = 0.9


THRESHOLDS = QualityThresholds()


def freshness(raw: RawExtract, window_end: pd.Timestamp, t: QualityThresholds = THRESHOLDS) -> AssetCheckResult:
    newest = raw.newest_timestamp if raw.newest_timestamp is not None else pd.NaT
    lag = (window_end - newest).total_seconds() / 60 if pd.notna(newest) else float("inf")
    return AssetCheckResult(
        passed=bool(lag <= t.max_staleness_minutes),
        metadata={
            "newest_timestamp": str(newest),
            "lag_minutes": lag,
            "max_lag_minutes": t.max_staleness_minutes,
        },
    )


def values_in_range(raw: RawExtract, t: QualityThresholds = THRESHOLDS) -> AssetCheckResult:
    """Share of the window's documents whose value is not a number in the default range [0, 100]."""
    share = raw.invalid_values / raw.documents if raw.documents else 0.0
    return AssetCheckResult(
        passed=share <= t.max_invalid_value_share,
        metadata={
            "invalid_values": raw.invalid_values,
            "invalid_share": share,
            "max_share": t.max_invalid_value_share,
        },
    )


def completeness(cleaned: CleanedSeries, t: QualityThresholds = THRESHOLDS) -> AssetCheckResult:
    per_name = cleaned.observed.mean(axis=0)
    complete = per_name >= t.min_points_share_per_name
    share = float(complete.mean()) if len(per_name) else 0.0
    return AssetCheckResult(
        passed=share >= t.min_complete_names_share,
        metadata={
            "names": len(per_name),
            "complete_names_share": share,
            "least_complete": ", ".join(per_name.sort_values().head(5).index),
            "required_share": t.min_complete_names_share,
        },
    )


def unique_slots(cleaned: CleanedSeries, rules: CleaningRules = CleaningRules()) -> AssetCheckResult:
    duplicated_slots = int(cleaned.values.index.duplicated().sum())
    duplicated_names = int(cleaned.values.columns.duplicated().sum())
    values = cleaned.values.to_numpy()
    outside = int(((values < rules.value_min) | (values > rules.value_max)).sum())
    return AssetCheckResult(
        passed=duplicated_slots == 0 and duplicated_names == 0 and outside == 0,
        metadata={
            "duplicated_slots": duplicated_slots,
            "duplicated_names": duplicated_names,
            "values_outside": outside,
        },
    )


def rejected_share(summary: QuarantineSummary) -> AssetCheckResult:
    """The share of a tick's arrivals that the cleaning rejected, against ``QuarantineConfig.max_rejected_share``."""
    return AssetCheckResult(
        passed=summary.rejected_share <= summary.max_rejected_share,
        metadata={
            "arrived": summary.arrived,
            "rejected": summary.rejected,
            "rejected_share": summary.rejected_share,
            "max_share": summary.max_rejected_share,
            "quarantine_index": summary.index,
        },
    )


@asset_check(asset=raw_es_extract, partitions_def=tick_partitions, blocking=True)
def raw_es_extract_is_fresh(context: AssetCheckExecutionContext, raw_es_extract: Any) -> AssetCheckResult:
    """The newest document is at most 15 minutes older than the partition's end."""
    return check_each_partition(context, lambda key, raw: freshness(raw, tick_window(key).end), raw_es_extract)


@asset_check(asset=raw_es_extract, partitions_def=tick_partitions, blocking=False)
def raw_values_in_range(context: AssetCheckExecutionContext, raw_es_extract: Any) -> AssetCheckResult:
    """At most 2 % of the documents have a value that is not a number in [0, 100]."""
    result = check_each_partition(context, lambda _key, raw: values_in_range(raw), raw_es_extract)
    return AssetCheckResult(passed=result.passed, metadata=result.metadata, severity=AssetCheckSeverity.WARN)


@asset_check(asset=cleaned_series, partitions_def=tick_partitions, blocking=True)
def cleaned_series_is_complete(context: AssetCheckExecutionContext, cleaned_series: Any) -> AssetCheckResult:
    """At least 90 % of the names have at least 80 % of their 288 points."""
    return check_each_partition(context, lambda _key, cleaned: completeness(cleaned), cleaned_series)


@asset_check(asset=cleaned_series, partitions_def=tick_partitions, blocking=True)
def cleaned_series_has_unique_slots(context: AssetCheckExecutionContext, cleaned_series: Any) -> AssetCheckResult:
    """No duplicate (name, timestamp) and no value outside [0, 100] after cleaning."""
    return check_each_partition(context, lambda _key, cleaned: unique_slots(cleaned), cleaned_series)


@asset_check(asset=quarantined_documents, partitions_def=tick_partitions, blocking=False)
def quarantine_share_within_limit(context: AssetCheckExecutionContext, quarantined_documents: Any) -> AssetCheckResult:
    """At most ``max_rejected_share`` (2 % by default) of the documents that arrived in the tick are rejected.

    Severity ERROR, not blocking: the forecasts do not depend on the quarantine (see its asset).
    """
    return check_each_partition(context, lambda _key, summary: rejected_share(summary), quarantined_documents)


ALL_CHECKS = [
    raw_es_extract_is_fresh,
    raw_values_in_range,
    cleaned_series_is_complete,
    cleaned_series_has_unique_slots,
    quarantine_share_within_limit,
]
