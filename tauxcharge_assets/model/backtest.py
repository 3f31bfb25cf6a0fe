"""Rolling-origin backtest shared by the training asset and the forecast benchmark.

One protocol for every model, so that the LSTM, the current champion and the baselines are compared on
the same targets: each series is split in time order (``train_fraction``), every forecaster is fitted
once on the training parts, then forecasts ``1..horizon`` steps ahead from every origin of the test part
without refitting. Accuracy is MASE (scaled by the in-sample one-step naive MAE of the training part),
and the 80 % interval [p10, p90] is scored by its coverage and the pinball loss.
"""

from __future__ import annotations

import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Protocol

import numpy as np
import pandas as pd

from tauxcharge_assets.settings import QUANTILES

POOLED_HORIZON = "mean"  # the horizon label of the scores pooled over every step 1..horizon


@dataclass(frozen=True)
class BacktestSpec:
    train_fraction: float = 0.7  # time-ordered split of each series
    horizon: int = 12  # forecasters produce 1..horizon steps ahead
    report_horizons: tuple[int, ...] = (1, 12)
    origin_step: int = 1  # a forecast origin every n steps over the test part
    season_day: int = 288
    season_week: int = 2016

    def __post_init__(self) -> None:
        if not 0.0 < self.train_fraction < 1.0:
            raise ValueError(f"train_fraction must be in (0, 1), got {self.train_fraction}")
        if self.horizon < 1 or self.origin_step < 1:
            raise ValueError("horizon and origin_step must be at least 1")
        if any(h < 1 or h > self.horizon for h in self.report_horizons):
            raise ValueError(f"report_horizons {self.report_horizons} must lie in 1..{self.horizon}")


class Forecaster(Protocol):
    """A model under test; ``forecast`` may read ``values[:t]`` only for origin ``t``."""

    name: str

    def fit(self, train: Mapping[str, np.ndarray]) -> None:
        """Training part of each series: float, NaN for gaps, regular 5-minute grid."""
        ...

    def forecast(self, series: str, values: np.ndarray, origins: np.ndarray, horizon: int) -> np.ndarray:
        """``(len(origins), horizon, 3)`` p10/p50/p90 of ``values[t:t+horizon]`` from ``values[:t]``."""
        ...


# --- data preparation -------------------------------------------------------------------------------


def regularise(timestamps: pd.Series, values: pd.Series, step: str = "5min") -> pd.Series:
    """Put irregular samples on a regular grid, because every forecaster indexes steps by position.

    Each timestamp is floored to the step, samples that land in the same slot are averaged, and slots
    without any sample between the first and the last one become NaN (never interpolated, so no value
    is invented from the future).
    """
    stamps = pd.to_datetime(timestamps, utc=True).dt.floor(step)
    grouped = pd.Series(np.asarray(values, dtype=np.float64), index=pd.DatetimeIndex(stamps)).groupby(level=0).mean()
    grid = pd.date_range(grouped.index.min(), grouped.index.max(), freq=step)
    return grouped.reindex(grid)


def grid_columns(values: pd.DataFrame) -> dict[str, np.ndarray]:
    """Columns of a wide grid x names frame (e.g. ``Simulation.values``) as float arrays."""
    if not values.index.is_monotonic_increasing or not values.index.is_unique:
        raise ValueError("the frame's index must be a sorted grid without duplicates")
    return {str(name): values[name].to_numpy(dtype=np.float64) for name in values.columns}


def split_index(length: int, train_fraction: float) -> int:
    """Number of leading points that form the training part (the rest is the test part)."""
    return int(np.floor(length * train_fraction))


def forecast_origins(length: int, split: int, spec: BacktestSpec) -> np.ndarray:
    """Origins of the test part whose whole target window ``[t, t + horizon)`` lies inside the series."""
    return np.arange(split, length - spec.horizon + 1, spec.origin_step, dtype=np.int64)


def mase_scale(train: np.ndarray) -> float:
    """In-sample one-step naive MAE, over consecutive pairs where both points are observed."""
    diffs = np.abs(np.diff(np.asarray(train, dtype=np.float64)))
    diffs = diffs[~np.isnan(diffs)]
    return float(diffs.mean()) if diffs.size else float("nan")


def causal_ffill(values: np.ndarray) -> np.ndarray:
    """Forward fill: position ``j`` depends on ``values[:j + 1]`` only, so it is safe before an origin."""
    values = np.asarray(values, dtype=np.float64)
    index = np.where(np.isnan(values), 0, np.arange(values.size))
    np.maximum.accumulate(index, out=index)
    return values[index]  # leading NaNs (before the first observation) stay NaN


def value_at(filled: np.ndarray, index: np.ndarray) -> np.ndarray:
    """``filled[index]`` with NaN for negative positions (which numpy would wrap to the end)."""
    return np.where(index >= 0, filled[np.clip(index, 0, None)], np.nan)


