"""Model faults: no champion, a damaged or incompatible version, a name the model never saw, a name with
too few points. None of them may crash a tick with a raw traceback, and a bad version never replaces a
working champion.

One module fixture simulates 21 names over 3 days, trains a toy champion on 20 of them (the 21st is
written after training: a name the model never saw), keeps only 10 points of the last day of one trained
name (too few points) and adds a name whose every value is out of range (no data after cleaning).
"""

from __future__ import annotations

import json
import tempfile
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest
from dagster import DagsterEventType, DagsterInstance, FilesystemIOManager, materialize

from tauxcharge_assets.cli.runner import QUIET
from tauxcharge_assets.data.simulator import SimulationSpec, simulate
from tauxcharge_assets.definitions import ALL_ASSETS, ALL_CHECKS
from tauxcharge_assets.defs.model.jobs import MODEL_ASSETS
from tauxcharge_assets.defs.partitions import partition_key_ending_at
from tauxcharge_assets.defs.resources import AlertWebhookResource, ElasticsearchResource, MlflowResource
from tauxcharge_assets.defs.serving.jobs import TICK_ASSETS
from tauxcharge_assets.elastic.bulk import bulk_write, deterministic_id
from tauxcharge_assets.elastic.queries import count_documents
from tauxcharge_assets.model import numpy_network, registry, training
from tauxcharge_assets.model.forecaster import LSTM, NAIVE
from tauxcharge_assets.model.registry import NETWORK_WEIGHTS, SIDECAR, ModelArtifactError, ModelHandle
from tauxcharge_assets_tests.test_promises_checks import step_outcomes
from tauxcharge_assets_tests.test_promises_pipeline import rivals_lose

STEP = pd.Timedelta(minutes=5)
END = pd.Timestamp.now(tz="UTC").floor("h") - pd.Timedelta(days=1)
TRAINED_NAMES = 20
SPARSE_POINTS = 10
HORIZON = 12
TRAINING = {"training_days": 2.5, "epochs": 2, "lstm_units": 8, "dense_units": 8, "sample_stride": 12}
INVALID = "invalid-par-99999"  # every value out of [0, 100]: nothing left after cleaning


def key(slots_before_end: int) -> str:
    """The partition ending ``slots_before_end`` slots before END (each test ticks its own partitions)."""
    return partition_key_ending_at(END - slots_before_end * STEP)


@dataclass
class Faulty:
    resources: dict[str, Any]
    instance: DagsterInstance
    es: ElasticsearchResource
    mlflow: MlflowResource
    champion: ModelHandle
    sparse: str  # a trained name with 10 points in its last day
    unseen: str  # a name written after training: the model never saw it

    def materialize(self, selection: list, partition_key: str | None = None, **resources: Any) -> Any:
        return materialize(
            [*ALL_ASSETS, *ALL_CHECKS],
            selection=selection,
            resources={**self.resources, **resources},
            instance=self.instance,
            run_config=QUIET,
            partition_key=partition_key,
            raise_on_error=False,
        )

    def forecasts_of(self, partition_key: str, **term: str) -> int:
        query: dict[str, Any] = {"bool": {"filter": [{"term": {"partition_key": partition_key}}]}}
        query["bool"]["filter"] += [{"term": {field: value}} for field, value in term.items()]
        return count_documents(self.es.get_client(), self.es.indices.forecasts, query)


def _train(faulty_resources: dict[str, Any], instance: DagsterInstance, until: pd.Timestamp) -> Any:
    config = {**TRAINING, "train_until": until.isoformat()}
    return materialize(
        [*ALL_ASSETS, *ALL_CHECKS],
        selection=MODEL_ASSETS,
        resources=faulty_resources,
        instance=instance,
        run_config={**QUIET, "ops": {"trained_model": {"config": config}}},
        raise_on_error=False,
    )


