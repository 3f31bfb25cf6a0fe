"""The capacity asset: names forecast to cross their saturation level, soonest first, with a CSV export."""

import pandas as pd
from dagster import AssetExecutionContext, Config, MetadataValue, Output, asset
from pydantic import Field

from tauxcharge_assets.capacity.saturation import SaturationRules, at_risk
from tauxcharge_assets.defs.partitions import tick_partitions, tick_window
from tauxcharge_assets.defs.resources import TICK_RETRY_POLICY, ElasticsearchResource, unavailable_as_failure
from tauxcharge_assets.elastic.queries import daily_peaks
from tauxcharge_assets.reporting import capacity_plot, figure_markdown, metadata_table
from tauxcharge_assets.settings import data_dir

_RULES = SaturationRules()


class CapacityConfig(Config):
    saturation_level: float = Field(default=_RULES.level, description="The load rate (%) a name must stay under")
    trend_days: int = Field(default=_RULES.trend_days, description="Days of daily peaks the weekly trend is fitted on")
    min_days: int = Field(default=_RULES.min_days, description="Fewer daily peaks than this: no trend")
    horizon_days: int = Field(default=_RULES.horizon_days, description="Crossings further ahead are not reported")
    value_min: float = 0.0
    value_max: float = 100.0

    def rules(self) -> SaturationRules:
        return SaturationRules(self.saturation_level, self.trend_days, self.min_days, self.horizon_days)


def export_path(partition_key: str) -> str:
    return str(data_dir() / "capacity" / f"capacity-{partition_key.replace(':', '')}.csv")


@asset(
    retry_policy=TICK_RETRY_POLICY,
    partitions_def=tick_partitions,
    group_name="capacity",
    kinds={"pandas", "elasticsearch"},
)
def capacity_forecast(
    context: AssetExecutionContext,
    config: CapacityConfig,
    elasticsearch: ElasticsearchResource,
    forecasts: pd.DataFrame,
) -> Output[pd.DataFrame]:
    """Names whose load will cross the saturation level: within the hour (LSTM p90), within weeks (daily peaks).

    Not part of the 5-minute tick: ``capacity_job`` runs it every hour for the newest tick, so the
    tick keeps its budget and the plan is at most an hour old.
    """
    with unavailable_as_failure():
        bounds = tick_window(context.partition_key)
        rules = config.rules()
        peaks = daily_peaks(
            elasticsearch.get_client(),
            elasticsearch.indices.metrics,
            bounds.end - pd.Timedelta(days=rules.trend_days),
            bounds.end,
            bounds.as_of,
            config.value_min,
            config.value_max,
        )
    crossings = at_risk(forecasts, peaks, bounds.end, rules)
    path = export_path(context.partition_key)
    (data_dir() / "capacity").mkdir(parents=True, exist_ok=True)
    crossings.to_csv(path, index=False)
    soonest_weekly = list(crossings.loc[crossings["horizon"] == "weeks", "name"].drop_duplicates().head(4))
    return Output(
        crossings,
        metadata={
            "saturation_level": rules.level,
            "names_at_risk": int(crossings["name"].nunique()),
            "within_the_hour": int((crossings["horizon"] == "next_hour").sum()),
            "within_weeks": int((crossings["horizon"] == "weeks").sum()),
            "names_with_a_trend": int((peaks.notna().sum() >= rules.min_days).sum()) if len(peaks) else 0,
            "soonest": metadata_table(crossings.assign(crossing_at=crossings["crossing_at"].astype(str)), max_rows=50),
            "csv": MetadataValue.path(path),
            "plot": figure_markdown(capacity_plot(peaks, crossings, rules.level, soonest_weekly)),
        },
    )
