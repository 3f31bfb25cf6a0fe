"""Tables and plots for the Dagster UI's asset metadata (markdown, PNGs inlined as data URIs)."""

from __future__ import annotations

import base64
import io
from collections.abc import Sequence

import pandas as pd
from dagster import MetadataValue, TableColumn, TableRecord, TableSchema


def metadata_table(frame: pd.DataFrame, max_rows: int = 200, digits: int = 4) -> MetadataValue:
    """A frame as a Dagster table (the UI sorts and filters it); floats rounded, at most ``max_rows``."""
    shown = frame.head(max_rows)
    columns = []
    for name in shown.columns:
        dtype = shown[name].dtype
        if pd.api.types.is_bool_dtype(dtype):
            kind = "bool"
        elif pd.api.types.is_integer_dtype(dtype):
            kind = "int"
        elif pd.api.types.is_float_dtype(dtype):
            kind = "float"
        else:
            kind = "string"
        columns.append(TableColumn(str(name), kind))
    records = []
    for row in shown.itertuples(index=False):
        values = {}
        for column, value in zip(columns, row, strict=True):
            if column.type == "float":
                values[column.name] = None if pd.isna(value) else round(float(value), digits)
            elif column.type == "int":
                values[column.name] = int(value)
            elif column.type == "bool":
                values[column.name] = bool(value)
            else:
                values[column.name] = None if value is None or value is pd.NaT else str(value)
        records.append(TableRecord(values))
    return MetadataValue.table(records, schema=TableSchema(columns=columns))


def figure_markdown(figure) -> MetadataValue:  # figure: matplotlib Figure
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png", dpi=80, bbox_inches="tight")
    encoded = base64.b64encode(buffer.getvalue()).decode()
    return MetadataValue.md(f"![plot](data:image/png;base64,{encoded})")


def forecast_plot(history: pd.DataFrame, forecasts: pd.DataFrame, names: Sequence[str]):
    """The last hours of a few names and the forecast that follows them."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    figure, axes = plt.subplots(len(names), 1, figsize=(8, 1.8 * len(names)), sharex=True, squeeze=False)
    for axis, name in zip(axes[:, 0], names, strict=True):
        recent = history[name].iloc[-72:]
        axis.plot(recent.index, recent.to_numpy(), color="tab:blue", linewidth=1, label="actual")
        ahead = forecasts[forecasts["name"] == name]
        axis.plot(ahead["target_timestamp"], ahead["value"], color="tab:orange", marker=".", label="forecast p50")
        if {"lower", "upper"} <= set(ahead.columns):
            axis.fill_between(
                ahead["target_timestamp"],
                ahead["lower"],
                ahead["upper"],
                color="tab:orange",
                alpha=0.2,
                label="p10-p90",
            )
        axis.set_title(name, fontsize=8)
        axis.set_ylim(0, 100)
    axes[0, 0].legend(fontsize=7, loc="upper left")
    figure.tight_layout()
    plt.close(figure)
    return figure


def loss_plot(history: dict[str, list[float]]):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    figure, axis = plt.subplots(figsize=(5, 3))
    for key, values in history.items():
        axis.plot(range(1, len(values) + 1), values, marker=".", label=key)
    axis.set_xlabel("epoch")
    axis.set_ylabel("pinball loss (in usual 5-min changes)")
    axis.legend()
    figure.tight_layout()
    plt.close(figure)
    return figure


def backtest_plot(summary: pd.DataFrame):
    """Median MASE of every forecaster at every reported horizon (lower is better, 1 = the naive's in-sample MAE)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    table = summary.pivot(index="horizon", columns="forecaster", values="median_mase")
    figure, axis = plt.subplots(figsize=(6, 3))
    table.plot.bar(ax=axis, rot=0)
    axis.axhline(1.0, color="grey", linewidth=0.8, linestyle="--")
    axis.set_ylabel("median MASE")
    axis.legend(fontsize=7)
    figure.tight_layout()
    plt.close(figure)
    return figure


def capacity_plot(peaks: pd.DataFrame, crossings: pd.DataFrame, level: float, names: Sequence[str]):
    """Daily peaks of the names soonest at risk, their trend line to the crossing, and the saturation level."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import numpy as np

    figure, axis = plt.subplots(figsize=(8, 3))
    for name in names:
        series = peaks[name].dropna() if name in peaks else pd.Series(dtype=float)
        (line,) = axis.plot(series.index, series.to_numpy(), marker=".", linewidth=0.8, label=name)
        row = crossings[(crossings["name"] == name) & (crossings["horizon"] == "weeks")]
        if len(row) and len(series):
            slope = float(row["slope_per_day"].iloc[0])
            end = row["crossing_at"].iloc[0]
            days = (end - series.index[-1]) / pd.Timedelta(days=1)
            start_value = float(np.polyval(np.polyfit((series.index - series.index[0]).days, series, 1), 0))
            fitted_last = start_value + slope * (series.index[-1] - series.index[0]).days
            axis.plot([series.index[-1], end], [fitted_last, fitted_last + slope * days], "--", color=line.get_color())
    axis.axhline(level, color="tab:red", linewidth=1, label=f"saturation {level:g} %")
    axis.set_ylabel("daily peak (%)")
    axis.legend(fontsize=7, loc="upper left")
    figure.tight_layout()
    plt.close(figure)
    return figure
