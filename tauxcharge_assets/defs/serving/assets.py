"""Tick assets that forecast with the champion model and report anomalies; both write back to ES."""

import dataclasses

import pandas as pd
from dagster import AssetExecutionContext, AssetIn, Config, Failure, Output
from elasticsearch import Elasticsearch
from pydantic import Field

from tauxcharge_assets.alerts.anomalies import alert_critical_anomalies
from tauxcharge_assets.alerts.episodes import AlertLedger
from tauxcharge_assets.alerts.webhook import AlertDeliveryError
from tauxcharge_assets.data.cleaning import CleanedSeries
from tauxcharge_assets.data.sequences import SequenceTensors
from tauxcharge_assets.defs.partitions import tick_window
from tauxcharge_assets.defs.ranges import for_each_partition, one_or_range, tick_asset
from tauxcharge_assets.defs.resources import (
    ALERT_WEBHOOK_VARIABLE,
    AlertWebhookResource,
    ElasticsearchResource,
    MlflowResource,
    unavailable_as_failure,
)
from tauxcharge_assets.detection.detector import DetectorConfig
from tauxcharge_assets.detection.report import report_tick
from tauxcharge_assets.elastic.bulk import bulk_write
from tauxcharge_assets.model.forecast_documents import forecast_documents, forecast_frame, written_forecasts
from tauxcharge_assets.model.forecaster import NAIVE, ForecastModel
from tauxcharge_assets.model.registry import ModelArtifactError
from tauxcharge_assets.reporting import figure_markdown, forecast_plot, metadata_table


class ForecastConfig(Config):
    plot_every_ticks: int = Field(
        default=12,
        ge=1,
        description="The forecast plot (0.2 s) is drawn for the partitions whose window ends at a minute that is a "
        "multiple of 5 x this (12: the top of each hour), and for the newest partition of a range run",
    )


@tick_asset(
    group_name="serving",
    kinds={"tensorflow", "elasticsearch"},
    deps=["champion_model"],
    ins={"sequence_tensors": AssetIn(dagster_type=one_or_range(SequenceTensors))},
)
def forecasts(
    context: AssetExecutionContext,
    config: ForecastConfig,
    elasticsearch: ElasticsearchResource,
    mlflow: MlflowResource,
    sequence_tensors: SequenceTensors,
) -> Output:
    """The next hour (t + 5 min first) of every name with its 80 % interval, from the current champion.

    Without a usable champion the step fails at once (no retry: waiting does not train a model) with one
    message saying what to run; a naive forecast in its place would feed the detector's learned state
    with another forecaster's errors, silently. Names with a sparse window get the flagged naive fallback.
    """
    with unavailable_as_failure():
        model, version = _champion(mlflow)
        client = elasticsearch.get_client()

        def forecast(key: str, last: bool, sequences: SequenceTensors) -> Output[pd.DataFrame]:
            newest_of_range = last and len(context.partition_keys) > 1
            plot = newest_of_range or tick_window(key).end.minute // 5 % config.plot_every_ticks == 0
            index = elasticsearch.indices.forecasts
            return _forecast(key, model, version, mlflow, client, index, sequences, plot, refresh=last)

        return for_each_partition(context, forecast, sequence_tensors, totals=("documents_written",))


def _forecast(
    partition_key: str,
    model: ForecastModel,
    version: str,
    mlflow: MlflowResource,
    client: Elasticsearch,
    index: str,
    sequence_tensors: SequenceTensors,
    plot: bool,
    refresh: bool = True,
) -> Output[pd.DataFrame]:
    """One partition's forecasts; a range refreshes the index once, after its last partition (~0.03 s each)."""
    quantiles, methods = model.forecast_tick(
        sequence_tensors.names,
        sequence_tensors.name_ids,
        sequence_tensors.values,
        sequence_tensors.mask,
        sequence_tensors.next_timestamp,
    )
    frame = forecast_frame(sequence_tensors, quantiles, mlflow.registered_model_name, version, partition_key, methods)
    finite = written_forecasts(frame)
    written = bulk_write(client, index, forecast_documents(finite), refresh=refresh)
    next_values = frame[frame["horizon_steps"] == 1][["name", "target_timestamp", "lower", "value", "upper"]]
    metadata: dict[str, object] = {
        "names_forecast": len(sequence_tensors.names),
        "names_without_data": len(sequence_tensors.skipped_names),
        "names_naive_fallback": int((methods == NAIVE).sum()),
        "names_unseen_by_model": model.unseen_count(sequence_tensors.names),
        "documents_written": written,
        "non_finite_forecasts": len(frame) - len(finite),
        "model": f"models:/{mlflow.registered_model_name}/{version} (champion)",
        "issued_at": sequence_tensors.next_timestamp.isoformat(),
        "next_values": metadata_table(next_values),
    }
    if plot:
        history = pd.DataFrame(
            sequence_tensors.values.T, index=sequence_tensors.timestamps, columns=sequence_tensors.names
        )
        metadata["plot"] = figure_markdown(forecast_plot(history, frame, sequence_tensors.names[:4]))
    return Output(frame, metadata=metadata)


