"""Retrain when no model is registered, or when the newest registered model is older than 7 days."""

import pandas as pd
from dagster import DefaultSensorStatus, RunRequest, SensorEvaluationContext, SensorResult, SkipReason, sensor

from tauxcharge_assets.defs.model.jobs import retrain_job
from tauxcharge_assets.defs.resources import MlflowResource
from tauxcharge_assets.settings import automation_enabled

MAX_MODEL_AGE = pd.Timedelta(days=7)


def retrain_decision(
    latest: dict | None, now: pd.Timestamp, max_age: pd.Timedelta = MAX_MODEL_AGE
) -> RunRequest | SkipReason:
    """One run per stale version (its run key), so a slow retrain is not requested twice."""
    if latest is None:
        return RunRequest(run_key="retrain-no-model", tags={"retrain_reason": "no registered model"})
    age = now - latest["created_at"]
    if age > max_age:
        return RunRequest(
            run_key=f"retrain-after-version-{latest['version']}",
            tags={"retrain_reason": f"version {latest['version']} is {age.days} days old"},
        )
    return SkipReason(f"model version {latest['version']} is {age} old; retrain after {max_age}")


@sensor(
    job=retrain_job,
    minimum_interval_seconds=3600,
    default_status=DefaultSensorStatus.RUNNING if automation_enabled() else DefaultSensorStatus.STOPPED,
    description="Requests retrain_job when the registered model is missing or older than 7 days.",
)
def retrain_sensor(context: SensorEvaluationContext, mlflow: MlflowResource) -> SensorResult:
    latest = mlflow.latest_version()
    decision = retrain_decision(latest, pd.Timestamp.now(tz="UTC"))
    if isinstance(decision, SkipReason):
        return SensorResult(skip_reason=decision)
    return SensorResult(run_requests=[decision])