def window_targets(values: np.ndarray, origins: np.ndarray, horizon: int) -> np.ndarray:
    return values[np.asarray(origins)[:, None] + np.arange(horizon)[None, :]]


# --- baselines --------------------------------------------------------------------------------------


class _ResidualIntervalForecaster:
    """Point forecast plus an 80 % interval from its own training residuals, per horizon step.

    The quantiles of ``actual - point`` are taken over the training part only, for each step ahead, so
    the baselines get intervals made the same way as a model would and coverage can be compared.
    """

    name = "baseline"
    history_needed: tuple[int, ...] = (1,)  # preferred first: where residual origins start if the part allows

    def __init__(self) -> None:
        self._train: dict[str, np.ndarray] = {}
        self._offsets: dict[tuple[str, int], np.ndarray] = {}

    def fit(self, train: Mapping[str, np.ndarray]) -> None:
        self._train = {name: np.asarray(values, dtype=np.float64) for name, values in train.items()}
        self._offsets = {}

    def _point(self, values: np.ndarray, origins: np.ndarray, horizon: int) -> np.ndarray:
        raise NotImplementedError

    def forecast(self, series: str, values: np.ndarray, origins: np.ndarray, horizon: int) -> np.ndarray:
        point = self._point(np.asarray(values, dtype=np.float64), np.asarray(origins), horizon)
        low, high = self._interval_offsets(series, horizon)
        return np.stack([point + low, point, point + high], axis=-1)

    def _interval_offsets(self, series: str, horizon: int) -> tuple[np.ndarray, np.ndarray]:
        key = (series, horizon)
        if key not in self._offsets:
            self._offsets[key] = self._residual_quantiles(self._train.get(series, np.array([])), horizon)
        offsets = self._offsets[key]
        return offsets[0], offsets[1]

    def _residual_quantiles(self, train: np.ndarray, horizon: int) -> np.ndarray:
        start = next((h for h in self.history_needed if train.size - horizon >= h), 1)
        origins = np.arange(start, train.size - horizon + 1)
        if origins.size == 0:
            return np.zeros((2, horizon))
        residuals = window_targets(train, origins, horizon) - self._point(train, origins, horizon)
        offsets = np.zeros((2, horizon))
        pooled = residuals[~np.isnan(residuals)]
        for step in range(horizon):
            column = residuals[:, step]
            column = column[~np.isnan(column)]
            column = column if column.size else pooled  # a step without residuals borrows the others'
            if column.size:
                offsets[:, step] = np.quantile(column, [QUANTILES[0], QUANTILES[2]])
        return offsets


class NaiveForecaster(_ResidualIntervalForecaster):
    """The last observed value, for every step ahead."""

    name = "naive"

    def _point(self, values: np.ndarray, origins: np.ndarray, horizon: int) -> np.ndarray:
        last = value_at(causal_ffill(values), origins - 1)
        return np.repeat(last[:, None], horizon, axis=1)


class SeasonalNaiveForecaster(_ResidualIntervalForecaster):
    """The value one season earlier (``season=288`` a day, ``2016`` a week of 5-minute steps).

    Where the history is shorter than the season (e.g. less than a week for the weekly one) it falls
    back to ``fallback_season`` (the day), then to the last observed value, so every origin gets a
    forecast. A missing seasonal value is read from the forward-filled history.
    """

    def __init__(self, season: int = 288, fallback_season: int | None = 288, name: str | None = None) -> None:
        super().__init__()
        self.season = season
        self.fallback_season = fallback_season if fallback_season and fallback_season < season else None
        self.name = name or {288: "seasonal_day", 2016: "seasonal_week"}.get(season, f"seasonal_{season}")
        self.history_needed = (season, self.fallback_season or season, 1)

    def _point(self, values: np.ndarray, origins: np.ndarray, horizon: int) -> np.ndarray:
        filled = causal_ffill(values)
        steps = np.arange(1, horizon + 1)[None, :]
        targets = origins[:, None] + steps - 1
        point = np.repeat(value_at(filled, origins - 1)[:, None], horizon, axis=1)  # the last resort
        seasons = [s for s in (self.fallback_season, self.season) if s]  # the preferred season last
        for season in seasons:
            source = targets - season * np.ceil(steps / season).astype(np.int64)  # always before the origin
            seasonal = value_at(filled, source)
            point = np.where(np.isnan(seasonal), point, seasonal)
        return point


def baseline_forecasters(spec: BacktestSpec | None = None) -> list[Forecaster]:
    spec = spec or BacktestSpec()
    return [
        NaiveForecaster(),
        SeasonalNaiveForecaster(spec.season_day, fallback_season=None),
        SeasonalNaiveForecaster(spec.season_week, fallback_season=spec.season_day),
    ]


