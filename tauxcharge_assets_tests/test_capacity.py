"""Capacity: the names forecast to cross their saturation level, from the LSTM's p90 and the daily-peak trend."""

from __future__ import annotations

import uuid
from pathlib import Path

import numpy as np
import pandas as pd
from dagster import DagsterInstance, FilesystemIOManager, asset, build_schedule_context, materialize

from tauxcharge_assets.capacity.saturation import SaturationRules, next_hour_crossings, trend_crossings
from tauxcharge_assets.cli.runner import QUIET
from tauxcharge_assets.defs.capacity.assets import capacity_forecast
from tauxcharge_assets.defs.capacity.jobs import capacity_schedule
from tauxcharge_assets.defs.partitions import partition_key_ending_at, tick_partitions
from tauxcharge_assets.defs.resources import ElasticsearchResource
from tauxcharge_assets.elastic.bulk import bulk_write

END = pd.Timestamp.now(tz="UTC").floor("D") - pd.Timedelta(days=1) + pd.Timedelta(hours=12)
DAY0 = END.floor("D") - pd.Timedelta(days=13)


def forecast_rows(name: str, uppers: list[float], issued: pd.Timestamp = END) -> pd.DataFrame:
    targets = [issued + pd.Timedelta(minutes=5 * (h + 1)) for h in range(len(uppers))]
    return pd.DataFrame(
        {
            "name": name,
            "target_timestamp": targets,
            "horizon_steps": range(1, len(uppers) + 1),
            "value": np.array(uppers) - 5,
            "lower": np.array(uppers) - 10,
            "upper": uppers,
        }
    )


def test_the_next_hour_is_the_first_p90_at_the_level() -> None:
    frame = pd.concat(
        [forecast_rows("busy", [70, 78, 81, 85, 79]), forecast_rows("calm", [40] * 12), forecast_rows("at", [80])]
    )
    found = next_hour_crossings(frame, SaturationRules(level=80))
    assert list(found["name"]) == ["at", "busy"]
    assert list(found["crossing_at"]) == [END + pd.Timedelta(minutes=5), END + pd.Timedelta(minutes=15)]
    assert list(found["expected_at_crossing"]) == [80.0, 81.0]


def test_a_rising_trend_of_daily_peaks_gives_the_day_it_reaches_the_level() -> None:
    days = pd.date_range(DAY0, periods=14, freq="D", name="day")
    peaks = pd.DataFrame(
        {
            "rising": 50 + 2.0 * np.arange(14),  # reaches 80 on day 15
            "flat": np.full(14, 60.0),
            "falling": 90 - 1.0 * np.arange(14),
            "short": [np.nan] * 10 + [70, 74, 78, 79],  # 4 peaks: below min_days
            "slow": 50 + 0.5 * np.arange(14),  # reaches 80 on day 60: beyond the horizon
            "over": 79 + 0.5 * np.arange(14),  # already above: crossing now
        },
        index=days,
    )
    now = DAY0 + pd.Timedelta(days=13, hours=12)
    found = trend_crossings(peaks, now, SaturationRules(level=80, min_days=7, horizon_days=28)).set_index("name")
    assert set(found.index) == {"rising", "over"}
    assert found.loc["rising", "crossing_at"] == DAY0 + pd.Timedelta(days=15)
    assert found.loc["rising", "slope_per_day"] == 2.0
    assert found.loc["over", "crossing_at"] == now


def iso(ts: pd.Timestamp) -> str:
    return ts.strftime("%Y-%m-%dT%H:%M:%SZ")


def test_capacity_forecast_through_dagster(es_url: str, tmp_path: Path) -> None:
    """Fourteen days of documents in Elasticsearch: the asset finds the rising name, plots it, exports a CSV."""
    es = ElasticsearchResource(url=es_url, index_prefix=f"test-capacity-{uuid.uuid4().hex[:8]}")
    client = es.get_client()
    slots = pd.date_range(DAY0, END, freq="5min", inclusive="left")
    day = ((slots - DAY0) / pd.Timedelta(days=1)).astype(int)
    hour_peak = np.exp(-(((slots.hour - 14) / 2.0) ** 2))  # the busy hour at 14:00
    documents = []
    for name, base, growth in (("link-rising", 40.0, 2.0), ("link-flat", 40.0, 0.0)):
        values = base + growth * day + 10 * hour_peak
        documents += [
            (f"{name}-{k}", {"timestamp": iso(ts), "name": name, "value": round(float(v), 3), "ingested_at": iso(ts)})
            for k, (ts, v) in enumerate(zip(slots, values, strict=True))
        ]
    documents.append(("garbage", {"timestamp": iso(END - pd.Timedelta(hours=1)), "name": "link-flat", "value": 250.0}))
    bulk_write(client, es.indices.metrics, documents)
    key = partition_key_ending_at(END)

    @asset(name="forecasts", partitions_def=tick_partitions)
    def forecasts_written_by_the_tick() -> pd.DataFrame:
        return pd.concat([forecast_rows("link-flat", [60.0] * 12), forecast_rows("cell-hot", [75, 79, 83] + [88] * 9)])

    try:
        result = materialize(
            [forecasts_written_by_the_tick, capacity_forecast],
            partition_key=key,
            resources={"elasticsearch": es, "io_manager": FilesystemIOManager(base_dir=str(tmp_path))},
            instance=DagsterInstance.ephemeral(),
            run_config={**QUIET, "ops": {"capacity_forecast": {"config": {"saturation_level": 80.0}}}},
        )
    finally:
        client.indices.delete(index=f"{es.index_prefix}-*", allow_no_indices=True)
    crossings = result.output_for_node("capacity_forecast")
    assert list(zip(crossings["name"], crossings["horizon"], strict=True)) == [
        ("cell-hot", "next_hour"),
        ("link-rising", "weeks"),
    ]
    assert crossings["crossing_at"].iloc[0] == END + pd.Timedelta(minutes=15)
    # Peaks 50 + 2 d (base 40 + 10 at the busy hour): 80 on day 15 after DAY0, whatever the hour of the fit.
    weekly = crossings.iloc[1]
    assert abs(weekly["crossing_at"] - (DAY0 + pd.Timedelta(days=15))) < pd.Timedelta(hours=2)
    assert weekly["slope_per_day"] == np.float64(weekly["slope_per_day"]) and 1.9 < weekly["slope_per_day"] < 2.1
    metadata = result.asset_materializations_for_node("capacity_forecast")[0].metadata
    assert metadata["names_at_risk"].value == 2 and metadata["names_with_a_trend"].value == 2
    exported = pd.read_csv(metadata["csv"].value)
    assert list(exported["name"]) == ["cell-hot", "link-rising"]
    assert metadata["plot"].value.startswith("![plot](data:image/png;base64,")


def test_the_hourly_schedule_plans_for_the_tick_that_ended_on_the_hour() -> None:
    context = build_schedule_context(scheduled_execution_time=pd.Timestamp("2026-11-30 14:03", tz="UTC"))
    request = capacity_schedule(context)
    assert request.partition_key == partition_key_ending_at(pd.Timestamp("2026-11-30 14:00", tz="UTC"))
