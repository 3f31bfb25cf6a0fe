"""Tables and plots for the Dagster UI's asset metadata (markdown, PNGs inlined as data URIs)."""

from __future__ import annotations

import base64
import io
from collections.abc import Sequence

import pandas as pd
from dagster import MetadataValue


def markdown_table(frame: pd.DataFrame, max_rows: int = 30, float_format: str = "{:.2f}") -> MetadataValue:
    if frame.empty:
        return MetadataValue.md("_none_")
    shown = frame.head(max_rows).copy()
    for column in shown.columns:
        if pd.api.types.is_float_dtype(shown[column]):
            shown[column] = shown[column].map(float_format.format)
        else:
            shown[column] = shown[column].astype(str)
    header = "| " + " | ".join(map(str, shown.columns)) + " |"
    rule = "|" + "|".join("---" for _ in shown.columns) + "|"
    rows = ["| " + " | ".join(row) + " |" for row in shown.to_numpy().tolist()]
    more = [f"\n_{len(frame) - max_rows} more rows_"] if len(frame) > max_rows else []
    return MetadataValue.md("\n".join([header, rule, *rows, *more]))


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