# --- running and scoring ----------------------------------------------------------------------------

TIMING_COLUMNS = ["forecaster", "fit_s", "forecast_s", "fit_cpu_s", "forecast_cpu_s"]
METRIC_COLUMNS = ["forecaster", "series", "horizon", "mae", "mase", "coverage", "pinball", "scaled_pinball", "n"]


def pinball_loss(targets: np.ndarray, quantiles: np.ndarray) -> float:
    """Mean over targets and over ``QUANTILES`` of the quantile (pinball) loss; ``quantiles`` is (n, 3)."""
    levels = np.asarray(QUANTILES)[None, :]
    error = targets[:, None] - quantiles
    return float(np.mean(np.maximum(levels * error, (levels - 1.0) * error)))


def _score(targets: np.ndarray, forecast: np.ndarray, scale: float) -> dict[str, float | int]:
    """Metrics over the observed targets of a (n,) target vector and its (n, 3) quantiles."""
    observed = ~np.isnan(targets)
    targets, forecast = targets[observed], forecast[observed]
    if targets.size == 0:
        return {"mae": np.nan, "mase": np.nan, "coverage": np.nan, "pinball": np.nan, "scaled_pinball": np.nan, "n": 0}
    mae = float(np.mean(np.abs(targets - forecast[:, 1])))
    covered = (targets >= forecast[:, 0]) & (targets <= forecast[:, 2])
    pinball = pinball_loss(targets, forecast)
    usable = bool(np.isfinite(scale) and scale > 0)  # a constant training part has no scale
    return {
        "mae": mae,
        "mase": mae / scale if usable else np.nan,
        "coverage": float(covered.mean()),
        "pinball": pinball,
        "scaled_pinball": pinball / scale if usable else np.nan,
        "n": int(targets.size),
    }


def score_forecasts(
    forecaster: str, series: str, targets: np.ndarray, forecast: np.ndarray, scale: float, spec: BacktestSpec
) -> list[dict[str, object]]:
    """One row per reported horizon, plus ``mean`` pooling every step 1..horizon."""
    rows: list[dict[str, object]] = []
    for horizon in spec.report_horizons:
        scores = _score(targets[:, horizon - 1], forecast[:, horizon - 1, :], scale)
        rows.append({"forecaster": forecaster, "series": series, "horizon": str(horizon)} | scores)
    pooled = _score(targets.reshape(-1), forecast.reshape(-1, len(QUANTILES)), scale)
    rows.append({"forecaster": forecaster, "series": series, "horizon": POOLED_HORIZON} | pooled)
    return rows


@dataclass(frozen=True)
class BacktestResult:
    frame: pd.DataFrame  # one row per forecaster x series x horizon: METRIC_COLUMNS
    timings: pd.DataFrame = field(default_factory=lambda: pd.DataFrame(columns=TIMING_COLUMNS))  # wall and CPU s
    spec: BacktestSpec = field(default_factory=BacktestSpec)

    def summary(self) -> pd.DataFrame:
        """Median and mean MASE per forecaster and horizon, coverage pooled over every target."""
        frame = self.frame.assign(covered=self.frame["coverage"] * self.frame["n"])
        grouped = frame.groupby(["forecaster", "horizon"], sort=False)
        summary = grouped.agg(
            median_mase=("mase", "median"),
            mean_mase=("mase", "mean"),
            median_scaled_pinball=("scaled_pinball", "median"),
            covered=("covered", "sum"),
            n=("n", "sum"),
            n_series=("series", "nunique"),
        ).reset_index()
        summary["coverage"] = summary["covered"] / summary["n"].where(summary["n"] > 0)
        return summary.drop(columns="covered")

    def to_markdown(self) -> str:
        """One row per forecaster: MASE per reported horizon and over all steps, coverage, wall and CPU times.

        sPL is the pinball loss divided by the MASE scale (lower is better, comparable across series).
        """
        summary = self.summary()
        labels = [str(h) for h in self.spec.report_horizons] + [POOLED_HORIZON]
        header = (
            ["forecaster"]
            + [f"median MASE h={h}" for h in labels]
            + [f"mean MASE h={h}" for h in labels]
            + [f"coverage80 h={h}" for h in labels]
            + ["median sPL mean", "fit s", "forecast s", "fit CPU s", "forecast CPU s"]
        )
        timings = self.timings.set_index("forecaster") if len(self.timings) else pd.DataFrame()
        rows = []
        for name in summary["forecaster"].unique():
            by_horizon = summary[summary["forecaster"] == name].set_index("horizon")
            cells = [str(name)]
            for column in ("median_mase", "mean_mase", "coverage"):
                cells += [_fmt(by_horizon[column].get(h, np.nan)) for h in labels]
            cells.append(_fmt(by_horizon["median_scaled_pinball"].get(POOLED_HORIZON, np.nan)))
            for column in TIMING_COLUMNS[1:]:
                cells.append(_fmt(timings[column].get(name, np.nan), 1) if column in timings else "")
            rows.append(cells)
        return github_table(header, rows)


