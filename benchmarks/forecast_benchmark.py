"""Forecast accuracy benchmark: the peers a skeptic would try, on the shared backtest protocol.

Run with the ``bench`` extra installed (``uv pip install -e '.[dev,bench]'``)::

    python benchmarks/forecast_benchmark.py --data nab --output results.md

Protocol (``tauxcharge_assets.backtest``): a time-ordered 70/30 split per series, forecasts from every
origin of the test part (``--origin-step``) 1..12 steps ahead, MASE scaled by the in-sample one-step
naive MAE, 80 % interval coverage. Every forecaster is fitted once on the training parts, never refitted.
More forecasters (the LSTM) plug in through ``FORECASTERS`` or ``register`` without touching the protocol.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from tauxcharge_assets.data import nab
from tauxcharge_assets.model.backtest import (
    BacktestSpec,
    Forecaster,
    NaiveForecaster,
    SeasonalNaiveForecaster,
    causal_ffill,
    check_causal,
    forecast_origins,
    grid_columns,
    mase_scale,
    regularise,
    run_backtest,
    split_index,
    value_at,
)
from tauxcharge_assets.settings import QUANTILES, STEP_MINUTES


@dataclass(frozen=True)
class BenchmarkContext:
    """What a forecaster factory may need besides the values: the protocol and each grid's first slot."""

    spec: BacktestSpec
    starts: Mapping[str, pd.Timestamp]


# --- data -------------------------------------------------------------------------------------------


def load_nab(directory: Path = nab.DEFAULT_NAB_DIR) -> tuple[dict[str, np.ndarray], dict[str, pd.Timestamp]]:
    """The realAWSCloudwatch files, read in place and put on the 5-minute grid (see ``regularise``)."""
    grids = {
        name: regularise(f["timestamp"], f["value"], f"{STEP_MINUTES}min")
        for name, f in nab.read_directory(directory).items()
    }
    return {name: g.to_numpy() for name, g in grids.items()}, {name: g.index[0] for name, g in grids.items()}


def load_simulator(
    n_names: int = 50, days: float = 14.0, seed: int = 7
) -> tuple[dict[str, np.ndarray], dict[str, pd.Timestamp]]:
    """Simulated true values (already on the grid, NaN where a point is missing, anomalies included)."""
    from tauxcharge_assets.data.simulator import SimulationSpec, simulate

    sim = simulate(SimulationSpec(n_names=n_names, days=days, end=pd.Timestamp("2024-06-03", tz="UTC"), seed=seed))
    return grid_columns(sim.values), dict.fromkeys(map(str, sim.values.columns), sim.values.index[0])


# --- peers ------------------------------------------------------------------------------------------


class AutoETSForecaster:
    """statsforecast's AutoETS, selected and fitted once per series on its training part.

    From each origin the fitted model is applied to the history with ``AutoETS.forward`` (same
    parameters and initial states, the states filtered over ``values[:t]``), which is statsforecast's
    way to reuse a model without refitting. ``season_length=1`` (default) searches the non-seasonal
    models (ZZN): seasonal ETS with a 288-step season (``autoets_day``) fits ~290 parameters, 15 s to
    minutes a series (17 NAB series did not finish in 10 CPU minutes), so it is not a default peer.
    Gaps are forward filled (causal); p10/p90 are the model's analytic 80 % interval, p50 its mean.
    """

    def __init__(self, season_length: int = 1, name: str = "autoets") -> None:
        self.season_length = season_length
        self.name = name
        self._models: dict[str, Any] = {}
        self.fallbacks = 0  # origins answered with the last value: reported, so a broken model shows

    def fit(self, train: Mapping[str, np.ndarray]) -> None:
        from statsforecast.models import AutoETS

        self._models = {}
        for series, values in train.items():
            history = _observed_history(values)
            if history.size > 2 * self.season_length + 10:
                self._models[series] = AutoETS(season_length=self.season_length).fit(history)

    def forecast(self, series: str, values: np.ndarray, origins: np.ndarray, horizon: int) -> np.ndarray:
        filled = causal_ffill(values)
        model = self._models.get(series)
        out = np.empty((len(origins), horizon, len(QUANTILES)))
        for i, origin in enumerate(origins):
            history = _observed_history(filled[:origin])
            if model is not None and history.size:
                result = model.forward(history, h=horizon, level=[80])
                out[i] = np.stack([result["lo-80"], result["mean"], result["hi-80"]], axis=-1)
            else:  # too short to fit: the last value, no interval
                out[i] = history[-1] if history.size else 0.0
            if not np.isfinite(out[i]).all():  # e.g. a multiplicative model meeting a zero
                out[i] = history[-1] if history.size else 0.0
                self.fallbacks += 1
        return out


