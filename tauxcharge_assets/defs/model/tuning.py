"""A small hyperparameter search, run on demand as its own job; every trial is a nested MLflow run."""

import itertools
import random

import pandas as pd
from dagster import AssetExecutionContext, Output, asset
from pydantic import Field

from tauxcharge_assets.defs.model.assets import TrainingConfig, backtest_against, backtest_metrics, load_history
from tauxcharge_assets.defs.resources import ElasticsearchResource, MlflowResource
from tauxcharge_assets.model.forecaster import series_from_frame, train_forecast_model
from tauxcharge_assets.model.promotion import CHALLENGER, DECISION_HORIZON, DECISION_METRIC
from tauxcharge_assets.reporting import metadata_table


class SearchConfig(TrainingConfig):
    """The training settings, plus the values each searched hyperparameter may take."""

    windows: list[int] = Field(default=[144, 288], description="Slots of history read by the network")
    lstm_units_grid: list[int] = Field(default=[32, 64])
    learning_rates: list[float] = Field(default=[1e-3, 3e-3])
    max_trials: int = Field(default=4, description="Trials drawn (without repetition) from the grid")
    epochs: int = 4


def trial_grid(config: SearchConfig) -> list[dict[str, float | int]]:
    """The grid in a seeded random order, cut at ``max_trials``: reruns try the same trials."""
    grid = [
        {"window": w, "lstm_units": u, "learning_rate": lr}
        for w, u, lr in itertools.product(config.windows, config.lstm_units_grid, config.learning_rates)
    ]
    random.Random(config.seed).shuffle(grid)
    return grid[: config.max_trials]


@asset(group_name="model", kinds={"tensorflow", "mlflow"})
def hyperparameter_search(
    context: AssetExecutionContext, config: SearchConfig, elasticsearch: ElasticsearchResource, mlflow: MlflowResource
) -> Output[pd.DataFrame]:
    """Each trial trains on the same history and is judged on the same backtest as a retrain would be."""
    import mlflow as mlflow_client

    history = load_history(elasticsearch, config.training_days, config.train_until)
    vocabulary = max(history.name_ids.values(), default=0) + 1
    observed = history.cleaned.values.where(history.cleaned.observed)
    experiment_id = mlflow.ensure_experiment()
    rows = []
    with mlflow_client.start_run(
        experiment_id=experiment_id,
        run_name="hyperparameter_search",
        tags={"dagster_run_id": context.run.run_id, "dagster_asset": "hyperparameter_search"},
    ) as parent:
        for number, overrides in enumerate(trial_grid(config)):
            hp = config.hyperparameters(**overrides)
            with mlflow_client.start_run(experiment_id=experiment_id, run_name=f"trial-{number}", nested=True) as run:
                mlflow_client.log_params(hp.as_params())
                model = train_forecast_model(series_from_frame(observed, history.name_ids), hp, vocabulary)
                result = backtest_against(history, model, None, hp, config.backtest_origin_step)
                metrics = backtest_metrics(result)
                mlflow_client.log_metrics(metrics)
                score = metrics[f"backtest_{CHALLENGER}_{DECISION_METRIC}_h{DECISION_HORIZON}"]
                rows.append(
                    {
                        **overrides,
                        DECISION_METRIC: score,
                        "coverage": model.validation_coverage,
                        "run_id": run.info.run_id,
                    }
                )
                context.log.info(f"trial {number} {overrides}: {DECISION_METRIC} {score:.3f}")
        table = pd.DataFrame(rows).sort_values(DECISION_METRIC, kind="stable").reset_index(drop=True)
        best = table.iloc[0].to_dict()
        mlflow_client.log_params({f"best_{key}": best[key] for key in ("window", "lstm_units", "learning_rate")})
        mlflow_client.log_metric(f"best_{DECISION_METRIC}", float(best[DECISION_METRIC]))
    return Output(
        table,
        metadata={
            "trials": metadata_table(table),
            "best": f"window={best['window']}, lstm_units={best['lstm_units']}, learning_rate={best['learning_rate']}",
            f"best_{DECISION_METRIC}": float(best[DECISION_METRIC]),
            "mlflow_parent_run_id": parent.info.run_id,
        },
    )
