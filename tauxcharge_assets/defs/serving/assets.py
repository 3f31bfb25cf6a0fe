"""Tick assets that forecast with the champion model and report anomalies; both write back to ES."""

import dataclasses

import pandas as pd
from dagster import AssetExecutionContext, Config, Failure, Output, asset
from pydantic import Field

from tauxcharge_assets.data.cleaning import CleanedSeries
from tauxcharge_assets.data.sequences import SequenceTensors
from tauxcharge_assets.defs.partitions import tick_partitions, tick_window
from tauxcharge_assets.defs.resources import ElasticsearchResource, MlflowResource
from tauxcharge_assets.detection.report import anomaly_documents, score_recent_slots
from tauxcharge_assets.detection.scoring import ScoringConfig
from tauxcharge_assets.elastic.bulk import bulk_write, delete_documents, scan_pages
from tauxcharge_assets.elastic.queries import fetch_forecasts
from tauxcharge_assets.model.forecast_documents import forecast_documents, forecast_frame, written_forecasts
from tauxcharge_assets.reporting import figure_markdown, forecast_plot, metadata_table
from tauxcharge_assets.settings import STEP_MINUTES
from tauxcharge_assets.window import kept_forecasts


@asset(
    partitions_def=tick_partitions,
    group_name="serving",
    kinds={"tensorflow", "elasticsearch"},
    deps=["champion_model"],
)
def forecasts(
    context: AssetExecutionContext,
    elasticsearch: ElasticsearchResource,
    mlflow: MlflowResource,
    sequence_tensors: SequenceTensors,
) -> Output[pd.DataFrame]:
    """The next hour (t + 5 min first) of every name with its 80 % interval, from the current champion."""
    version = mlflow.champion_version()
    if version is None:
        raise Failure(
            f"No champion version of {mlflow.registered_model_name!r} in {mlflow.tracking_uri}: "
            "run retrain_job (trained_model + champion_model) first."
        )
    model = mlflow.load_model(version)
    batch = model.batch_for(
        sequence_tensors.names,
        sequence_tensors.name_ids,
        sequence_tensors.values,
        sequence_tensors.mask,
        sequence_tensors.next_timestamp,
    )
    frame = forecast_frame(
        sequence_tensors, model.predict_quantiles(batch), mlflow.registered_model_name, version, context.partition_key
    )
    finite = written_forecasts(frame)
    written = bulk_write(elasticsearch.get_client(), elasticsearch.indices.forecasts, forecast_documents(finite))
    next_values = frame[frame["horizon_steps"] == 1][["name", "target_timestamp", "lower", "value", "upper"]]
    history = pd.DataFrame(sequence_tensors.values.T, index=sequence_tensors.timestamps, columns=sequence_tensors.names)
    return Output(
        frame,
        metadata={
            "names_forecast": len(sequence_tensors.names),
            "names_without_data": len(sequence_tensors.skipped_names),
            "documents_written": written,
            "non_finite_forecasts": len(frame) - len(finite),
            "model": f"models:/{mlflow.registered_model_name}/{version} (champion)",
            "issued_at": sequence_tensors.next_timestamp.isoformat(),
            "next_values": metadata_table(next_values),
            "plot": figure_markdown(forecast_plot(history, frame, sequence_tensors.names[:4])),
        },
    )


_SCORING = ScoringConfig()  # the detector's defaults live in its dataclass