def _observed_history(values: np.ndarray) -> np.ndarray:
    """Forward-filled values from the first observation on (ETS accepts no NaN)."""
    filled = causal_ffill(values)
    observed = np.flatnonzero(~np.isnan(filled))
    return filled[observed[0] :] if observed.size else filled[:0]


class LightGBMForecaster:
    """A global gradient-boosted model on lag features, direct: one model per step ahead and quantile.

    Every series is put on a common scale (its training one-step naive MAE, the MASE scale) and the
    target is the change from the last observed value, so one model learns from all series. Features
    at origin t for step k: the last 12 values, the value one day before the target (lag 288), the
    change since the same time yesterday, rolling means over 1 h, 3 h and a day, the 1 h rolling
    std, and the target's slot of the day. p10/p50/p90 come from quantile objectives (12 x 3 models),
    sorted so they never cross. Each step's model sees at most ``max_rows`` sampled training rows and
    one thread: OpenMP threads spin and crawl when the cores are shared with other work.
    """

    name = "lightgbm"
    lags = 12
    day = 288
    windows = (12, 36, 288)

    def __init__(
        self, starts: Mapping[str, pd.Timestamp], horizon: int = 12, rounds: int = 100, max_rows: int = 60_000
    ) -> None:
        self.starts = starts
        self.horizon = horizon
        self.rounds = rounds
        self.max_rows = max_rows
        self._boosters: dict[tuple[int, float], Any] = {}
        self._scales: dict[str, tuple[float, float]] = {}

    def fit(self, train: Mapping[str, np.ndarray]) -> None:
        import lightgbm as lgb

        self._scales = {name: _scale_of(values) for name, values in train.items()}
        rng = np.random.default_rng(0)
        self._boosters = {}
        for step in range(1, self.horizon + 1):
            features, targets = [], []
            for name, values in train.items():
                first = self.day + 1 if values.size - step >= self.day + 1 else self.lags + 1
                origins = np.arange(first, values.size - step + 1)
                if origins.size == 0:
                    continue
                x, last = self._features(name, values, origins, step)
                y = (values[origins + step - 1] - last) / self._scales[name][0]
                keep = ~np.isnan(y)
                features.append(x[keep])
                targets.append(y[keep])
            x_all, y_all = np.concatenate(features), np.concatenate(targets)
            if y_all.size > self.max_rows:
                rows = rng.choice(y_all.size, self.max_rows, replace=False)
                x_all, y_all = x_all[rows], y_all[rows]
            dataset = lgb.Dataset(x_all, y_all, free_raw_data=False, params={"verbose": -1, "max_bin": 63})
            for q in QUANTILES:
                params = {
                    "objective": "quantile", "alpha": q, "learning_rate": 0.1, "num_leaves": 31,
                    "min_data_in_leaf": 50, "feature_fraction": 0.8, "bagging_fraction": 0.5, "bagging_freq": 1,
                    "max_bin": 63, "num_threads": 1, "seed": 0, "verbose": -1,
                }  # fmt: skip
                self._boosters[(step, q)] = lgb.train(params, dataset, num_boost_round=self.rounds)

    def forecast(self, series: str, values: np.ndarray, origins: np.ndarray, horizon: int) -> np.ndarray:
        if series not in self._scales or horizon > self.horizon:
            raise ValueError(f"{self.name} was fitted on other series or a shorter horizon than {series}, {horizon}")
        scale = self._scales[series]
        out = np.empty((len(origins), horizon, len(QUANTILES)))
        for step in range(1, horizon + 1):
            x, last = self._features(series, values, origins, step)
            for j, q in enumerate(QUANTILES):
                out[:, step - 1, j] = last + scale[0] * self._boosters[(step, q)].predict(x, num_threads=1)
        return np.sort(out, axis=-1)

    def _features(
        self, series: str, values: np.ndarray, origins: np.ndarray, step: int
    ) -> tuple[np.ndarray, np.ndarray]:
        """Feature rows for the given origins, reading ``values[:origin]`` only; also the last value."""
        scale, mean = self._scales[series]
        filled = causal_ffill(values)
        last = value_at(filled, origins - 1)

        columns = [(value_at(filled, origins - lag) - last) / scale for lag in range(2, self.lags + 1)]
        columns.append(
            (value_at(filled, origins + step - 1 - self.day) - last) / scale
        )  # the target's value a day before
        columns.append((last - value_at(filled, origins - 1 - self.day)) / scale)
        history = pd.Series(filled)
        for window in self.windows:
            columns.append((history.rolling(window, min_periods=1).mean().to_numpy()[origins - 1] - last) / scale)
        columns.append(history.rolling(self.lags, min_periods=2).std().to_numpy()[origins - 1] / scale)
        columns.append((last - mean) / scale)
        start = self.starts.get(series, pd.Timestamp(0, tz="UTC"))
        first_slot = (start.hour * 60 + start.minute) // STEP_MINUTES
        columns.append(((first_slot + origins + step - 1) % self.day).astype(np.float64))
        return np.column_stack(columns), last


