"""The production setup, for real: the shipped ``dagster.yaml`` on a PostgreSQL server, and a remote
``mlflow server``, both started here. A retrain and a tick run through them."""

from __future__ import annotations

import os
import shutil
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pandas as pd
import pytest
from dagster import DagsterInstance, DagsterRunStatus, FilesystemIOManager, QueuedRunCoordinator, materialize

from tauxcharge_assets.cli.runner import QUIET
from tauxcharge_assets.data.simulator import SimulationSpec, simulate
from tauxcharge_assets.definitions import ALL_ASSETS, ALL_CHECKS, defs
from tauxcharge_assets.defs.model.jobs import MODEL_ASSETS
from tauxcharge_assets.defs.partitions import partition_key_ending_at
from tauxcharge_assets.defs.resources import (
    ELASTICSEARCH_HEAVY,
    AlertWebhookResource,
    ElasticsearchResource,
    MlflowResource,
)
from tauxcharge_assets.defs.serving.jobs import TICK_ASSETS
from tauxcharge_assets.elastic.bulk import bulk_write, scan_pit
from tauxcharge_assets_tests.services import Postgres, mlflow_server, postgres

ROOT = Path(__file__).resolve().parents[1]
SHIPPED = ROOT / "tauxcharge_assets" / "deploy" / "dagster.yaml"
END = pd.Timestamp.now(tz="UTC").floor("h") - pd.Timedelta(days=1)
TRAINING = {"training_days": 2.5, "epochs": 2, "lstm_units": 8, "dense_units": 8, "sample_stride": 12}


@dataclass
class Production:
    database: Postgres
    instance: DagsterInstance
    mlflow: MlflowResource
    mlflow_folder: Path
    es: ElasticsearchResource
    retrain: Any
    tick: Any
    champion: str


@pytest.fixture(scope="module")
def production(es_url: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Production]:
    folder = tmp_path_factory.mktemp("production")
    es = ElasticsearchResource(url=es_url, index_prefix=f"test-production-{uuid.uuid4().hex[:8]}")
    sim = simulate(SimulationSpec(n_names=4, days=3.5, end=END, seed=11, anomalies_per_name=0.0))
    bulk_write(es.get_client(), es.indices.metrics, list(sim.documents()))
    home = folder / "dagster_home"
    home.mkdir()
    shutil.copy(SHIPPED, home / "dagster.yaml")
    saved = dict(os.environ)
    try:
        with postgres() as database, mlflow_server(folder / "mlflow") as url:
            os.environ.update(database.env())
            instance = DagsterInstance.from_config(str(home))
            mlflow = MlflowResource(tracking_uri=url, registered_model_name=f"prod-{uuid.uuid4().hex[:6]}")
            resources = {
                "elasticsearch": es,
                "mlflow": mlflow,
                "alerts": AlertWebhookResource(),
                "io_manager": FilesystemIOManager(base_dir=str(folder / "storage")),
            }

            def run(selection: list, run_config: dict | None = None, **kwargs: Any) -> Any:
                return materialize(
                    [*ALL_ASSETS, *ALL_CHECKS],
                    selection=selection,
                    resources=resources,
                    instance=instance,
                    run_config={**QUIET, **(run_config or {})},
                    raise_on_error=False,
                    **kwargs,
                )

            config = {**TRAINING, "train_until": (END - pd.Timedelta(hours=2)).isoformat()}
            retrain = run(MODEL_ASSETS, {"ops": {"trained_model": {"config": config}}})
            version = str(retrain.output_for_node("trained_model").version)
            if mlflow.champion_version() != version:  # a toy model may lose the gate: the operator's override
                mlflow.promote(version)
            tick = run(TICK_ASSETS, partition_key=partition_key_ending_at(END))
            yield Production(database, instance, mlflow, folder / "mlflow", es, retrain, tick, version)
            instance.dispose()
    finally:
        os.environ.clear()
        os.environ.update(saved)
        es.get_client().indices.delete(index=f"{es.index_prefix}-*", allow_no_indices=True)


def test_a_retrain_and_a_tick_run_on_postgres_storage(production: Production) -> None:
    assert production.tick.success, production.tick.all_events[-1]
    runs = production.instance.get_runs()
    assert {run.run_id for run in runs} == {production.retrain.run_id, production.tick.run_id}
    assert all(run.status == DagsterRunStatus.SUCCESS for run in runs if run.run_id == production.tick.run_id)
    dump = production.database.dump()
    # Runs, their events and the schedule/sensor state are PostgreSQL tables, and the runs are rows in them.
    for table in ("runs", "event_logs", "instigators", "asset_keys"):
        assert f"CREATE TABLE public.{table} " in dump
    assert production.tick.run_id in dump and production.retrain.run_id in dump
    assert '"forecasts"' in dump  # the materialization events of the tick
    # The password is read from the environment, never stored: not in the database, not in dagster.yaml.
    assert production.database.password not in dump
    assert production.database.password not in SHIPPED.read_text()


def test_the_shipped_instance_queues_runs_and_limits_the_elasticsearch_heavy_ones(production: Production) -> None:
    coordinator = production.instance.run_coordinator
    assert isinstance(coordinator, QueuedRunCoordinator)
    queue = coordinator.get_run_queue_config()
    [(key, value)] = ELASTICSEARCH_HEAVY.items()
    assert queue.max_concurrent_runs == 8
    assert [(limit["key"], limit["limit"]) for limit in queue.tag_concurrency_limits] == [(key, 3)]
    jobs = {job.name: job for job in defs.resolve_all_job_defs() if not job.name.startswith("__")}
    assert {"tick_job", "retrain_job", "capacity_job"} <= set(jobs)
    assert all(job.tags.get(key) == value for job in jobs.values()), {name: job.tags for name, job in jobs.items()}


def test_a_remote_mlflow_server_holds_and_serves_the_champion(production: Production) -> None:
    assert production.mlflow.tracking_uri.startswith("http://127.0.0.1:")
    assert production.mlflow.champion_version() == production.champion
    # The artifacts went through the server (mlflow-artifacts:/), into the folder it was told to use.
    stored = [path for path in (production.mlflow_folder / "artifacts").rglob("*") if path.is_file()]
    assert stored and any(path.name.endswith((".npz", ".keras", ".json")) for path in stored), stored
    # The tick forecast with that version, loaded back through the server.
    client = production.es.get_client()
    client.indices.refresh(index=production.es.indices.forecasts)
    versions = {
        hit["_source"]["model_version"] for hit in scan_pit(client, production.es.indices.forecasts, {"match_all": {}})
    }
    assert versions == {production.champion}
