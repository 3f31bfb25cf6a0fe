"""A run-failure sensor: a failed tick or retrain (a failed blocking check is a failed check step) is sent to
the alert webhook, once per episode of failures of the same job and step (``alerts.failures``)."""

from __future__ import annotations

import os

import pandas as pd
from dagster import DagsterEventType, DefaultSensorStatus, RunFailureSensorContext, SkipReason, run_failure_sensor

from tauxcharge_assets.alerts.episodes import AlertLedger
from tauxcharge_assets.alerts.failures import FailedRun, alert_failed_run, check_failure
from tauxcharge_assets.defs.model.jobs import retrain_job
from tauxcharge_assets.defs.partitions import tick_window
from tauxcharge_assets.defs.resources import ALERT_WEBHOOK_VARIABLE, AlertWebhookResource, ElasticsearchResource
from tauxcharge_assets.defs.serving.jobs import tick_job
from tauxcharge_assets.settings import automation_enabled, to_utc


def failed_run(context: RunFailureSensorContext) -> FailedRun:
    """The job, partition, failed steps and their errors, from the run and its event log."""
    run = context.dagster_run
    partition_key = run.tags.get("dagster/partition")
    if partition_key:
        at = tick_window(partition_key).start
    else:
        record = context.instance.get_run_record_by_id(run.run_id)
        at = to_utc(record.create_timestamp) if record is not None else pd.Timestamp.now(tz="UTC")
    steps = {
        str(event.step_key): (event.event_specific_data.error.message if event.event_specific_data.error else "")
        or event.message
        or "failed"
        for event in context.get_step_failure_events()
    }
    # A failed blocking check fails its step with a generic error: say instead which check and its numbers.
    for record in context.instance.get_records_for_run(
        run_id=run.run_id, of_type=DagsterEventType.ASSET_CHECK_EVALUATION
    ).records:
        evaluation = record.event_log_entry.dagster_event.event_specific_data  # type: ignore[union-attr]
        step = next((key for key in steps if key.endswith(f"_{evaluation.check_name}")), None)
        if step is not None and not evaluation.passed:
            numbers = {key: value.value for key, value in evaluation.metadata.items()}
            steps[step] = check_failure(evaluation.check_name, evaluation.asset_key.to_user_string(), numbers)
    return FailedRun(run.job_name, run.run_id, partition_key, at, steps, context.failure_event.message or "failed")


@run_failure_sensor(
    name="run_failure_alerts",
    monitored_jobs=[tick_job, retrain_job],
    # On with the other automation, or as soon as a webhook is configured: setting the URL means "alert me".
    default_status=(
        DefaultSensorStatus.RUNNING
        if automation_enabled() or os.environ.get(ALERT_WEBHOOK_VARIABLE)
        else DefaultSensorStatus.STOPPED
    ),
    description="Sends a failed tick_job or retrain_job run (job, partition, failed steps, error) to the alert "
    "webhook, once per episode of failures of the same job and step.",
)
def run_failure_alerts(
    context: RunFailureSensorContext, elasticsearch: ElasticsearchResource, alerts: AlertWebhookResource
) -> SkipReason:
    if not alerts.enabled:
        return SkipReason(f"alerting is off: {ALERT_WEBHOOK_VARIABLE} is not set")
    run = failed_run(context)
    outcome = alert_failed_run(
        AlertLedger(elasticsearch.get_client(), elasticsearch.indices.alerts),
        run,
        alerts.send_text,
        pd.Timestamp.now(tz="UTC"),
        alerts.episode_gap,
    )
    return SkipReason(
        f"{run.job} run {run.run_id}: {len(outcome.sent)} failed step(s) alerted, "
        f"{outcome.already_sent} already alerted in their episode"
    )
