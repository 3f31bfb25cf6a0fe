"""A small hyperparameter search, run on demand as its own job; every trial is a nested MLflow run."""

import pandas as pd
from dagster import AssetExecutionContext, Output, asset
from pydantic import Field

from tauxcharge_assets.defs.model.assets import TrainingConfig
from tauxcharge_assets.defs.resources import ElasticsearchResource, MlflowResource, unavailable_as_failure
from tauxcharge_assets.model.promotion import DECISION_METRIC
from tauxcharge_assets.model.training import load_history, run_search, trial_grid
from tauxcharge_assets.reporting import metadata_table


class SearchConfig(TrainingConfig):
    """The training settings, plus the values each searched hyperparameter may take."""

    windows: list[int] = Field(default=[144, 288], description="Slots of history read by the network")
    lstm_units_grid: list[int] = Field(default=[32, 64])
    learning_rates: list[float] = Field(default=[1e-3, 3e-3])
    max_trials: int = Field(default=4, description="Trials drawn (without repetition) from the grid")
    epochs: int = 4


@asset(group_name="model", kinds={"tensorflow", "mlflow"})
def hyperparameter_search(
    context: AssetExecutionContext, config: SearchConfig, elasticsearch: ElasticsearchResource, mlflow: MlflowResource
) -> Output[pd.DataFrame]:
    """Each trial trains on the same history and is judged on the same backtest as a retrain would be."""
    import mlflow as tracker

    with unavailable_as_failure():
        history = load_history(
            elasticsearch.get_client(), elasticsearch.indices, config.training_days, config.train_until
        )
    trials = trial_grid(config.windows, config.lstm_units_grid, config.learning_rates, config.max_trials, config.seed)
    experiment_id = mlflow.ensure_experiment()
    tags = {"dagster_run_id": context.run.run_id, "dagster_asset": "hyperparameter_search"}
    with tracker.start_run(experiment_id=experiment_id, run_name="hyperparameter_search", tags=tags) as parent:
        table = run_search(
            history,
            trials,
            config.hyperparameters,
            config.backtest_origin_step,
            tracker,
            experiment_id,
            context.log.info,
        )
        best = table.iloc[0].to_dict()
        tracker.log_params({f"best_{key}": best[key] for key in ("window", "lstm_units", "learning_rate")})
        tracker.log_metric(f"best_{DECISION_METRIC}", float(best[DECISION_METRIC]))
    return Output(
        table,
        metadata={
            "trials": metadata_table(table),
            "best": f"window={best['window']}, lstm_units={best['lstm_units']}, learning_rate={best['learning_rate']}",
            f"best_{DECISION_METRIC}": float(best[DECISION_METRIC]),
            "mlflow_parent_run_id": parent.info.run_id,
        },
    )
