"""Quality gate of the serving stage: a failing model's forecasts stop the anomaly report in the same run."""

from typing import Any

import numpy as np
import pandas as pd
from dagster import AssetCheckExecutionContext, AssetCheckResult, asset_check

from tauxcharge_assets.defs.partitions import tick_partitions
from tauxcharge_assets.defs.ranges import check_each_partition
from tauxcharge_assets.defs.serving.assets import forecasts


def finite_forecasts(frame: pd.DataFrame) -> AssetCheckResult:
    values = frame[["lower", "value", "upper"]].to_numpy(dtype=float)
    bad = ~np.isfinite(values).all(axis=1)
    disordered = ~bad & ((values[:, 0] > values[:, 1]) | (values[:, 1] > values[:, 2]))
    return AssetCheckResult(
        passed=not bad.any() and not disordered.any() and len(frame) > 0,
        metadata={"forecasts": len(frame), "non_finite": int(bad.sum()), "interval_not_ordered": int(disordered.sum())},
    )


@asset_check(asset=forecasts, partitions_def=tick_partitions, blocking=True)
def forecasts_are_finite(context: AssetCheckExecutionContext, forecasts: Any) -> AssetCheckResult:
    """No NaN or infinite forecast and p10 <= p50 <= p90: a failing model stops the anomaly report."""
    return check_each_partition(context, lambda _key, frame: finite_forecasts(frame), forecasts)


ALL_CHECKS = [forecasts_are_finite]
