"""README promises about the model registry, secrets, TensorFlow-free ticks and the command line.

One module fixture loads simulated metrics into fresh indices, runs every Dagster run of the module with
an Elasticsearch API key (a random secret in ``TAUXCHARGE_ES_API_KEY``, passed as ``EnvVar``), and
trains two versions into its own MLflow store (under the registered name the code location uses):

* the first, made champion by hand when the toy model loses to the baselines (operator override);
* the second with the backtest rigged so every rival loses: the gate passes and ``champion_model``
  must move the alias by itself.
"""

from __future__ import annotations

import dataclasses
import json
import os
import subprocess
import sys
import textwrap
import urllib.parse
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest
from dagster import AssetKey, DagsterInstance, EnvVar, FilesystemIOManager, materialize, serialize_value

from tauxcharge_assets.cli.runner import QUIET, RANGE_END_TAG, RANGE_START_TAG
from tauxcharge_assets.data.simulator import SimulationSpec, simulate
from tauxcharge_assets.definitions import ALL_ASSETS, ALL_CHECKS
from tauxcharge_assets.defs import resources as resources_module
from tauxcharge_assets.defs.model.jobs import MODEL_ASSETS
from tauxcharge_assets.defs.partitions import partition_key_ending_at
from tauxcharge_assets.defs.resources import AlertWebhookResource, ElasticsearchResource, MlflowResource
from tauxcharge_assets.defs.serving.jobs import TICK_ASSETS
from tauxcharge_assets.elastic.bulk import bulk_write
from tauxcharge_assets.elastic.queries import count_documents
from tauxcharge_assets.model import training
from tauxcharge_assets.model.promotion import CHALLENGER, DECISION_METRIC
from tauxcharge_assets.model.registry import ModelHandle
from tauxcharge_assets_tests.test_promises_checks import step_outcomes

STEP = pd.Timedelta(minutes=5)
END = pd.Timestamp.now(tz="UTC").floor("h") - pd.Timedelta(days=1)
NAMES = 5
TRAINING = {"training_days": 2.5, "epochs": 2, "lstm_units": 8, "dense_units": 8, "sample_stride": 12}
SECRET_VARIABLE = "TAUXCHARGE_ES_API_KEY"
FORBIDDEN_MODULES = ("tensorflow", "keras")


def key(slots_before_end: int) -> str:
    """The partition ending ``slots_before_end`` slots before END (each test ticks its own partitions)."""
    return partition_key_ending_at(END - slots_before_end * STEP)


@dataclass
class Runs:
    """Materializations with the module's resources, recorded in one instance."""

    resources: dict[str, Any]
    instance: DagsterInstance

    def materialize(self, selection: list, run_config: dict | None = None, **kwargs: Any) -> Any:
        return materialize(
            [*ALL_ASSETS, *ALL_CHECKS],
            selection=selection,
            resources=self.resources,
            instance=self.instance,
            run_config={**QUIET, **(run_config or {})},
            raise_on_error=False,
            **kwargs,
        )

    def train(self, train_until: pd.Timestamp) -> Any:
        config = {**TRAINING, "train_until": train_until.isoformat()}
        return self.materialize(MODEL_ASSETS, {"ops": {"trained_model": {"config": config}}})


@dataclass
class Trained:
    runs: Runs
    plain: ElasticsearchResource  # direct reads by the tests (the runs get the API key as EnvVar)
    mlflow: MlflowResource
    home: Path
    secret: str
    api_keys_connected_with: list[str | None]
    first: ModelHandle
    second: ModelHandle
    second_result: Any
    alias_before_second: str | None
    alias_after_second: str | None

    @property
    def instance(self) -> DagsterInstance:
        return self.runs.instance

    def materialize(self, selection: list, run_config: dict | None = None, **kwargs: Any) -> Any:
        return self.runs.materialize(selection, run_config, **kwargs)

    def env(self, home: Path) -> dict[str, str]:
        """The environment of a fresh process pointed at this module's server, indices and MLflow."""
        env = {name: value for name, value in os.environ.items() if name != "DAGSTER_HOME"}
        env.update(
            TAUXCHARGE_ES_URL=self.plain.url,
            TAUXCHARGE_INDEX_PREFIX=self.plain.index_prefix,
            MLFLOW_TRACKING_URI=self.mlflow.tracking_uri,
            TAUXCHARGE_HOME=str(home),
            **{SECRET_VARIABLE: self.secret},
        )
        return env

    def forecasts_of(self, *keys: str) -> int:
        return count_documents(
            self.plain.get_client(), self.plain.indices.forecasts, {"terms": {"partition_key": list(keys)}}
        )


