"""A retrain from the metrics store: the history, the challenger, its backtest against the champion and
the baselines, and the promotion decision; and the small hyperparameter search built on the same steps.

The assets in ``defs/model`` only read their resources and call these functions, so a retrain and a
search trial are judged on exactly the same backtest.
"""

from __future__ import annotations

import dataclasses
import itertools
import random
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np
import pandas as pd
from elasticsearch import Elasticsearch

from tauxcharge_assets.data.cleaning import CleanedSeries, clean_series
from tauxcharge_assets.data.name_ids import assign_name_ids
from tauxcharge_assets.elastic.indices import IndexNames
from tauxcharge_assets.elastic.queries import fetch_raw_metrics
from tauxcharge_assets.model import backtest
from tauxcharge_assets.model.forecaster import ForecastModel, LstmForecaster, series_from_frame, train_forecast_model
from tauxcharge_assets.model.network import ModelHyperparameters
from tauxcharge_assets.model.promotion import (
    CHALLENGER,
    CHAMPION,
    DECISION_HORIZON,
    DECISION_METRIC,
    promotion_decision,
)
from tauxcharge_assets.settings import STEP_MINUTES, to_utc


class NoTrainingDataError(ValueError):
    """The window asked for holds no metric documents."""


@dataclasses.dataclass(frozen=True)
class TrainingHistory:
    """The cleaned history a model learns from, with the persistent name ids."""

    cleaned: CleanedSeries
    name_ids: dict[str, int]
    until: pd.Timestamp

    def series(self) -> dict[str, np.ndarray]:
        observed = self.cleaned.values.where(self.cleaned.observed)
        return {str(name): observed[name].to_numpy("float32") for name in observed.columns}

    @property
    def start_times(self) -> dict[str, pd.Timestamp]:
        return {str(name): self.cleaned.values.index[0] for name in self.cleaned.values.columns}

    @property
    def vocabulary(self) -> int:
        return max(self.name_ids.values(), default=0) + 1

    def fit(self, hp: ModelHyperparameters, callbacks: list[Any] | None = None) -> ForecastModel:
        observed = self.cleaned.values.where(self.cleaned.observed)
        return train_forecast_model(series_from_frame(observed, self.name_ids), hp, self.vocabulary, callbacks)


def load_history(
    client: Elasticsearch, indices: IndexNames, training_days: float, train_until: str | None
) -> TrainingHistory:
    """``training_days`` of metrics ending at ``train_until`` (default now, on the grid), as they stood then."""
    until = to_utc(train_until) if train_until else pd.Timestamp.now(tz="UTC")
    until = until.floor(f"{STEP_MINUTES}min")
    since = until - pd.Timedelta(days=training_days)
    raw = fetch_raw_metrics(client, indices.metrics, since, until, as_of=until)
    cleaned = clean_series(raw, since, until)
    if not cleaned.names:
        raise NoTrainingDataError(
            f"No metric documents between {since} and {until} in {indices.metrics}: load data first."
        )
    name_ids, _ = assign_name_ids(client, indices.names, cleaned.names)
    return TrainingHistory(cleaned, name_ids, until)


def backtest_against(
    history: TrainingHistory,
    challenger: ForecastModel,
    champion: ForecastModel | None,
    hp: ModelHyperparameters,
    origin_step: int,
) -> backtest.BacktestResult:
    """Every candidate forecasts the same held-out origins: the challenger, the champion, the baselines."""
    spec = backtest.BacktestSpec(
        train_fraction=1 - hp.holdout_fraction,
        horizon=hp.horizon,
        report_horizons=tuple(sorted({1, hp.horizon})),
        origin_step=origin_step,
    )
    candidates: list[backtest.Forecaster] = [
        LstmForecaster(hp, history.start_times, challenger, history.name_ids, name=CHALLENGER)
    ]
    if champion is not None:
        candidates.append(LstmForecaster(champion.hp, history.start_times, champion, history.name_ids, name=CHAMPION))
    return backtest.run_backtest(
        backtest_series(history, spec), [*candidates, *backtest.baseline_forecasters(spec)], spec
    )