@pytest.fixture(scope="module")
def faulty(es_url: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Faulty]:
    home = tmp_path_factory.mktemp("model-faults")
    es = ElasticsearchResource(url=es_url, index_prefix=f"test-mf-{uuid.uuid4().hex[:8]}")
    client = es.get_client()
    documents = list(simulate(SimulationSpec(n_names=TRAINED_NAMES + 1, days=3, end=END, seed=31)).documents())
    names = sorted({document["name"] for _, document in documents})
    sparse, unseen = names[0], names[-1]
    kept_from, kept_until = END - pd.Timedelta(hours=2), END - pd.Timedelta(hours=2) + SPARSE_POINTS * STEP
    last_day = END - pd.Timedelta(hours=26)

    def kept(document: dict[str, Any]) -> bool:
        if document["name"] != sparse:
            return True
        stamp = pd.Timestamp(document["timestamp"])
        return stamp < last_day or kept_from <= stamp < kept_until

    bulk_write(client, es.indices.metrics, ((i, d) for i, d in documents if d["name"] != unseen and kept(d)))
    mlflow = MlflowResource(
        tracking_uri=f"sqlite:///{home / 'mlflow.db'}", artifact_location=(home / "mlartifacts").as_uri()
    )
    resources = {
        "elasticsearch": es,
        "mlflow": mlflow,
        "alerts": AlertWebhookResource(),
        "io_manager": FilesystemIOManager(base_dir=str(home / "io")),
    }
    instance = DagsterInstance.ephemeral()
    champion = _train(resources, instance, END - 12 * STEP).output_for_node("trained_model")
    if mlflow.champion_version() != champion.version:  # a toy model may lose to naive: operator override
        mlflow.promote(champion.version)
    bulk_write(client, es.indices.metrics, ((i, d) for i, d in documents if d["name"] == unseen))
    slots = pd.date_range(END - pd.Timedelta(hours=25), END, freq="5min", inclusive="left")
    invalid = [
        {"timestamp": s.isoformat(), "name": INVALID, "value": 150.0, "ingested_at": s.isoformat()} for s in slots
    ]
    bulk_write(client, es.indices.metrics, ((f"invalid-{i}", d) for i, d in enumerate(invalid)))
    yield Faulty(resources, instance, es, mlflow, champion, sparse, unseen)
    client.indices.delete(index=f"{es.index_prefix}-*", allow_no_indices=True)


def _failures_and_retries(instance: DagsterInstance, run_id: str, step: str) -> tuple[list[str], int]:
    failures, retries = [], 0
    for record in instance.all_logs(run_id):
        event = record.dagster_event
        if event is None or record.step_key != step:
            continue
        if event.event_type == DagsterEventType.STEP_FAILURE:
            failures.append(event.step_failure_data.error.message)
        elif event.event_type == DagsterEventType.STEP_UP_FOR_RETRY:
            retries += 1
    return failures, retries


def _register_damaged(mlflow: MlflowResource, version: str, damage: Callable[[Path], None]) -> str:
    """A new version of the model: a copy of ``version``'s forecaster files, damaged by ``damage``."""
    import mlflow as mlflow_module

    client = mlflow_module.MlflowClient(tracking_uri=mlflow.tracking_uri, registry_uri=mlflow.tracking_uri)
    run_id = client.get_model_version(mlflow.registered_model_name, version).run_id
    with tempfile.TemporaryDirectory() as folder:
        files = Path(
            mlflow_module.artifacts.download_artifacts(artifact_uri=f"runs:/{run_id}/{SIDECAR}", dst_path=folder)
        )
        damage(files)
        with mlflow_module.start_run(experiment_id=mlflow.ensure_experiment()) as run:
            mlflow_module.log_artifacts(str(files), SIDECAR)
    created = client.create_model_version(
        mlflow.registered_model_name, f"{run.info.artifact_uri}/model", run.info.run_id
    )
    return str(created.version)


def _truncate_weights(files: Path) -> None:
    weights = files / NETWORK_WEIGHTS
    weights.write_bytes(weights.read_bytes()[:1000])


def _narrower_patches(files: Path) -> None:  # another input width: 2 x 6 + 4 features per LSTM step, not 28
    hyperparameters = json.loads((files / "hyperparameters.json").read_text())
    (files / "hyperparameters.json").write_text(json.dumps({**hyperparameters, "patch": 6}))