def rivals_lose(real):
    """``promotion_decision`` seeing a backtest where every rival (baselines, champion) did 100x worse."""

    def decide(summary: pd.DataFrame, *args: Any, **kwargs: Any) -> dict[str, Any]:
        rigged = summary.copy()
        rivals = rigged["forecaster"] != CHALLENGER
        rigged.loc[rivals, DECISION_METRIC] = rigged.loc[rivals, DECISION_METRIC] * 100 + 100
        return real(rigged, *args, **kwargs)

    return decide


@pytest.fixture(scope="module")
def trained(es_url: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Trained]:
    home = tmp_path_factory.mktemp("promises")
    prefix = f"test-prom-{uuid.uuid4().hex[:8]}"
    secret = f"secret{uuid.uuid4().hex}"
    plain = ElasticsearchResource(url=es_url, index_prefix=prefix)
    client = plain.get_client()
    sim = simulate(SimulationSpec(n_names=NAMES, days=3, end=END, seed=21))
    bulk_write(client, plain.indices.metrics, sim.documents())
    connected_with: list[str | None] = []
    real_connect = resources_module.connect

    def recording_connect(url: str, api_key: str | None = None, **kwargs: Any) -> Any:
        connected_with.append(api_key)
        return real_connect(url, api_key, **kwargs)

    with pytest.MonkeyPatch.context() as patch:
        patch.setenv(SECRET_VARIABLE, secret)
        patch.setattr(resources_module, "connect", recording_connect)
        es = ElasticsearchResource(url=es_url, api_key=EnvVar(SECRET_VARIABLE), index_prefix=prefix)
        mlflow = MlflowResource(  # the code location's registered model name, in a store of its own
            tracking_uri=f"sqlite:///{home / 'mlflow.db'}", artifact_location=(home / "mlartifacts").as_uri()
        )
        runs = Runs(
            {
                "elasticsearch": es,
                "mlflow": mlflow,
                "alerts": AlertWebhookResource(),
                "io_manager": FilesystemIOManager(base_dir=str(home / "storage")),
            },
            DagsterInstance.ephemeral(),
        )
        first = runs.train(END - 12 * STEP).output_for_node("trained_model")
        if mlflow.champion_version() != first.version:  # a toy first model may lose to naive: operator override
            mlflow.promote(first.version)
        alias_before_second = mlflow.champion_version()
        with pytest.MonkeyPatch.context() as rigged:
            rigged.setattr(training, "promotion_decision", rivals_lose(training.promotion_decision))
            second_result = runs.train(END - 10 * STEP)
        alias_after_second = mlflow.champion_version()
        assert runs.materialize(TICK_ASSETS, partition_key=key(6)).success  # a tick in the module's instance too
        yield Trained(
            runs,
            plain,
            mlflow,
            home,
            secret,
            connected_with,
            first,
            second_result.output_for_node("trained_model"),
            second_result,
            alias_before_second,
            alias_after_second,
        )
    client.indices.delete(index=f"{prefix}-*", allow_no_indices=True)


# ---------------------------------------------------------------------------------------------------
# The champion alias.


def test_a_passing_gate_moves_the_champion_alias_to_the_new_version(trained: Trained) -> None:
    result, second = trained.second_result, trained.second
    assert trained.alias_before_second == trained.first.version != second.version
    assert second.decision["promote"] is True
    assert {e.check_name: e.passed for e in result.get_asset_check_evaluations()} == {"challenger_beats_champion": True}
    outcomes = step_outcomes(trained.instance, result.run_id)
    assert set(outcomes.values()) == {"succeeded"} and "champion_model" in outcomes, outcomes
    materialized = result.asset_materializations_for_node("champion_model")
    assert materialized[0].metadata["champion_version"].value == second.version
    assert materialized[0].metadata["previous_champion"].value == trained.first.version
    assert trained.alias_after_second == second.version  # the alias moved by itself, no operator


