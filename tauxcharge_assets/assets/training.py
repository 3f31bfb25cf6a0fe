"""The global LSTM: retrained on demand (weekly by the sensor), tracked and registered in MLflow."""

import dataclasses

import pandas as pd
from dagster import AssetDep, AssetExecutionContext, Config, LastPartitionMapping, Output, asset
from pydantic import Field

from tauxcharge_assets import model as lstm
from tauxcharge_assets.cleaning import clean_series
from tauxcharge_assets.encoding import assign_name_ids
from tauxcharge_assets.es_store import fetch_raw_metrics
from tauxcharge_assets.registry import ModelHandle, log_and_register
from tauxcharge_assets.reporting import figure_markdown, loss_plot, markdown_table
from tauxcharge_assets.resources import ElasticsearchResource, MlflowResource
from tauxcharge_assets.settings import STEP_MINUTES, to_utc


class TrainingConfig(Config):
    training_days: float = Field(default=14.0, description="History the model learns from")
    train_until: str | None = Field(
        default=None,
        description="ISO timestamp the training data ends at; default: now, on the 5-minute grid",
    )
    epochs: int = 6
    lstm_units: int = 48
    dense_units: int = 64
    embedding_dim: int = 8
    learning_rate: float = 3e-3
    batch_size: int = 256
    sample_stride: int = Field(default=3, description="Take one training window every N slots")
    holdout_fraction: float = 0.2
    horizon: int = Field(default=12, description="Steps ahead forecast (12 = 1 h)")
    seed: int = 42

    def hyperparameters(self) -> lstm.ModelHyperparameters:
        names = {field.name for field in dataclasses.fields(lstm.ModelHyperparameters)}
        return lstm.ModelHyperparameters(**{k: v for k, v in self.model_dump().items() if k in names})


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
    """One model for all names, judged against the naive and seasonal-naive forecasts on a later holdout."""
    until = to_utc(config.train_until) if config.train_until else pd.Timestamp.now(tz="UTC")
    until = until.floor(f"{STEP_MINUTES}min")
    since = until - pd.Timedelta(days=config.training_days)
    client = elasticsearch.get_client()
    raw = fetch_raw_metrics(client, elasticsearch.indices.metrics, since, until, as_of=until)
    cleaned = clean_series(raw, since, until)
    name_ids, _ = assign_name_ids(client, elasticsearch.indices.names, cleaned.names)
    hp = config.hyperparameters()
    training = lstm.make_training_set(cleaned.values, cleaned.observed, name_ids, hp)
    vocabulary = max(name_ids.values(), default=0) + 1
    model, history = lstm.fit(training, hp, vocabulary)
    metrics = lstm.evaluate(model, training, hp)
    handle = log_and_register(
        model,
        hp,
        metrics,
        history,
        tracking_uri=mlflow.tracking_uri,
        experiment_name=mlflow.experiment_name,
        registered_model_name=mlflow.registered_model_name,
        artifact_location=mlflow.resolved_artifact_location(),
        tags={"dagster_run_id": context.run.run_id, "dagster_asset": "trained_model"},
        trained_through=until,
        extra_params={
            "names": len(name_ids),
            "vocabulary_size": vocabulary,
            "training_days": config.training_days,
        },
        figures={"loss": loss_plot(history)},
    )
    comparison = pd.DataFrame(
        [
            {
                "forecaster": label,
                "MAE h=1": metrics[f"mae_h1_{label}"],
                f"MAE h={hp.horizon}": metrics[f"mae_h{hp.horizon}_{label}"],
                "MAE mean": metrics[f"mae_mean_{label}"],
            }
            for label in ("lstm", "naive", "seasonal_naive")
        ]
    )
    return Output(
        handle,
        metadata={
            "model_uri": handle.model_uri,
            "mlflow_run_id": handle.run_id,
            "trained_through": handle.trained_through,
            "holdout_starts": training.holdout_cutoff.isoformat(),
            "names": len(name_ids),
            "training_windows": len(training.train_targets),
            "holdout_mae_vs_baselines": markdown_table(comparison),
            "beats_naive_h1": metrics["mae_h1_lstm"] < metrics["mae_h1_naive"],
            "loss_curve": figure_markdown(loss_plot(history)),
            **{key: float(value) for key, value in metrics.items()},
        },
    )