def _four_quantiles(files: Path) -> None:  # a head with 4 outputs per step where the code reads 3
    with np.load(files / NETWORK_WEIGHTS) as stored:
        weights = {name: stored[name] for name in stored.files}
    last = f"dense{numpy_network.DENSE_LAYERS - 1}"
    kernel, bias = weights[f"{last}/kernel"], weights[f"{last}/bias"]
    weights[f"{last}/kernel"] = np.concatenate([kernel, kernel[:, : kernel.shape[1] // 3]], axis=1)
    weights[f"{last}/bias"] = np.concatenate([bias, bias[: len(bias) // 3]])
    (files / NETWORK_WEIGHTS).write_bytes(numpy_network.to_npz(weights))


def _longer_window(files: Path) -> None:  # 48 h of history where the tick's sequences hold 24 h
    hyperparameters = json.loads((files / "hyperparameters.json").read_text())
    (files / "hyperparameters.json").write_text(json.dumps({**hyperparameters, "window": 576}))


# ---------------------------------------------------------------------------------------------------
# 3 and 4: a name the model never saw, a name with too few points, a name with no data.


def test_sparse_names_get_the_flagged_naive_fallback_and_unseen_names_the_lstm(faulty: Faulty) -> None:
    result = faulty.materialize(TICK_ASSETS, key(0))
    assert result.success
    frame = result.output_for_node("forecasts")
    metadata = result.asset_materializations_for_node("forecasts")[0].metadata
    forecast_names = TRAINED_NAMES + 1  # the 20 trained names (the sparse one too) + the unseen one
    assert metadata["names_forecast"].value == forecast_names
    assert metadata["names_without_data"].value == 1  # INVALID: skipped, counted, not forecast
    assert metadata["names_naive_fallback"].value == 1
    assert metadata["names_unseen_by_model"].value == 1
    assert metadata["documents_written"].value == forecast_names * HORIZON == 252
    assert faulty.forecasts_of(key(0)) == 252
    assert faulty.forecasts_of(key(0), method=NAIVE) == HORIZON
    assert faulty.forecasts_of(key(0), method=NAIVE, name=faulty.sparse) == HORIZON
    assert faulty.forecasts_of(key(0), method=LSTM) == (forecast_names - 1) * HORIZON
    assert faulty.forecasts_of(key(0), method=LSTM, name=faulty.unseen) == HORIZON
    assert INVALID not in set(frame["name"])

    sparse = frame[frame["name"] == faulty.sparse].sort_values("horizon_steps")
    assert set(sparse["method"]) == {NAIVE}
    assert sparse["value"].nunique() == 1  # the last observed value, at every horizon
    width = (sparse["upper"] - sparse["lower"]).to_numpy()
    assert (width > 0).all() and (np.diff(width) > 0).all()  # a random walk's interval widens
    unseen = frame[frame["name"] == faulty.unseen]
    assert set(unseen["method"]) == {LSTM} and np.isfinite(unseen[["lower", "value", "upper"]]).all().all()

    hits = faulty.es.get_client().search(
        index=faulty.es.indices.forecasts,
        query={"bool": {"filter": [{"term": {"partition_key": key(0)}}, {"term": {"method": NAIVE}}]}},
        size=HORIZON,
    )["hits"]["hits"]
    issued = sparse["issued_at"].iloc[0].isoformat()
    expected_ids = {deterministic_id("forecast", faulty.sparse, issued, h) for h in range(1, HORIZON + 1)}
    assert {hit["_id"] for hit in hits} == expected_ids  # the method is a field, never part of the id


def test_the_fallback_spread_of_a_new_sparse_name_is_the_known_names_median(faulty: Faulty) -> None:
    model = faulty.mlflow.load_model(faulty.champion.version)
    values = np.full((2, 288), 50.0, np.float32)
    mask = np.zeros((2, 288), np.float32)
    mask[:, ::30] = 1.0  # 10 points, never two in a row: no spread of their own
    known = next(iter(model.scaler.scales_))
    quantiles, methods = model.forecast_tick([known, "brand-new"], np.array([1, 0]), values, mask, END)
    assert list(methods) == [NAIVE, NAIVE]
    half = (quantiles[:, 0, 2] - quantiles[:, 0, 0]) / 2 / 1.2816 / np.sqrt(np.pi / 2)
    np.testing.assert_allclose(half, [model.scaler.scales_[known], model.typical_scale()], rtol=1e-4)


# ---------------------------------------------------------------------------------------------------
# 1: no champion.


def test_a_tick_without_a_champion_fails_at_once_saying_what_to_run(faulty: Faulty) -> None:
    empty = MlflowResource(
        tracking_uri=faulty.mlflow.tracking_uri,
        artifact_location=faulty.mlflow.artifact_location,
        registered_model_name=f"never-trained-{uuid.uuid4().hex[:6]}",
    )
    result = faulty.materialize(TICK_ASSETS, key(5), mlflow=empty)
    assert not result.success
    outcomes = step_outcomes(faulty.instance, result.run_id)
    assert outcomes["forecasts"] == "failed" and outcomes["anomaly_report"] == "skipped", outcomes
    failures, retries = _failures_and_retries(faulty.instance, result.run_id, "forecasts")
    assert retries == 0 and len(failures) == 1, (retries, failures)
    assert "No champion version" in failures[0] and "retrain_job" in failures[0], failures[0]
    assert "Traceback" not in failures[0]
    assert faulty.forecasts_of(key(5)) == 0


# ---------------------------------------------------------------------------------------------------
# 2: a damaged or incompatible version.


def test_a_damaged_new_version_is_not_promoted_and_the_tick_keeps_the_champion(
    faulty: Faulty, monkeypatch: pytest.MonkeyPatch
) -> None:
    real_to_npz = numpy_network.to_npz
    monkeypatch.setattr(training, "promotion_decision", rivals_lose(training.promotion_decision))  # it "wins"
    monkeypatch.setattr(registry.numpy_network, "to_npz", lambda weights: real_to_npz(weights)[:1000])
    result = _train(faulty.resources, faulty.instance, END - 10 * STEP)
    monkeypatch.undo()
    damaged = result.output_for_node("trained_model")
    assert damaged.decision["promote"] is True and damaged.version != faulty.champion.version
    (check,) = result.get_asset_check_evaluations()
    assert check.check_name == "challenger_beats_champion" and not check.passed
    assert f"Version {damaged.version} of" in check.description and "cannot be used" in check.description
    assert step_outcomes(faulty.instance, result.run_id)["champion_model"] == "skipped"
    assert faulty.mlflow.champion_version() == faulty.champion.version

    with pytest.raises(ModelArtifactError, match=f"Version {damaged.version} of"):
        faulty.mlflow.promote(damaged.version)  # the operator's promote refuses it too
    assert faulty.mlflow.champion_version() == faulty.champion.version

    tick = faulty.materialize(TICK_ASSETS, key(3))
    assert tick.success
    assert set(tick.output_for_node("forecasts")["model_version"]) == {faulty.champion.version}
    assert faulty.forecasts_of(key(3)) == (TRAINED_NAMES + 1) * HORIZON


def test_a_damaged_champion_fails_the_tick_once_naming_the_version(faulty: Faulty) -> None:
    damaged = _register_damaged(faulty.mlflow, faulty.champion.version, _truncate_weights)
    registry.promote(faulty.mlflow.tracking_uri, faulty.mlflow.registered_model_name, damaged)  # damaged in place
    try:
        result = faulty.materialize(TICK_ASSETS, key(4))
    finally:
        registry.promote(faulty.mlflow.tracking_uri, faulty.mlflow.registered_model_name, faulty.champion.version)
    assert not result.success
    failures, retries = _failures_and_retries(faulty.instance, result.run_id, "forecasts")
    assert retries == 0 and len(failures) == 1, (retries, failures)
    assert f"Failure: Version {damaged} of '{faulty.mlflow.registered_model_name}' cannot be used" in failures[0]
    assert "promote --version" in failures[0] and "\n" not in failures[0].strip()
    assert faulty.forecasts_of(key(4)) == 0


@pytest.mark.parametrize(
    ("damage", "says"),
    [
        (_truncate_weights, "BadZipFile"),
        (_narrower_patches, "does not take the inputs of its hyperparameters (window 288, patch 6"),
        (_four_quantiles, "forecasts of shape (16, 3), not (12, 3)"),
        (_longer_window, "window=576 must be"),
    ],
)
def test_a_damaged_or_incompatible_version_is_refused_with_its_number(
    faulty: Faulty, damage: Callable[[Path], None], says: str
) -> None:
    version = _register_damaged(faulty.mlflow, faulty.champion.version, damage)
    with pytest.raises(ModelArtifactError) as refused:
        faulty.mlflow.load_model(version)
    message = str(refused.value)
    assert message.startswith(f"Version {version} of '{faulty.mlflow.registered_model_name}' cannot be used: ")
    assert says in message and "retrain_job" in message, message
    with pytest.raises(ModelArtifactError):
        faulty.mlflow.promote(version)
    assert faulty.mlflow.champion_version() == faulty.champion.version
