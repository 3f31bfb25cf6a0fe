"""The dashboard page (``python -m tauxcharge_assets dashboard``): a thin Streamlit layout over ``dashboard/data.py``.

Four sections, each a keyed container the browser test finds by its ``st-key-*`` class: the name explorer,
the current anomalies, capacity, pipeline health. Reads are cached for ``REFRESH_S`` so a rerun (each widget
change) does not query again; the page asks again after that, so it follows the ticks.
"""

from __future__ import annotations

import altair as alt
import pandas as pd
import streamlit as st
from dagster import AssetCheckKey, DagsterInstance
from pandas.io.formats.style import Styler

from tauxcharge_assets.capacity.saturation import SaturationRules
from tauxcharge_assets.dashboard import data
from tauxcharge_assets.defs.resources import (
    ElasticsearchResource,
    MlflowResource,
    elasticsearch_from_env,
    mlflow_from_env,
)
from tauxcharge_assets.elastic.client import ElasticsearchUnavailableError

REFRESH_S = 30
RANGES = {"1 hour": pd.Timedelta(hours=1), "6 hours": pd.Timedelta(hours=6), "24 hours": pd.Timedelta(days=1),
          "3 days": pd.Timedelta(days=3), "7 days": pd.Timedelta(days=7), "30 days": pd.Timedelta(days=30)}  # fmt: skip
# The chart's colours; the browser test counts the actual values' pixels by ACTUAL_COLOUR.
ACTUAL_COLOUR, FORECAST_COLOUR, LATEST_COLOUR, ANOMALY_COLOUR = "#1f77b4", "#ff7f0e", "#9467bd", "#d62728"


@st.cache_resource
def elasticsearch() -> ElasticsearchResource:
    return elasticsearch_from_env().process_config_and_initialize()


@st.cache_resource
def mlflow() -> MlflowResource:
    return mlflow_from_env().process_config_and_initialize()


@st.cache_resource
def checks() -> list[tuple[AssetCheckKey, bool]]:
    """The code location's data-quality checks (importing the definitions takes seconds: once per process)."""
    from tauxcharge_assets.definitions import ALL_CHECKS

    return [(spec.key, spec.blocking) for check in ALL_CHECKS for spec in check.check_specs]


def client_and_indices() -> tuple:
    es = elasticsearch()
    return es.get_client(), es.indices


@st.cache_data(ttl=REFRESH_S)
def names() -> list[str]:
    return data.known_names(*client_and_indices())


@st.cache_data(ttl=REFRESH_S)
def explorer_frames(
    name: str, span: pd.Timedelta, horizon: int
) -> tuple[pd.DataFrame, pd.DataFrame, pd.DataFrame, pd.DataFrame]:
    client, indices = client_and_indices()
    end = data.newest_data(client, indices) or pd.Timestamp.now(tz="UTC")
    end = end.floor(data.STEP) + data.STEP
    start = end - span
    return (
        data.actual_values(client, indices, name, start, end),
        data.forecast_band(client, indices, name, start, end, horizon),
        data.latest_forecast(client, indices, name),
        data.anomalies(client, indices, start, end + pd.Timedelta(hours=1), name=name),
    )


@st.cache_data(ttl=REFRESH_S)
def current_anomalies(span: pd.Timedelta) -> pd.DataFrame:
    client, indices = client_and_indices()
    end = data.newest_issue(client, indices) or pd.Timestamp.now(tz="UTC")
    return data.anomalies(client, indices, end - span, end + data.STEP)


@st.cache_data(ttl=REFRESH_S)
def capacity(level: float) -> pd.DataFrame:
    return data.capacity(*client_and_indices(), SaturationRules(level=level))


@st.cache_data(ttl=REFRESH_S)
def health() -> tuple[data.TickHealth, pd.DataFrame, str | None, pd.DataFrame]:
    client, indices = client_and_indices()
    ticks = data.tick_health(client, indices)
    results = data.check_results(DagsterInstance.get(), checks())
    registry = mlflow()
    version = registry.champion_version()
    backtest = data.backtest_table(registry.version_metrics(version), version) if version else pd.DataFrame()
    return ticks, results, version, backtest


def chart(
    actual: pd.DataFrame, band: pd.DataFrame, latest: pd.DataFrame, flagged: pd.DataFrame, horizon: int
) -> alt.LayerChart:
    """Actual values, the forecasts made ``horizon`` steps ahead with their 80 % band, the newest forecast,
    and the anomalies as red points whose tooltip gives the reason."""
    legend = alt.Scale(
        domain=["actual", f"forecast t+{5 * horizon} min", "latest forecast", "anomaly"],
        range=[ACTUAL_COLOUR, FORECAST_COLOUR, LATEST_COLOUR, ANOMALY_COLOUR],
    )
    time = alt.X("time:T", title="time (UTC)")
    load = alt.Y("load:Q", title="load rate (%)", scale=alt.Scale(zero=False))

    def forecasts(frame: pd.DataFrame, series: str) -> list[alt.Chart]:
        rows = frame.rename(columns={"target_timestamp": "time", "value": "load"}).assign(series=series)
        base = alt.Chart(rows[["time", "load", "lower", "upper", "series"]])
        colour = alt.Color("series:N", scale=legend, title=None)
        return [
            base.mark_area(opacity=0.25).encode(time, alt.Y("lower:Q"), alt.Y2("upper:Q"), colour),
            base.mark_line(strokeDash=[4, 3]).encode(time, load, colour),
        ]

    layers = [
        *forecasts(band, legend.domain[1]),
        *forecasts(latest, "latest forecast"),
        alt.Chart(actual.rename(columns={"timestamp": "time", "actual": "load"}).assign(series="actual"))
        .mark_line(strokeWidth=2)
        .encode(time, load, alt.Color("series:N", scale=legend, title=None)),
        alt.Chart(
            flagged.rename(columns={"timestamp": "time", "actual": "load"}).assign(series="anomaly")[
                ["time", "load", "severity", "score", "reason", "series"]
            ]
        )
        .mark_point(filled=True, size=90)
        .encode(
            time,
            load,
            alt.Color("series:N", scale=legend, title=None),
            tooltip=["time:T", "load:Q", "severity:N", "score:Q", "reason:N"],
        ),
    ]
    return alt.layer(*layers).properties(height=380).interactive(bind_y=False)