def test_a_tick_forecasts_with_the_champion_not_the_newest_version(trained: Trained) -> None:
    trained.mlflow.promote(trained.first.version)  # the newest version (second) is no longer the champion
    try:
        assert trained.mlflow.latest_version()["version"] == trained.second.version
        result = trained.materialize(TICK_ASSETS, partition_key=key(0))
        assert result.success
        assert set(result.output_for_node("forecasts")["model_version"]) == {trained.first.version}
    finally:
        trained.mlflow.promote(trained.second.version)


# ---------------------------------------------------------------------------------------------------
# Secrets.


def test_the_api_key_never_reaches_the_event_log_metadata_failures_or_mlflow(trained: Trained) -> None:
    import mlflow

    assert trained.secret in trained.api_keys_connected_with  # the runs did use the key
    failed = trained.materialize(
        MODEL_ASSETS,
        {"ops": {"trained_model": {"config": {**TRAINING, "train_until": "2020-01-01T00:00:00+00:00"}}}},
    )  # no data then: a failure message naming the index
    assert not failed.success
    runs = trained.instance.get_runs()
    assert len(runs) >= 4  # the two trainings, a tick, the failure (and any other test's)
    leaks = []
    for run in runs:
        if trained.secret in serialize_value(run):
            leaks.append(f"run {run.run_id}")
        records = trained.instance.all_logs(run.run_id)
        leaks += [f"{run.run_id}: {r.user_message[:80]}" for r in records if trained.secret in serialize_value(r)]
    failures = [r for r in trained.instance.all_logs(failed.run_id) if r.dagster_event and r.is_dagster_event]
    assert any(r.dagster_event.is_step_failure for r in failures)
    client = mlflow.MlflowClient(tracking_uri=trained.mlflow.tracking_uri)
    experiments = [e.experiment_id for e in client.search_experiments()]
    training_runs = client.search_runs(experiments)
    assert len(training_runs) >= 2
    for run in training_runs:
        recorded = {**run.data.params, **run.data.tags, **dict.fromkeys(run.data.metrics, "")}
        leaks += [f"mlflow run {run.info.run_id}: {k}" for k, v in recorded.items() if trained.secret in f"{k}={v}"]
    for version in client.search_model_versions(f"name = '{trained.mlflow.registered_model_name}'"):
        leaks += [f"version {version.version} tag {k}" for k, v in version.tags.items() if trained.secret in v]
    secret = trained.secret.encode()
    for path in trained.home.rglob("*"):  # the MLflow store and artifacts, the IO manager's outputs
        if path.is_file() and secret in path.read_bytes():
            leaks.append(str(path))
    assert not leaks


# ---------------------------------------------------------------------------------------------------
# A tick's process never imports TensorFlow.


def test_a_scheduled_tick_process_never_imports_tensorflow(trained: Trained, tmp_path: Path) -> None:
    """A fresh process loads the code location (``definitions.defs``) and runs ``tick_job`` with its own
    resources (from the environment), as the schedule would: neither TensorFlow nor Keras is imported."""
    script = textwrap.dedent(
        f"""
        import json, sys, warnings
        warnings.simplefilter("ignore")
        from dagster import DagsterInstance
        from tauxcharge_assets.definitions import defs
        job = defs.resolve_job_def("tick_job")
        result = job.execute_in_process(
            partition_key={key(1)!r},
            instance=DagsterInstance.ephemeral(),
            run_config={{"loggers": {{"console": {{"config": {{"log_level": "WARNING"}}}}}}}},
            raise_on_error=False,
        )
        forecasts = result.output_for_node("forecasts") if result.success else None
        print(json.dumps({{
            "success": result.success,
            "versions": sorted(set(forecasts["model_version"])) if forecasts is not None else [],
            "names": int(forecasts["name"].nunique()) if forecasts is not None else 0,
            "imported": [name for name in {FORBIDDEN_MODULES!r} if name in sys.modules],
        }}))
        """
    )
    done = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, timeout=600, env=trained.env(tmp_path)
    )
    assert done.returncode == 0, done.stderr[-3000:]
    report = json.loads(done.stdout.strip().splitlines()[-1])
    assert report["success"] and report["names"] == NAMES, done.stderr[-3000:]
    assert report["versions"] == [trained.mlflow.champion_version()]
    assert report["imported"] == []


