"""Tick assets that forecast with the trained model and report anomalies; both write back to ES."""

import numpy as np
import pandas as pd
from dagster import AssetExecutionContext, Config, Output, asset

from tauxcharge_assets import model as lstm
from tauxcharge_assets.anomalies import (
    AnomalyThresholds,
    anomaly_documents,
    detect_anomalies,
    forecast_documents,
    forecast_frame,
    usual_variation,
)
from tauxcharge_assets.cleaning import CleanedSeries
from tauxcharge_assets.es_store import bulk_write, fetch_forecasts
from tauxcharge_assets.partitions import tick_partitions, tick_window
from tauxcharge_assets.registry import ModelHandle, load_model
from tauxcharge_assets.reporting import figure_markdown, forecast_plot, markdown_table
from tauxcharge_assets.resources import ElasticsearchResource, MlflowResource
from tauxcharge_assets.sequences import SequenceTensors
from tauxcharge_assets.settings import STEP_MINUTES


@asset(partitions_def=tick_partitions, group_name="serving", kinds={"tensorflow", "elasticsearch"})
def forecasts(
    context: AssetExecutionContext,
    elasticsearch: ElasticsearchResource,
    mlflow: MlflowResource,
    sequence_tensors: SequenceTensors,
    trained_model: ModelHandle,
) -> Output[pd.DataFrame]:
    """The next hour (t + 5 min first) of every name, written to the forecasts index under stable ids."""
    hp = trained_model.hp
    model = load_model(mlflow.tracking_uri, trained_model.model_uri)
    first = sequence_tensors.timestamps[0]
    batch = lstm.WindowBatch(
        values=sequence_tensors.values,
        mask=sequence_tensors.mask,
        name_ids=sequence_tensors.name_ids,
        first_slot_minute=np.full(len(sequence_tensors.names), first.hour * 60 + first.minute),
    )
    predictions = lstm.predict(model, batch, hp)
    frame = forecast_frame(
        sequence_tensors, predictions, trained_model.model_name, trained_model.version, context.partition_key
    )
    finite = np.isfinite(frame["value"].to_numpy())
    written = bulk_write(elasticsearch.get_client(), elasticsearch.indices.forecasts, forecast_documents(frame[finite]))
    next_values = frame[frame["horizon_steps"] == 1][["name", "target_timestamp", "value"]]
    history = pd.DataFrame(sequence_tensors.values.T, index=sequence_tensors.timestamps, columns=sequence_tensors.names)
    return Output(
        frame,
        metadata={
            "names_forecast": len(sequence_tensors.names),
            "names_without_data": len(sequence_tensors.skipped_names),
            "documents_written": written,
            "non_finite_forecasts": int((~finite).sum()),
            "model": trained_model.model_uri,
            "issued_at": sequence_tensors.next_timestamp.isoformat(),
            "next_values": markdown_table(next_values),
            "plot": figure_markdown(forecast_plot(history, frame, sequence_tensors.names[:4])),
        },
    )


class AnomalyConfig(Config):
    warning_z: float = 4.0
    critical_z: float = 7.0
    min_scale: float = 0.5
    evaluated_slots: int = 1


@asset(partitions_def=tick_partitions, group_name="serving", kinds={"pandas", "elasticsearch"})
def anomaly_report(
    context: AssetExecutionContext,
    config: AnomalyConfig,
    elasticsearch: ElasticsearchResource,
    cleaned_series: CleanedSeries,
    sequence_tensors: SequenceTensors,
    forecasts: pd.DataFrame,
) -> Output[pd.DataFrame]:
    """This tick's newest actual values against the forecasts earlier ticks made for them."""
    window = tick_window(context.partition_key)
    since = window.end - pd.Timedelta(minutes=STEP_MINUTES * config.evaluated_slots)
    observed = cleaned_series.values.where(cleaned_series.observed).loc[since:]
    actuals = observed.rename_axis(index="timestamp", columns="name").stack().rename("actual").reset_index()
    client = elasticsearch.get_client()
    earlier = fetch_forecasts(client, elasticsearch.indices.forecasts, since, window.end, issued_by=window.as_of)
    scale = pd.Series(
        usual_variation(sequence_tensors.values, sequence_tensors.mask, config.min_scale),
        index=sequence_tensors.names,
    )
    thresholds = AnomalyThresholds(config.warning_z, config.critical_z, config.min_scale)
    scored = detect_anomalies(
        actuals, earlier[["name", "target_timestamp", "value", "model_version"]], scale, thresholds
    )
    flagged = scored[scored["is_anomaly"]]
    written = bulk_write(
        client,
        elasticsearch.indices.anomalies,
        anomaly_documents(flagged, context.partition_key, window.end),
    )
    columns = ["name", "timestamp", "actual", "forecast", "z_score", "score", "severity", "reason"]
    return Output(
        scored,
        metadata={
            "values_compared": len(scored),
            "actual_values_without_forecast": len(actuals) - len(scored),
            "anomalies": len(flagged),
            "critical": int((flagged["severity"] == "critical").sum()),
            "documents_written": written,
            "forecasts_issued_this_tick": len(forecasts),
            "anomaly_table": markdown_table(flagged[columns]),
        },
    )