def explorer() -> None:
    st.subheader("Name explorer")
    left, middle, right = st.columns([3, 1, 1])
    name = left.selectbox("name", names(), index=None, placeholder="choose a name", key="name")
    span = RANGES[middle.selectbox("time range", list(RANGES), index=2, key="range")]
    horizon = right.selectbox("forecast made", list(range(1, 13)), format_func=lambda h: f"{5 * h} min ahead",
                              key="horizon")  # fmt: skip
    if name is None:
        st.info("Choose a name to see its values, its forecasts and its anomalies.")
        return
    actual, band, latest, flagged = explorer_frames(name, span, horizon)
    st.altair_chart(chart(actual, band, latest, flagged, horizon), key="explorer_chart")
    issued = latest["issued_at"].iloc[0].isoformat() if len(latest) else "never"
    st.caption(
        f"{name}: {len(actual)} actual values, {len(band)} forecasts, {len(flagged)} anomalies; "
        f"latest forecast issued {issued}. Dashed: the median (p50), shaded: the 80 % band (p10 to p90); "
        "an anomaly's reason is in its tooltip and below."
    )
    if len(flagged):
        st.table(anomaly_rows(data.sort_anomalies(flagged, "time")))


def anomaly_rows(frame: pd.DataFrame) -> Styler:
    shown = frame[data.ANOMALY_COLUMNS].assign(timestamp=frame["timestamp"].dt.strftime("%Y-%m-%d %H:%M"))
    numbers = {"score": "{:.3f}", **dict.fromkeys(["actual", "forecast", "lower", "upper"], "{:.2f}")}
    return shown.set_index("timestamp").style.format(numbers, na_rep="")


def current() -> None:
    st.subheader("Current anomalies")
    left, right = st.columns([1, 1])
    span = RANGES[left.selectbox("detected in the last", list(RANGES), index=2, key="anomaly_range")]
    order = right.radio("sort by", data.SORT_ORDERS, horizontal=True, key="anomaly_sort",
                        format_func=lambda by: {"severity": "severity", "time": "newest first"}[by])  # fmt: skip
    flagged = current_anomalies(span)
    if flagged.empty:
        st.success("No anomaly in that time.")
        return
    counts = flagged["severity"].value_counts()
    st.caption(f"{len(flagged)} anomalies: {counts.get('critical', 0)} critical, {counts.get('warning', 0)} warning")
    st.table(anomaly_rows(data.sort_anomalies(flagged, order).head(50)))


def capacity_section() -> None:
    st.subheader("Capacity")
    level = st.number_input("saturation level (%)", 1.0, 100.0, SaturationRules().level, 5.0, key="level")
    crossings = capacity(level)
    if crossings.empty:
        st.success(f"No name is forecast to reach {level:g} %.")
        return
    st.caption(f"{crossings['name'].nunique()} names forecast to reach {level:g} %, soonest first")
    shown = crossings.assign(crossing_at=crossings["crossing_at"].dt.strftime("%Y-%m-%d %H:%M"))
    columns = ["name", "crossing_at", "horizon", "method", "expected_at_crossing", "slope_per_day", "latest"]
    st.table(shown[columns].set_index("name").style.format(precision=2, na_rep=""))


def health_section() -> None:
    st.subheader("Pipeline health")
    ticks, results, version, backtest = health()
    tick, lag, newest, champion = st.columns(4)
    tick.metric("latest tick", ticks.latest_tick.strftime("%Y-%m-%d %H:%M") if ticks.latest_tick else "none")
    lag.metric("lag", ticks.lag_text)
    newest.metric("newest data", ticks.newest_data.strftime("%Y-%m-%d %H:%M") if ticks.newest_data else "none")
    champion.metric("champion version", version or "none")
    st.markdown("**Data-quality checks** (latest evaluation of each)")
    st.table(results.assign(evaluated_at=results["evaluated_at"].dt.strftime("%Y-%m-%d %H:%M")).set_index("check"))
    st.markdown(f"**Backtest of the champion** (version {version}) beside the baselines" if version else
                "**Backtest**: no champion yet")  # fmt: skip
    if len(backtest):
        st.table(backtest.set_index("forecaster").style.format(precision=3, na_rep=""))


def main() -> None:
    st.set_page_config(page_title="tauxcharge", layout="wide")
    st.title("tauxcharge: load rates, forecasts, anomalies")
    for key, section in (("explorer", explorer), ("anomalies", current), ("capacity", capacity_section),
                         ("health", health_section)):  # fmt: skip
        with st.container(key=key, border=True):
            try:
                section()
            except ElasticsearchUnavailableError as error:  # an expected failure: its one line, not a traceback
                st.error(str(error))
                st.stop()


if __name__ == "__main__":  # `streamlit run` runs the file as __main__; an import (the test) only reads
    main()