def test_tick_job_runs_every_step_in_one_process() -> None:
    from tauxcharge_assets.definitions import defs

    assert defs.resolve_job_def("tick_job").executor_def.name == "in_process"


# ---------------------------------------------------------------------------------------------------
# A version without stored numpy weights.


def test_a_version_without_numpy_weights_loads_with_keras(trained: Trained) -> None:
    import keras
    import mlflow

    from tauxcharge_assets.model import network as lstm
    from tauxcharge_assets.model.numpy_network import NumpyNetwork
    from tauxcharge_assets.model.registry import NETWORK_WEIGHTS, SIDECAR, load_forecast_model

    champion = trained.mlflow.load_model(trained.first.version)
    rng = np.random.default_rng(4)
    network = lstm.build_model(champion.hp, lstm.vocabulary_size(champion.network))
    network.set_weights([rng.normal(0, 0.3, w.shape).astype(np.float32) for w in network.get_weights()])
    registry = MlflowResource(
        tracking_uri=trained.mlflow.tracking_uri,
        artifact_location=trained.mlflow.artifact_location,
        registered_model_name=f"keras-only-{uuid.uuid4().hex[:6]}",
    )
    handle = registry.log_and_register(
        dataclasses.replace(champion, network=network), {}, tags={}, trained_through=END, extra_params={}
    )
    artifacts = mlflow.MlflowClient(tracking_uri=registry.tracking_uri).get_run(handle.run_id).info.artifact_uri
    weights = Path(urllib.parse.urlparse(artifacts).path) / SIDECAR / NETWORK_WEIGHTS
    weights.unlink()  # as a version registered before the weights were stored
    loaded = load_forecast_model(registry.tracking_uri, registry.registered_model_name, handle.version)
    assert isinstance(loaded.network, keras.Model) and not isinstance(loaded.network, NumpyNetwork)
    values = (50 + rng.normal(0, 3, (3, 288))).astype(np.float32)
    batch = loaded.batch_for(["a", "b", "c"], np.array([1, 2, 0]), values, np.ones_like(values), END)
    expected = dataclasses.replace(champion, network=network).predict_quantiles(batch)
    np.testing.assert_allclose(loaded.predict_quantiles(batch), expected, rtol=1e-5, atol=1e-5)


# ---------------------------------------------------------------------------------------------------
# The command line.


def test_the_backfill_command_materializes_each_partition_in_one_run(trained: Trained, tmp_path: Path) -> None:
    first, last = key(3), key(2)
    assert trained.forecasts_of(first, last) == 0
    done = subprocess.run(
        [sys.executable, "-m", "tauxcharge_assets", "backfill", "--start", first, "--end", last],
        capture_output=True,
        text=True,
        timeout=600,
        env=trained.env(tmp_path),
    )
    assert done.returncode == 0, done.stderr[-3000:]
    assert trained.forecasts_of(first) == trained.forecasts_of(last) == NAMES * 12
    assert trained.secret not in done.stdout + done.stderr
    recorded = DagsterInstance.from_config(str(tmp_path / "dagster_home"))
    runs = recorded.get_runs()
    assert len(runs) == 1 and runs[0].is_success  # one run over the range (a single-run backfill)
    assert (runs[0].tags[RANGE_START_TAG], runs[0].tags[RANGE_END_TAG]) == (first, last)
    materialized = recorded.get_materialized_partitions(AssetKey("anomaly_report"))
    assert {first, last} <= set(materialized)  # each partition recorded as materialized


def test_the_promote_command_moves_the_alias(trained: Trained, tmp_path: Path) -> None:
    assert trained.mlflow.champion_version() == trained.second.version
    try:
        done = subprocess.run(
            [sys.executable, "-m", "tauxcharge_assets", "promote", "--version", trained.first.version],
            capture_output=True,
            text=True,
            timeout=300,
            env=trained.env(tmp_path),
        )
        assert done.returncode == 0, done.stderr[-3000:]
        assert trained.mlflow.champion_version() == trained.first.version
    finally:
        trained.mlflow.promote(trained.second.version)