def backtest_series(history: TrainingHistory, spec: backtest.BacktestSpec) -> dict[str, np.ndarray]:
    """The series the backtest scores: those with an observed value in their training part. A name with none
    (every value rejected by cleaning, or one that only started in the held-out days) has nothing a forecaster
    could start from: the baselines would forecast NaN and fail the whole retrain."""
    return {
        name: values
        for name, values in history.series().items()
        if np.isfinite(values[: backtest.split_index(len(values), spec.train_fraction)]).any()
    }


def backtest_metrics(result: backtest.BacktestResult) -> dict[str, float]:
    summary = result.summary()
    return {
        f"backtest_{row.forecaster}_{column}_h{row.horizon}": float(getattr(row, column))
        for row in summary.itertuples()
        for column in ("median_mase", "mean_mase", "coverage")
    }


@dataclasses.dataclass(frozen=True)
class Challenger:
    """A trained model with its backtest and the promotion decision taken on it."""

    model: ForecastModel
    result: backtest.BacktestResult
    decision: dict[str, Any]

    @property
    def summary(self) -> pd.DataFrame:
        return self.result.summary()

    @property
    def metrics(self) -> dict[str, float]:
        return {**backtest_metrics(self.result), "validation_coverage_80": self.model.validation_coverage}


def train_challenger(
    history: TrainingHistory,
    hp: ModelHyperparameters,
    champion: ForecastModel | None,
    champion_version: str | None,
    origin_step: int,
    callbacks: list[Any] | None = None,
) -> Challenger:
    """Train on ``history``, backtest against the champion and the baselines, decide on promotion."""
    model = history.fit(hp, callbacks)
    result = backtest_against(history, model, champion, hp, origin_step)
    baselines = [forecaster.name for forecaster in backtest.baseline_forecasters()]
    return Challenger(model, result, promotion_decision(result.summary(), baselines, champion_version))


def trial_grid(
    windows: Sequence[int], lstm_units: Sequence[int], learning_rates: Sequence[float], max_trials: int, seed: int
) -> list[dict[str, float | int]]:
    """The grid in a seeded random order, cut at ``max_trials``: reruns try the same trials."""
    grid: list[dict[str, float | int]] = [
        {"window": w, "lstm_units": u, "learning_rate": lr}
        for w, u, lr in itertools.product(windows, lstm_units, learning_rates)
    ]
    random.Random(seed).shuffle(grid)
    return grid[:max_trials]


def run_search(
    history: TrainingHistory,
    trials: Sequence[dict[str, float | int]],
    hyperparameters: Callable[..., ModelHyperparameters],
    origin_step: int,
    tracker: Any,
    experiment_id: str,
    log: Callable[[str], None] = lambda _line: None,
) -> pd.DataFrame:
    """Train and backtest each trial; ``tracker`` is the ``mlflow`` module (a nested run per trial).

    Returns one row per trial, best first (lowest median MASE over the horizons).
    """
    rows = []
    for number, overrides in enumerate(trials):
        hp = hyperparameters(**overrides)
        with tracker.start_run(experiment_id=experiment_id, run_name=f"trial-{number}", nested=True) as run:
            tracker.log_params(hp.as_params())
            model = history.fit(hp)
            metrics = backtest_metrics(backtest_against(history, model, None, hp, origin_step))
            tracker.log_metrics(metrics)
            score = metrics[f"backtest_{CHALLENGER}_{DECISION_METRIC}_h{DECISION_HORIZON}"]
            rows.append({**overrides, DECISION_METRIC: score, "coverage": model.validation_coverage,
                         "run_id": run.info.run_id})  # fmt: skip
            log(f"trial {number} {overrides}: {DECISION_METRIC} {score:.3f}")
    return pd.DataFrame(rows).sort_values(DECISION_METRIC, kind="stable").reset_index(drop=True)