def _champion(mlflow: MlflowResource) -> tuple[ForecastModel, str]:
    """The champion model and its version, or a ``Failure`` (not retried) that says what to do."""
    version = mlflow.champion_version()
    if version is None:
        latest = mlflow.latest_version()
        todo = (
            f"promote a registered version (`python -m tauxcharge_assets promote --version {latest['version']}`, "
            "the newest) or run retrain_job (trained_model + champion_model)"
            if latest
            else "run retrain_job (trained_model + champion_model) first"
        )
        raise Failure(
            f"No champion version of {mlflow.registered_model_name!r} in {mlflow.tracking_uri}: {todo}.",
            allow_retries=False,
        )
    try:
        return mlflow.load_model(version), version
    except ModelArtifactError as error:
        raise Failure(str(error), allow_retries=False) from None


_DETECTOR = DetectorConfig()  # the detector's defaults live in its dataclass


class AnomalyConfig(Config):
    """Thresholds of the anomaly score (see ``detection.detector``); configuration, not code. The defaults
    are the thresholds evaluated on NAB (BENCHMARKS.md)."""

    warning_score: float = Field(
        default=_DETECTOR.warning_score, description="0.5 = the recent forecast errors are a 1-in-100,000 event"
    )
    critical_score: float = Field(
        default=_DETECTOR.critical_score, description="0.6 = a 1-in-a-million event; 1.0 = a new 30-day record"
    )
    range_tolerance: float = Field(
        default=_DETECTOR.range_tolerance, description="A value beyond the 30-day range by this share of it is a record"
    )
    forecast_lookback_slots: int = Field(
        default=36,
        description="Slots of one-step forecasts kept between ticks (the detector replays at most 12 of them "
        "from its hourly checkpoint)",
    )
    evaluated_slots: int = Field(default=1, ge=1, description="Newest slots scored and reported by each tick")
    incremental: bool = Field(
        default=True,
        description="Start from the one-step forecasts the previous tick kept (see window.kept_forecasts) instead of "
        "reading them back from ES; the result is the same",
    )

    def detector(self) -> DetectorConfig:
        return dataclasses.replace(
            _DETECTOR,
            warning_score=self.warning_score,
            critical_score=self.critical_score,
            range_tolerance=self.range_tolerance,
        )


@tick_asset(
    group_name="serving",
    kinds={"pandas", "elasticsearch"},
    ins={
        "cleaned_series": AssetIn(dagster_type=one_or_range(CleanedSeries)),
        "forecasts": AssetIn(dagster_type=one_or_range(pd.DataFrame)),
    },
)
def anomaly_report(
    context: AssetExecutionContext,
    config: AnomalyConfig,
    elasticsearch: ElasticsearchResource,
    alerts: AlertWebhookResource,
    cleaned_series: CleanedSeries,
    forecasts: pd.DataFrame,
) -> Output:
    """This tick's newest actual values scored by the detector against the forecasts made for them; the
    critical ones that start an episode go to the alert webhook."""
    with unavailable_as_failure():
        client = elasticsearch.get_client()

        def report(key: str, last: bool, cleaned: CleanedSeries, issued: pd.DataFrame) -> Output[pd.DataFrame]:
            return _report(key, config, client, elasticsearch, alerts, cleaned, issued, refresh=last)

        return for_each_partition(context, report, cleaned_series, forecasts, totals=("anomalies", "critical"))


def _report(
    partition_key: str,
    config: AnomalyConfig,
    client: Elasticsearch,
    elasticsearch: ElasticsearchResource,
    alerts: AlertWebhookResource,
    cleaned_series: CleanedSeries,
    forecasts: pd.DataFrame,
    refresh: bool = True,
) -> Output[pd.DataFrame]:
    window = tick_window(partition_key)
    report = report_tick(
        client,
        elasticsearch.indices,
        partition_key,
        window.end,
        window.as_of,
        cleaned_series.values.where(cleaned_series.observed),
        written_forecasts(forecasts),
        config.detector(),
        config.evaluated_slots,
        config.forecast_lookback_slots,
        config.incremental,
        cleaned_series.shard,
        refresh,
    )
    alerted = _alert_critical(alerts, client, elasticsearch, report.scores.scored, partition_key)
    return Output(
        report.scores.scored,
        metadata={**report.metadata(), "forecasts_issued_this_tick": len(forecasts), **alerted},
    )


def _alert_critical(
    alerts: AlertWebhookResource,
    client: Elasticsearch,
    elasticsearch: ElasticsearchResource,
    scored: pd.DataFrame,
    partition_key: str,
) -> dict[str, object]:
    """Alert metadata; a message that cannot be delivered fails the step (its claims released), so the
    step's retry sends it: the anomalies themselves are already written."""
    if not alerts.enabled:
        return {"alerts": f"off: {ALERT_WEBHOOK_VARIABLE} is not set"}
    try:
        outcome = alert_critical_anomalies(
            AlertLedger(client, elasticsearch.indices.alerts),
            scored,
            partition_key,
            elasticsearch.indices.anomalies,
            alerts.send_text,
            pd.Timestamp.now(tz="UTC"),
            alerts.anomaly_max_age,
            alerts.episode_gap,
        )
    except AlertDeliveryError as error:
        raise Failure(description=f"The anomalies are written, but their alert was not delivered: {error}") from None
    return {"alerts": "on", **outcome.metadata()}