def _fmt(value: float, digits: int = 3) -> str:
    return "" if np.isnan(value) else f"{float(value):.{digits}f}"


def github_table(header: Sequence[str], rows: Sequence[Sequence[str]]) -> str:
    """A GitHub table without needing ``tabulate``."""
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join("---" for _ in header) + "|"]
    lines += ["| " + " | ".join(row) + " |" for row in rows]
    return "\n".join(lines) + "\n"


def run_backtest(
    series: Mapping[str, np.ndarray], forecasters: Sequence[Forecaster], spec: BacktestSpec | None = None
) -> BacktestResult:
    """Fit each forecaster on the training parts, forecast every test origin, score per series."""
    spec = spec or BacktestSpec()
    values = {name: np.asarray(v, dtype=np.float64) for name, v in series.items()}
    splits = {name: split_index(v.size, spec.train_fraction) for name, v in values.items()}
    train = {name: v[: splits[name]].copy() for name, v in values.items()}  # copies: fit cannot see the rest
    scales = {name: mase_scale(part) for name, part in train.items()}
    rows: list[dict[str, object]] = []
    timings: list[dict[str, object]] = []
    for forecaster in forecasters:
        started, started_cpu = time.perf_counter(), time.process_time()
        forecaster.fit(train)
        fitted, fitted_cpu = time.perf_counter(), time.process_time()
        for name, v in values.items():
            origins = forecast_origins(v.size, splits[name], spec)
            if origins.size == 0:
                continue
            forecast = np.asarray(forecaster.forecast(name, v, origins, spec.horizon), dtype=np.float64)
            _check_forecast(forecaster.name, name, forecast, origins.size, spec.horizon)
            targets = window_targets(v, origins, spec.horizon)
            rows += score_forecasts(forecaster.name, name, targets, forecast, scales[name], spec)
        done, done_cpu = time.perf_counter(), time.process_time()
        timings.append(
            {
                "forecaster": forecaster.name,
                "fit_s": fitted - started,
                "forecast_s": done - fitted,
                "fit_cpu_s": fitted_cpu - started_cpu,
                "forecast_cpu_s": done_cpu - fitted_cpu,
            }
        )
    return BacktestResult(frame=pd.DataFrame(rows, columns=METRIC_COLUMNS), timings=pd.DataFrame(timings), spec=spec)


def _check_forecast(forecaster: str, series: str, forecast: np.ndarray, n_origins: int, horizon: int) -> None:
    expected = (n_origins, horizon, len(QUANTILES))
    if forecast.shape != expected:
        raise ValueError(f"{forecaster} on {series}: forecast shape {forecast.shape}, expected {expected}")
    if not np.isfinite(forecast).all():
        raise ValueError(f"{forecaster} on {series}: {int((~np.isfinite(forecast)).sum())} non-finite forecasts")


def check_causal(
    forecaster: Forecaster, values: np.ndarray, origins: np.ndarray, horizon: int, series: str = "causal-check"
) -> None:
    """Raise ValueError if a (fitted) forecaster's output at an origin moves when later values change.

    For each origin, everything from the origin on is replaced by noise on another scale; a causal
    forecaster gives the same numbers as on the untouched series.
    """
    values = np.asarray(values, dtype=np.float64)
    origins = np.asarray(origins, dtype=np.int64)
    reference = np.asarray(forecaster.forecast(series, values, origins, horizon), dtype=np.float64)
    rng = np.random.default_rng(0)
    spread = 1.0 + float(np.nanmax(np.abs(values))) if np.any(~np.isnan(values)) else 1.0
    leaks: list[str] = []
    for i, origin in enumerate(origins):
        tampered = values.copy()
        tampered[origin:] = rng.normal(10.0 * spread, 3.0 * spread, values.size - origin)
        again = np.asarray(forecaster.forecast(series, tampered, origins[i : i + 1], horizon), dtype=np.float64)[0]
        # float32 networks give batch-size-dependent rounding (~1e-8): a leak moves forecasts by ~spread
        if not np.allclose(again, reference[i], rtol=1e-5, atol=1e-6 * spread, equal_nan=True):
            gap = float(np.nanmax(np.abs(again - reference[i])))
            leaks.append(f"origin {int(origin)} (max change {gap:.4g})")
    if leaks:
        raise ValueError(
            f"{forecaster.name} reads values at or after the origin: {len(leaks)} of {origins.size} origins "
            f"changed, e.g. {', '.join(leaks[:5])}"
        )
