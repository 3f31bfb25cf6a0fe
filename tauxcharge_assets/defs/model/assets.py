"""The global LSTM: retrained on demand (weekly by the sensor), backtested against the champion and the
baselines, tracked and registered in MLflow; ``champion_model`` moves the alias when the gate passes."""

import dataclasses

from dagster import AssetDep, AssetExecutionContext, Config, Failure, LastPartitionMapping, Output, asset
from pydantic import Field

from tauxcharge_assets.defs.resources import ElasticsearchResource, MlflowResource, unavailable_as_failure
from tauxcharge_assets.model.network import ModelHyperparameters
from tauxcharge_assets.model.registry import (
    ModelHandle,
)
from tauxcharge_assets.model.training import NoTrainingDataError, load_history, train_challenger
from tauxcharge_assets.reporting import backtest_plot, figure_markdown, loss_plot, metadata_table

_HP = ModelHyperparameters()  # every model default lives in the dataclass; the config only describes it


class TrainingConfig(Config):
    """What a retrain learns from and how; defaults are ``ModelHyperparameters``'s."""

    training_days: float = Field(default=14.0, description="History the model learns from")
    train_until: str | None = Field(
        default=None,
        description="ISO timestamp the training data ends at; default: now, on the 5-minute grid",
    )
    window: int = Field(default=_HP.window, description="Slots of history the network reads (a multiple of patch)")
    patch: int = Field(default=_HP.patch, description="Slots summarised per LSTM step (12 = one hour)")
    epochs: int = Field(default=_HP.epochs, description="At most; early stopping on the validation windows")
    early_stopping_patience: int = Field(default=_HP.early_stopping_patience, description="Epochs without progress")
    lstm_units: int = Field(default=_HP.lstm_units, description="LSTM width")
    dense_units: int = Field(default=_HP.dense_units, description="Width of the dense layer before the quantiles")
    embedding_dim: int = Field(default=_HP.embedding_dim, description="Size of each name's learned embedding")
    learning_rate: float = Field(default=_HP.learning_rate, description="Adam learning rate")
    batch_size: int = Field(default=_HP.batch_size, description="Training windows per gradient step")
    sample_stride: int = Field(default=_HP.sample_stride, description="Take one training window every N slots")
    max_training_windows: int = Field(
        default=_HP.max_training_windows, description="Subsample above this (bounds training time)"
    )
    holdout_fraction: float = Field(
        default=_HP.holdout_fraction, description="Latest share of the history: validation + backtest"
    )
    horizon: int = Field(default=_HP.horizon, description="Steps ahead forecast (12 = 1 h)")
    clip: float = Field(default=_HP.clip, description="Scaled inputs and targets are clipped to +- this")
    seed: int = Field(default=_HP.seed, description="Seed of the weights and the window sampling")
    backtest_origin_step: int = Field(default=6, description="A backtest forecast origin every N slots")

    def hyperparameters(self, **overrides: float | int) -> ModelHyperparameters:
        names = {field.name for field in dataclasses.fields(ModelHyperparameters)}
        values = {k: v for k, v in self.model_dump().items() if k in names}
        return ModelHyperparameters(**{**values, **overrides})


@asset(
    group_name="model",
    kinds={"tensorflow", "mlflow"},
    deps=[AssetDep("sequence_tensors", partition_mapping=LastPartitionMapping())],
)
def trained_model(
    context: AssetExecutionContext,
    config: TrainingConfig,
    elasticsearch: ElasticsearchResource,
    mlflow: MlflowResource,
) -> Output[ModelHandle]:
    """A challenger trained on the latest history, registered with its backtest against the champion."""
    try:
        with unavailable_as_failure():
            history = load_history(
                elasticsearch.get_client(), elasticsearch.indices, config.training_days, config.train_until
            )
    except NoTrainingDataError as error:
        raise Failure(str(error)) from None
    current = mlflow.champion_version()
    champion = mlflow.load_model(current) if current else None
    challenger = train_challenger(history, config.hyperparameters(), champion, current, config.backtest_origin_step)
    summary = challenger.summary
    handle = mlflow.log_and_register(
        challenger.model,
        challenger.metrics,
        tags={"dagster_run_id": context.run.run_id, "dagster_asset": "trained_model"},
        trained_through=history.until,
        extra_params={"names": len(history.name_ids), "vocabulary_size": history.vocabulary,
                      "training_days": config.training_days},
        figures={"loss": loss_plot(challenger.model.history), "backtest": backtest_plot(summary)},
        tables={"backtest_summary": summary, "backtest_per_name": challenger.result.frame},
        decision=challenger.decision,
    )  # fmt: skip
    context.log.info(f"version {handle.version}: {challenger.decision['reason']}")
    return Output(
        handle,
        metadata={
            "model_uri": handle.model_uri,
            "mlflow_run_id": handle.run_id,
            "trained_through": handle.trained_through,
            "names": len(history.name_ids),
            "epochs_run": len(challenger.model.history.get("loss", [])),
            "validation_coverage_80": challenger.model.validation_coverage,
            "backtest": metadata_table(summary),
            "backtest_plot": figure_markdown(backtest_plot(summary)),
            "promotion": challenger.decision["reason"],
            "loss_curve": figure_markdown(loss_plot(challenger.model.history)),
        },
    )


@asset(group_name="model", kinds={"mlflow"})
def champion_model(
    context: AssetExecutionContext, mlflow: MlflowResource, trained_model: ModelHandle
) -> Output[ModelHandle]:
    """Moves the ``champion`` alias to the new version; runs only when the gate check passed."""
    if not trained_model.decision.get("promote"):
        raise Failure(f"Version {trained_model.version} is not promoted: {trained_model.decision.get('reason')}")
    previous = mlflow.champion_version()
    mlflow.promote(trained_model.version)
    context.log.info(f"champion: version {previous} -> {trained_model.version}")
    return Output(
        trained_model,
        metadata={
            "champion_version": trained_model.version,
            "previous_champion": str(previous),
            "reason": trained_model.decision["reason"],
        },
    )