class AnomalyConfig(Config):
    """Thresholds and windows of the anomaly score (see ``scoring.score_series``); configuration, not code."""

    warning_score: float = Field(
        default=_SCORING.warning_score, description="0.5 = as unusual as the name's record of the last day"
    )
    critical_score: float = Field(
        default=_SCORING.critical_score, description="0.8 = four times the name's record of the last day"
    )
    level_window: int = Field(
        default=_SCORING.level_window, description="Recent slots averaged for the level-shift evidence"
    )
    baseline_window: int = Field(
        default=_SCORING.baseline_window, description="Slots forming the usual level and variability"
    )
    record_window: int = Field(
        default=_SCORING.record_window, description="Each evidence is divided by its maximum over these slots"
    )
    alarm_window: int = Field(
        default=_SCORING.alarm_window, description="A slot must beat the scores of these slots: one alarm per episode"
    )
    min_history: int = Field(
        default=_SCORING.min_history, description="Slots of evidence needed before a record counts"
    )
    forecast_lookback_slots: int = Field(
        default=36,
        description="Slots of one-step forecasts read back from ES for the forecast evidence (cost: slots x names "
        "documents per tick); the value evidence uses the whole 24 h window",
    )
    evaluated_slots: int = Field(default=1, description="Newest slots scored and reported by each tick")
    incremental: bool = Field(
        default=True,
        description="Start from the one-step forecasts the previous tick kept (see forecast_window) instead of "
        "reading them back from ES; the result is the same",
    )

    def scoring(self) -> ScoringConfig:
        fields = {field.name for field in dataclasses.fields(ScoringConfig)}
        return ScoringConfig(**{k: v for k, v in self.model_dump().items() if k in fields})


@asset(partitions_def=tick_partitions, group_name="serving", kinds={"pandas", "elasticsearch"})
def anomaly_report(
    context: AssetExecutionContext,
    config: AnomalyConfig,
    elasticsearch: ElasticsearchResource,
    cleaned_series: CleanedSeries,
    forecasts: pd.DataFrame,
) -> Output[pd.DataFrame]:
    """This tick's newest actual values against the forecasts made for them one step before."""
    window = tick_window(context.partition_key)
    actuals = cleaned_series.values.where(cleaned_series.observed)
    lookback = max(config.forecast_lookback_slots, config.evaluated_slots)
    since = window.end - pd.Timedelta(minutes=STEP_MINUTES * lookback)
    client = elasticsearch.get_client()
    store = kept_forecasts.store_for(elasticsearch.indices.forecasts)
    kept = store.load(window.end) if config.incremental else None
    if kept is not None and not kept.covers(since):
        kept = None  # kept for a shorter lookback than this tick's: read them all back once
    if kept is None:
        earlier = fetch_forecasts(client, elasticsearch.indices.forecasts, since, window.end, issued_by=window.as_of)
    else:
        earlier = kept.between(since, window.end)
    scored = score_recent_slots(actuals, earlier, config.scoring(), config.evaluated_slots)
    step = pd.Timedelta(minutes=STEP_MINUTES)
    store.save(kept_forecasts.carry_forward(earlier, written_forecasts(forecasts), since + step, window.end + step))
    flagged = scored.loc[scored["is_anomaly"].astype(bool)]
    documents = list(anomaly_documents(flagged, context.partition_key, window.end))
    written = bulk_write(client, elasticsearch.indices.anomalies, documents)
    # A rerun (a backfill after a detector or model change) must not leave what it no longer finds.
    earlier_ids = {  # ids only: no _source, no doc values
        hit["_id"]
        for page in scan_pages(
            client,
            elasticsearch.indices.anomalies,
            {"term": {"partition_key": context.partition_key}},
            with_ids=True,
            docvalue_fields=[],
        )
        for hit in page
    }
    removed = delete_documents(client, elasticsearch.indices.anomalies, earlier_ids - {i for i, _ in documents})
    columns = ["name", "timestamp", "actual", "lower", "forecast", "upper", "evidence", "score", "severity", "reason"]
    return Output(
        scored,
        metadata={
            "values_compared": len(scored),
            "values_without_forecast": int(scored["forecast"].isna().sum()),
            "anomalies": len(flagged),
            "critical": int((flagged["severity"] == "critical").sum()),
            "documents_written": written,
            "documents_no_longer_found_removed": removed,
            "forecasts_issued_this_tick": len(forecasts),
            "earlier_forecasts_from": "elasticsearch" if kept is None else "the previous tick (forecast_window)",
            "earlier_forecasts": len(earlier),
            "thresholds": f"warning >= {config.warning_score}, critical >= {config.critical_score}",
            "anomaly_table": metadata_table(flagged[columns]),
        },
    )
