import os
import subprocess
import sys

import pandas as pd
from dagster import AssetKey, Definitions, EnvVar

from tauxcharge_assets.defs.model.sensors import MAX_MODEL_AGE, retrain_decision
from tauxcharge_assets.defs.partitions import partitions_start, tick_partitions
from tauxcharge_assets.defs.resources import elasticsearch_from_env


def test_definitions_load_and_validate() -> None:
    from tauxcharge_assets.definitions import defs

    Definitions.validate_loadable(defs)
    keys = {spec.key for spec in defs.resolve_all_asset_specs()}
    assert keys == {
        AssetKey(name)
        for name in (
            "raw_es_extract",
            "cleaned_series",
            "quarantined_documents",
            "encoded_names",
            "sequence_tensors",
            "trained_model",
            "champion_model",
            "hyperparameter_search",
            "forecasts",
            "anomaly_report",
            "capacity_forecast",
        )
    }
    graph = defs.resolve_asset_graph()
    assert graph.get(AssetKey("forecasts")).parent_keys == {AssetKey("sequence_tensors"), AssetKey("champion_model")}
    assert graph.get(AssetKey("champion_model")).parent_keys == {AssetKey("trained_model")}
    assert AssetKey("sequence_tensors") in graph.get(AssetKey("trained_model")).parent_keys
    checks = {key.name for key in graph.asset_check_keys}
    assert {
        "raw_es_extract_is_fresh",
        "cleaned_series_is_complete",
        "forecasts_are_finite",
        "challenger_beats_champion",
    } <= checks
    assert defs.resolve_job_def("hyperparameter_search_job") is not None
    tick = defs.resolve_job_def("tick_job")
    assert tick.partitions_def == tick_partitions
    assert defs.resolve_schedule_def("tick_every_5_minutes").cron_schedule == "*/5 * * * *"
    assert defs.resolve_sensor_def("retrain_sensor").job_name == "retrain_job"


def test_partitions_stay_under_dagsters_advice() -> None:
    start = partitions_start(pd.Timestamp("2026-11-23 18:00", tz="UTC"))
    assert start == pd.Timestamp("2026-08-01", tz="UTC")
    worst_case = (pd.Timestamp("2026-11-30 23:55", tz="UTC") - start) / pd.Timedelta(minutes=5)
    assert worst_case < 100_000


def test_secrets_come_from_the_environment(monkeypatch) -> None:
    monkeypatch.setenv("TAUXCHARGE_ES_URL", "http://127.0.0.1:9201")
    monkeypatch.setenv("TAUXCHARGE_ES_API_KEY", "c2VjcmV0")
    resource = elasticsearch_from_env()
    assert isinstance(resource.api_key, EnvVar) and resource.api_key.env_var_name == "TAUXCHARGE_ES_API_KEY"
    assert "c2VjcmV0" not in repr(resource)


def test_retrain_decision_by_model_age() -> None:
    now = pd.Timestamp("2026-11-23", tz="UTC")
    fresh = {"version": "3", "created_at": now - pd.Timedelta(days=2)}
    stale = {"version": "3", "created_at": now - MAX_MODEL_AGE - pd.Timedelta(hours=1)}
    assert retrain_decision(fresh, now).__class__.__name__ == "SkipReason"
    assert retrain_decision(stale, now).run_key == "retrain-after-version-3"
    assert retrain_decision(None, now).run_key == "retrain-no-model"


def test_cli_reports_the_local_server(es_url: str) -> None:
    port = es_url.rsplit(":", 1)[1]
    out = subprocess.run(
        [sys.executable, "-m", "tauxcharge_assets", "es", "status", "--port", port],
        capture_output=True,
        text=True,
        check=True,
        env={**os.environ},
    ).stdout
    assert '"status": "green"' in out or '"status": "yellow"' in out