def _scale_of(train: np.ndarray) -> tuple[float, float]:
    """(scale, level) of a training part: the MASE scale, falling back to the std, then 1."""
    scale = mase_scale(train)
    if not np.isfinite(scale) or scale <= 0:
        scale = float(np.nanstd(train)) if np.any(~np.isnan(train)) else 1.0
    mean = float(np.nanmean(train)) if np.any(~np.isnan(train)) else 0.0
    return (scale if scale > 0 else 1.0), mean


# --- registry and CLI -------------------------------------------------------------------------------

Factory = Callable[[BenchmarkContext], Forecaster]
FORECASTERS: dict[str, Factory] = {
    "naive": lambda ctx: NaiveForecaster(),
    "seasonal_day": lambda ctx: SeasonalNaiveForecaster(ctx.spec.season_day, fallback_season=None),
    "seasonal_week": lambda ctx: SeasonalNaiveForecaster(ctx.spec.season_week, fallback_season=ctx.spec.season_day),
    "autoets": lambda ctx: AutoETSForecaster(),
    "autoets_day": lambda ctx: AutoETSForecaster(season_length=ctx.spec.season_day, name="autoets_day"),
    "lightgbm": lambda ctx: LightGBMForecaster(ctx.starts, horizon=ctx.spec.horizon),
}
DEFAULT_FORECASTERS = "naive,seasonal_day,seasonal_week,autoets,lightgbm"


def register(name: str, factory: Factory) -> None:
    """Add a forecaster (e.g. ``lstm``) to the benchmark from outside this file."""
    FORECASTERS[name] = factory


def causal_spot_check(forecaster: Forecaster, series: Mapping[str, np.ndarray], spec: BacktestSpec) -> None:
    """A few origins of the first series through ``check_causal`` (the forecaster is already fitted)."""
    name, values = next(iter(series.items()))
    origins = forecast_origins(values.size, split_index(values.size, spec.train_fraction), spec)
    check_causal(forecaster, values, origins[:: max(1, origins.size // 4)][:4], spec.horizon, series=name)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", choices=("nab", "simulator"), default="nab")
    parser.add_argument(
        "--forecasters", default=DEFAULT_FORECASTERS, help=f"comma separated, from {sorted(FORECASTERS)}"
    )
    parser.add_argument("--origin-step", type=int, default=1)
    parser.add_argument("--output", type=Path, default=None)
    parser.add_argument("--names", type=int, default=50, help="simulator: number of series")
    parser.add_argument("--days", type=float, default=14.0, help="simulator: days per series")
    parser.add_argument("--check-causal", action="store_true", help="also check each forecaster on a few origins")
    args = parser.parse_args(argv)

    spec = BacktestSpec(origin_step=args.origin_step)
    started = time.perf_counter()
    series, starts = load_nab() if args.data == "nab" else load_simulator(args.names, args.days)
    unknown = [n for n in args.forecasters.split(",") if n not in FORECASTERS]
    if unknown:
        parser.error(f"unknown forecasters {unknown}; known: {sorted(FORECASTERS)}")
    context = BenchmarkContext(spec=spec, starts=starts)
    forecasters = [FORECASTERS[n](context) for n in args.forecasters.split(",")]
    result = run_backtest(series, forecasters, spec)
    if args.check_causal:
        for forecaster in forecasters:
            causal_spot_check(forecaster, series, spec)
    total = time.perf_counter() - started
    fallbacks = [
        f"- {f.name}: {f.fallbacks} origins fell back to the last value"
        for f in forecasters
        if getattr(f, "fallbacks", 0)
    ]
    notes = "\n" + "\n".join(fallbacks) + "\n" if fallbacks else ""
    n_origins = sum(
        forecast_origins(v.size, split_index(v.size, spec.train_fraction), spec).size for v in series.values()
    )
    report = (
        f"## Forecast benchmark: {args.data}\n\n"
        f"{len(series)} series, {n_origins} origins, train fraction {spec.train_fraction}, horizon 1..{spec.horizon}, "
        f"origin step {spec.origin_step}, MASE scaled by the in-sample one-step naive MAE, "
        f"coverage of the 80 % interval [p10, p90]{', causality spot-checked' if args.check_causal else ''}; "
        f"total wall time {total:.0f} s (load average {os.getloadavg()[0]:.1f} on {os.cpu_count()} cores).\n\n"
        f"{result.to_markdown()}{notes}"
    )
    print(report)
    if args.output:
        args.output.write_text(report)
    return 0


if __name__ == "__main__":
    sys.exit(main())
