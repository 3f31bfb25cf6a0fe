"""Concurrent runs of the same partitions, against the real Elasticsearch, in real processes.

One module fixture loads 50 simulated names, trains a small champion into its own MLflow store and puts
one record-breaking spike at the slot each tested partition scores (so every tick writes anomalies).
Each test then starts real processes together, held at a barrier (a file each process creates once its
imports are done) so their runs overlap: the ``backfill`` command, and the tick job loaded from the code
location as the schedule launches it. They share one data folder (``TAUXCHARGE_HOME``: the Dagster
instance, the pickled outputs, the rolling-window caches) and one index prefix. Afterwards every
(name, issue time, target time, model version) must be held by exactly one forecast document and every
(name, slot) by exactly one anomaly document.
"""

import json
import os
import pickle
import signal
import subprocess
import sys
import textwrap
import time
import urllib.request
import uuid
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pandas as pd
import pytest
from dagster import (
    AssetExecutionContext,
    DagsterInstance,
    FilesystemIOManager,
    PartitionKeyRange,
    RunsFilter,
    StaticPartitionsDefinition,
    asset,
    materialize,
)

from tauxcharge_assets.cli.runner import RANGE_END_TAG, RANGE_START_TAG, train
from tauxcharge_assets.data.name_ids import UNKNOWN_NAME_ID, load_name_ids
from tauxcharge_assets.data.simulator import SimulationSpec, simulate
from tauxcharge_assets.defs.io_manager import RetainedFilesystemIOManager
from tauxcharge_assets.defs.partitions import partition_key_ending_at, tick_partitions
from tauxcharge_assets.defs.resources import AlertWebhookResource, ElasticsearchResource, MlflowResource
from tauxcharge_assets.elastic.bulk import bulk_write, delete_documents, refresh_index, scan_pit
from tauxcharge_assets.elastic.queries import count_documents
from tauxcharge_assets_tests.services import free_port, server_process

STEP = pd.Timedelta(minutes=5)
END = pd.Timestamp.now(tz="UTC").floor("h") - pd.Timedelta(days=1)
NAMES = 50
HORIZONS = 12
PER_PARTITION = NAMES * HORIZONS  # 600 forecast documents per issue time
TRAINING = {"training_days": 2.5, "epochs": 2, "lstm_units": 8, "dense_units": 8, "sample_stride": 12}
RUN_TIMEOUT_S = 420

# Each test ticks its own partitions (counted by partition key), all after the training data.
SAME_PARTITION = [30]
OVERLAP = [26, 25]
SAME_RANGE = [22, 21]
RERUN = list(range(15, 3, -1))  # 12 partitions
SHARDED = [35, 34, 33]
RANGE_CLI = [40, 39, 38]
RANGE_UI = [45, 44, 43]
TESTED = sorted({*SAME_PARTITION, *OVERLAP, *SAME_RANGE, *RERUN, *SHARDED, *RANGE_CLI, *RANGE_UI})
TICK_ASSET_KEYS = [
    "raw_es_extract",
    "cleaned_series",
    "quarantined_documents",
    "encoded_names",
    "sequence_tensors",
    "forecasts",
    "anomaly_report",
]

# A process started by the tests: imports first, then waits until every process of its group is ready.
BARRIER = """
import pathlib, sys, time
ready, group = pathlib.Path(sys.argv[1]), int(sys.argv[2])
ready.touch()
deadline = time.monotonic() + 300
while len(list(ready.parent.glob("*.ready"))) < group and time.monotonic() < deadline:
    time.sleep(0.02)
"""
BACKFILL = BARRIER + textwrap.dedent(
    """
    import tauxcharge_assets.cli.runner  # the command's heavy imports, before the barrier releases
    from tauxcharge_assets.cli.main import main
    sys.exit(main(["backfill", "--start", sys.argv[3], "--end", sys.argv[4]]))
    """
)
LIVE_TICK = BARRIER + textwrap.dedent(
    """
    from tauxcharge_assets.cli.runner import QUIET, dagster_instance
    from tauxcharge_assets.definitions import defs
    job = defs.resolve_job_def("tick_job")
    instance = dagster_instance()
    for key in sys.argv[3:]:
        result = job.execute_in_process(partition_key=key, instance=instance, run_config=QUIET, raise_on_error=False)
        if not result.success:
            sys.exit(f"tick {key} failed")
    """
)
# One name shard's ticks, as the sharded schedule launches them: the shard's run config, same code location.
SHARD_TICK = BARRIER + textwrap.dedent(
    """
    from tauxcharge_assets.cli.runner import QUIET, dagster_instance
    from tauxcharge_assets.data.shards import Shard
    from tauxcharge_assets.definitions import defs
    from tauxcharge_assets.defs.resources import shard_run_config
    from tauxcharge_assets.settings import data_dir
    job = defs.resolve_job_def("tick_job")
    instance = dagster_instance()
    config = shard_run_config(Shard(int(sys.argv[3]), int(sys.argv[4])), str(data_dir() / "storage"), QUIET)
    for key in sys.argv[5:]:
        result = job.execute_in_process(partition_key=key, instance=instance, run_config=config, raise_on_error=False)
        if not result.success:
            sys.exit(f"shard {sys.argv[3]} tick {key} failed")
    """
)


def key(slots_before_end: int) -> str:
    return partition_key_ending_at(END - slots_before_end * STEP)


def scored_slot(slots_before_end: int) -> pd.Timestamp:
    """The slot the tick of ``key(slots_before_end)`` scores (its window's newest)."""
    return END - (slots_before_end + 1) * STEP


@dataclass
class Shared:
    plain: ElasticsearchResource
    mlflow: MlflowResource
    champion: str
    spikes: dict[int, str]  # slots before END -> the name spiked at that tick's scored slot

    def env(self, home: Path) -> dict[str, str]:
        env = {name: value for name, value in os.environ.items() if name not in ("DAGSTER_HOME",)}
        env.update(
            TAUXCHARGE_ES_URL=self.plain.url,
            TAUXCHARGE_INDEX_PREFIX=self.plain.index_prefix,
            MLFLOW_TRACKING_URI=self.mlflow.tracking_uri,
            TAUXCHARGE_HOME=str(home),
        )
        return env

    def start(self, home: Path, group: int, script: str, *args: str) -> subprocess.Popen[str]:
        return start(home / "barrier", group, script, *args, env=self.env(home))

    def forecast_counts(self, slots: list[int]) -> Counter[tuple[str, str, str, str]]:
        """Documents per (name, issue time, target time, model version) of the partitions ``slots``."""
        client, index = self.plain.get_client(), self.plain.indices.forecasts
        refresh_index(client, index)
        query = {"terms": {"partition_key": [key(s) for s in slots]}}
        fields = ["name", "issued_at", "target_timestamp", "model_version"]
        return Counter(tuple(hit["_source"][f] for f in fields) for hit in scan_pit(client, index, query, fields))

    def anomaly_counts(self, slots: list[int]) -> Counter[tuple[str, pd.Timestamp]]:
        """Documents per (name, slot) written by the partitions ``slots``."""
        client, index = self.plain.get_client(), self.plain.indices.anomalies
        refresh_index(client, index)
        query = {"terms": {"partition_key": [key(s) for s in slots]}}
        hits = scan_pit(client, index, query, ["name", "timestamp"])
        return Counter((hit["_source"]["name"], pd.Timestamp(hit["_source"]["timestamp"])) for hit in hits)

    def written(self, slots: list[int]) -> dict[str, dict[str, dict]]:
        """Every forecast, anomaly and quarantine document of the partitions ``slots``, by id (sources whole)."""
        client, names = self.plain.get_client(), self.plain.indices
        patterns = [names.forecasts, names.anomalies, f"{names.quarantine}-*"]
        client.indices.refresh(index=",".join(patterns), allow_no_indices=True, ignore_unavailable=True)
        query = {"terms": {"partition_key": [key(s) for s in slots]}}
        return {
            pattern: {hit["_id"]: hit["_source"] for hit in scan_pit(client, pattern, query)} for pattern in patterns
        }

    def forget(self, slots: list[int]) -> None:
        """Delete what the ticks of ``slots`` wrote, and every detector checkpoint: the next run starts afresh."""
        client, names = self.plain.get_client(), self.plain.indices
        for pattern, ids in self.written(slots).items():
            for index in client.indices.get(index=pattern, allow_no_indices=True, ignore_unavailable=True):
                delete_documents(client, index, list(ids))
        every = [hit["_id"] for hit in scan_pit(client, names.detector_state, {"match_all": {}}, [])]
        delete_documents(client, names.detector_state, every)
        refresh_index(client, names.detector_state)

    def assert_each_held_once(self, slots: list[int]) -> None:
        forecasts = self.forecast_counts(slots)
        assert sum(forecasts.values()) == len(slots) * PER_PARTITION
        assert len(forecasts) == len(slots) * PER_PARTITION and set(forecasts.values()) == {1}
        per_issue = Counter(issued for _, issued, _, _ in forecasts)
        assert sorted(per_issue.values()) == [PER_PARTITION] * len(slots)
        assert {version for *_, version in forecasts} == {self.champion}
        anomalies = self.anomaly_counts(slots)
        assert set(anomalies.values()) == {1}
        assert {(self.spikes[s], scored_slot(s)) for s in slots} <= set(anomalies)


def start(
    barrier: Path, group: int, script: str, *args: str, env: dict[str, str] | None = None
) -> subprocess.Popen[str]:
    """One process of a group of ``group`` released together once each has created its file in ``barrier``."""
    barrier.mkdir(parents=True, exist_ok=True)
    ready = barrier / f"{uuid.uuid4().hex}.ready"
    command = [sys.executable, "-c", script, str(ready), str(group), *args]
    return subprocess.Popen(command, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def finished(processes: list[subprocess.Popen[str]]) -> None:
    for process in processes:
        stdout, stderr = process.communicate(timeout=RUN_TIMEOUT_S)
        assert process.returncode == 0, (stdout + stderr)[-3000:]


def runs_by_partition(home: Path, job: str | None = None) -> dict[str, list[tuple[float, float]]]:
    """(start, end) of each run (of ``job``, else of any) the processes recorded in their shared Dagster
    instance; every run there must have succeeded."""
    instance = DagsterInstance.from_config(str(home / "dagster_home"))
    spans: dict[str, list[tuple[float, float]]] = {}
    for record in instance.get_run_records(RunsFilter()):
        assert record.dagster_run.is_success, record.dagster_run.run_id
        if job is None or record.dagster_run.job_name == job:
            tags = record.dagster_run.tags
            if "dagster/partition" in tags:
                partitions = [tags["dagster/partition"]]
            else:  # a backfill's run over a range: it ran each partition of the range
                start, end = tags[RANGE_START_TAG], tags[RANGE_END_TAG]
                partitions = tick_partitions.get_partition_keys_in_range(PartitionKeyRange(start, end))
            for partition in partitions:
                spans.setdefault(partition, []).append((record.start_time, record.end_time))
    return spans


def overlap(first: tuple[float, float], second: tuple[float, float]) -> bool:
    return first[0] < second[1] and second[0] < first[1]


@pytest.fixture(scope="module")
def shared(es_url: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Shared]:
    home = tmp_path_factory.mktemp("concurrency")
    plain = ElasticsearchResource(url=es_url, index_prefix=f"test-conc-{uuid.uuid4().hex[:8]}")
    client = plain.get_client()
    sim = simulate(SimulationSpec(n_names=NAMES, days=3, end=END, seed=31, late_rate=0.0, anomalies_per_name=0.0))
    documents = list(sim.documents())
    names = list(sim.values.columns)
    spikes = {slots: names[i % NAMES] for i, slots in enumerate(TESTED)}
    wanted = {(name, scored_slot(slots).isoformat().replace("+00:00", "Z")): slots for slots, name in spikes.items()}
    for _doc_id, document in documents:  # a record at each tested tick's scored slot: anomalies to count
        slots = wanted.get((document["name"], document["timestamp"]))
        if slots is not None:
            document["value"] = 100.0 if sim.values.loc[scored_slot(slots), document["name"]] < 55 else 0.0
    bulk_write(client, plain.indices.metrics, documents)
    mlflow = MlflowResource(
        tracking_uri=f"sqlite:///{home / 'mlflow.db'}", artifact_location=(home / "mlartifacts").as_uri()
    )
    resources = {
        "elasticsearch": plain,
        "mlflow": mlflow,
        "alerts": AlertWebhookResource(),
        "io_manager": FilesystemIOManager(base_dir=str(home)),
    }
    train(resources, END - (max(TESTED) + 2) * STEP, DagsterInstance.ephemeral(), **TRAINING)
    champion = mlflow.champion_version()
    if champion is None:  # a toy model may lose to naive: the operator's override
        champion = mlflow.latest_version()["version"]
        mlflow.promote(champion)
    yield Shared(plain, mlflow, str(champion), spikes)
    client.indices.delete(index=f"{plain.index_prefix}-*", allow_no_indices=True)


def test_the_same_partition_ticked_twice_at_once_is_held_once(shared: Shared, tmp_path: Path) -> None:
    """Two live tick processes of one partition (a schedule tick and a manual one), released together."""
    processes = [shared.start(tmp_path, 2, LIVE_TICK, key(SAME_PARTITION[0])) for _ in range(2)]
    finished(processes)
    spans = runs_by_partition(tmp_path)[key(SAME_PARTITION[0])]
    assert len(spans) == 2 and overlap(*spans)  # both runs of the partition did run at once
    shared.assert_each_held_once(SAME_PARTITION)  # 50 names x 12 horizons = 600 documents, none twice


def test_a_backfill_overlapping_the_live_ticks_holds_each_forecast_once(shared: Shared, tmp_path: Path) -> None:
    """``backfill`` over 2 partitions while the schedule's tick job runs the same 2, released together."""
    backfill = shared.start(tmp_path, 2, BACKFILL, key(OVERLAP[0]), key(OVERLAP[-1]))
    live = shared.start(tmp_path, 2, LIVE_TICK, *(key(slots) for slots in OVERLAP))
    finished([backfill, live])
    spans, live_spans = runs_by_partition(tmp_path), runs_by_partition(tmp_path, "tick_job")
    assert all(len(spans[key(s)]) == 2 and len(live_spans[key(s)]) == 1 for s in OVERLAP)
    assert any(overlap(*spans[key(s)]) for s in OVERLAP)  # a live run and a backfill run of one partition at once
    shared.assert_each_held_once(OVERLAP)  # 2 x 600 = 1,200 documents, none twice


def test_two_backfills_of_the_same_range_at_once_hold_each_forecast_once(shared: Shared, tmp_path: Path) -> None:
    processes = [shared.start(tmp_path, 2, BACKFILL, key(SAME_RANGE[0]), key(SAME_RANGE[-1])) for _ in range(2)]
    finished(processes)
    spans = runs_by_partition(tmp_path)
    assert all(len(spans[key(s)]) == 2 for s in SAME_RANGE)
    assert overlap(*spans[key(SAME_RANGE[0])])
    shared.assert_each_held_once(SAME_RANGE)  # 2 x 600 = 1,200 documents, none twice


def test_a_backfill_killed_halfway_then_rerun_holds_600_forecasts_per_issue_time(
    shared: Shared, tmp_path: Path
) -> None:
    """The process dies (SIGKILL) once half the 12 partitions are written; the rerun of all 12 leaves
    exactly 50 names x 12 horizons per issue time: none lost, none twice."""
    first, last = key(RERUN[0]), key(RERUN[-1])
    client, index = shared.plain.get_client(), shared.plain.indices.forecasts
    query = {"terms": {"partition_key": [key(s) for s in RERUN]}}
    killed = shared.start(tmp_path, 1, BACKFILL, first, last)
    deadline = time.monotonic() + RUN_TIMEOUT_S
    def written_now() -> int:  # a range run refreshes the index only after its last partition: refresh here
        refresh_index(client, index)
        return count_documents(client, index, query)

    while written_now() < 6 * PER_PARTITION and killed.poll() is None:
        assert time.monotonic() < deadline, "the backfill did not reach half its partitions"
        time.sleep(0.02)
    killed.send_signal(signal.SIGKILL)
    killed.communicate(timeout=60)
    assert killed.returncode == -signal.SIGKILL  # it died halfway, it did not finish
    written = count_documents(client, index, query)
    assert 6 * PER_PARTITION <= written < len(RERUN) * PER_PARTITION
    finished([shared.start(tmp_path, 1, BACKFILL, first, last)])
    shared.assert_each_held_once(RERUN)  # 12 x 600 = 7,200 documents, 600 per issue time


def test_four_name_shards_ticking_at_once_write_exactly_the_unsharded_documents(shared: Shared, tmp_path: Path) -> None:
    """Three partitions ticked unsharded, then as 4 name shards: 4 processes on one data folder and one
    Dagster instance, released together, each running its shard's tick job for the 3 partitions. Both
    start from nothing kept (a fresh folder, no detector checkpoint): the same forecast, anomaly and
    quarantine documents, ids and sources, and each shard forecast only its own names."""
    keys = [key(s) for s in SHARDED]
    shared.forget(SHARDED)
    finished([shared.start(tmp_path / "unsharded", 1, LIVE_TICK, *keys)])
    unsharded = shared.written(SHARDED)
    assert len(unsharded[shared.plain.indices.forecasts]) == len(SHARDED) * PER_PARTITION
    assert unsharded[shared.plain.indices.anomalies]
    shared.forget(SHARDED)
    home = tmp_path / "sharded"
    finished([shared.start(home, 4, SHARD_TICK, str(index), "4", *keys) for index in range(4)])
    spans = runs_by_partition(home)
    assert all(len(spans[k]) == 4 for k in keys)  # 4 runs per partition, one per shard
    assert any(overlap(spans[keys[0]][0], other) for other in spans[keys[0]][1:])  # they did run at once
    assert shared.written(SHARDED) == unsharded
    shard_names = []
    for index in range(4):
        with (home / "storage" / "forecasts" / f"@shard-{index}-of-4" / keys[-1]).open("rb") as handle:
            shard_names.append(set(pickle.load(handle)["name"]))
    assert all(len(names) > 0 for names in shard_names)
    assert sum(len(names) for names in shard_names) == len(set().union(*shard_names)) == NAMES  # disjoint, all
    # Each shard's detector checkpoints, as a fresh worker finds them in Elasticsearch: its own names only.
    client, state_index = shared.plain.get_client(), shared.plain.indices.detector_state
    refresh_index(client, state_index)
    checkpointed: dict[str, set[str]] = {}
    for hit in scan_pit(client, state_index, {"match_all": {}}, ["shard", "state.names"]):
        checkpointed.setdefault(hit["_source"]["shard"], set()).update(hit["_source"]["state"]["names"])
    assert checkpointed == {f"{index}/4": names for index, names in enumerate(shard_names)}


def ranges_run(home: Path) -> list[dict[str, str]]:
    """The tags of every run recorded in the data folder's Dagster instance (each must have succeeded)."""
    instance = DagsterInstance.from_config(str(home / "dagster_home"))
    records = instance.get_run_records(RunsFilter())
    assert all(record.dagster_run.is_success for record in records), [r.dagster_run.status for r in records]
    return [dict(record.dagster_run.tags) for record in records]


def dagster_env(shared: Shared, home: Path) -> dict[str, str]:
    (home / "dagster_home").mkdir(parents=True, exist_ok=True)
    (home / "dagster_home" / "dagster.yaml").write_text("telemetry:\n  enabled: false\n")
    return {**shared.env(home), "DAGSTER_HOME": str(home / "dagster_home")}


def test_dagster_asset_materialize_over_a_partition_range_is_one_run_equal_to_the_per_partition_runs(
    shared: Shared, tmp_path: Path
) -> None:
    """Dagster's own command line, ``--partition-range``: one run over the range, the same documents."""
    keys = [key(s) for s in RANGE_CLI]
    shared.forget(RANGE_CLI)
    finished([shared.start(tmp_path / "per_partition", 1, LIVE_TICK, *keys)])
    per_partition = shared.written(RANGE_CLI)
    shared.forget(RANGE_CLI)
    home = tmp_path / "range"
    command = [sys.executable, "-m", "dagster", "asset", "materialize", "-m", "tauxcharge_assets.definitions"]
    command += ["--select", ",".join(TICK_ASSET_KEYS), "--partition-range", f"{keys[0]}...{keys[-1]}"]
    done = subprocess.run(command, env=dagster_env(shared, home), capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, (done.stdout + done.stderr)[-3000:]
    runs = ranges_run(home)
    assert len(runs) == 1 and (runs[0][RANGE_START_TAG], runs[0][RANGE_END_TAG]) == (keys[0], keys[-1])
    assert shared.written(RANGE_CLI) == per_partition


LAUNCH_BACKFILL = """
mutation($params: LaunchBackfillParams!) {
  launchPartitionBackfill(backfillParams: $params) {
    __typename
    ... on LaunchBackfillSuccess { backfillId }
    ... on PythonError { message }
  }
}
"""
BACKFILL_STATUS = (
    "query($id: String!) { partitionBackfillOrError(backfillId: $id) { ... on PartitionBackfill { status } } }"
)


def graphql(port: int, query: str, variables: dict) -> dict:
    request = urllib.request.Request(
        f"http://127.0.0.1:{port}/graphql",
        data=json.dumps({"query": query, "variables": variables}).encode(),
        headers={"Content-Type": "application/json"},
    )
    with urllib.request.urlopen(request, timeout=60) as response:
        answer = json.loads(response.read())
    assert "errors" not in answer, answer
    return answer["data"]


def test_a_backfill_launched_as_the_ui_does_is_one_run_equal_to_the_per_partition_runs(
    shared: Shared, tmp_path: Path
) -> None:
    """The webserver's ``launchPartitionBackfill`` (what the UI's "Materialize" over a partition range sends)
    and the daemon that carries the backfill out: one run for the whole range, the same documents."""
    keys = [key(s) for s in RANGE_UI]
    shared.forget(RANGE_UI)
    finished([shared.start(tmp_path / "per_partition", 1, LIVE_TICK, *keys)])
    per_partition = shared.written(RANGE_UI)
    shared.forget(RANGE_UI)
    home, port = tmp_path / "ui", free_port()
    env = dagster_env(shared, home)
    location = ["-m", "tauxcharge_assets.definitions"]
    webserver = [sys.executable, "-m", "dagster_webserver", *location, "-h", "127.0.0.1", "-p", str(port)]
    daemon = [str(Path(sys.executable).parent / "dagster-daemon"), "run", *location]
    with server_process(webserver, f"http://127.0.0.1:{port}/server_info", home / "webserver.log", 240, env):
        params = {"partitionNames": keys, "assetSelection": [{"path": [k]} for k in TICK_ASSET_KEYS]}
        launched = graphql(port, LAUNCH_BACKFILL, {"params": params})["launchPartitionBackfill"]
        assert launched["__typename"] == "LaunchBackfillSuccess", launched
        with (home / "daemon.log").open("w") as log:
            process = subprocess.Popen(daemon, env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
            try:
                deadline, status = time.monotonic() + RUN_TIMEOUT_S, None
                while status not in ("COMPLETED", "COMPLETED_SUCCESS", "COMPLETED_FAILED", "FAILED", "CANCELED"):
                    alive = process.poll() is None
                    assert alive and time.monotonic() < deadline, (home / "daemon.log").read_text()[-3000:]
                    time.sleep(2)
                    answer = graphql(port, BACKFILL_STATUS, {"id": launched["backfillId"]})
                    status = answer["partitionBackfillOrError"]["status"]
            finally:
                os.killpg(process.pid, signal.SIGKILL)
                process.wait(timeout=30)
    assert status in ("COMPLETED", "COMPLETED_SUCCESS"), (home / "daemon.log").read_text()[-3000:]
    runs = ranges_run(home)
    assert len(runs) == 1 and (runs[0][RANGE_START_TAG], runs[0][RANGE_END_TAG]) == (keys[0], keys[-1])
    assert runs[0]["dagster/backfill"] == launched["backfillId"]
    assert shared.written(RANGE_UI) == per_partition


NAME_ROUNDS = 2
NAME_WRITER = BARRIER + textwrap.dedent(
    """
    import json
    from tauxcharge_assets.data.name_ids import assign_name_ids
    from tauxcharge_assets.elastic.client import connect
    client, index, names = connect(sys.argv[3]), sys.argv[4], sys.argv[5].split(",")
    mapping = {}
    for start in range(0, len(names), 3):  # many small registrations: many chances to race the others
        mapping.update(assign_name_ids(client, index, names[start : start + 3])[0])
    print(json.dumps(mapping))
    """
)


def test_concurrent_processes_registering_overlapping_names_never_share_an_id(
    es_resource: ElasticsearchResource, tmp_path: Path
) -> None:
    """Rounds of 4 processes released together, each registering 30 of the round's 60 new names (3 at a
    time), every name wanted by 2 of them: each name gets one id, no id goes to two names, every process
    sees the ids the index holds."""
    client, index = es_resource.get_client(), es_resource.indices.names
    seen: dict[str, int] = {}
    for round_ in range(NAME_ROUNDS):
        names = [f"r{round_}-n{i:02d}" for i in range(60)]
        batches = [names[15 * i : 15 * i + 30] if i < 3 else names[45:] + names[:15] for i in range(4)]
        barrier = tmp_path / f"round{round_}"
        processes = [start(barrier, 4, NAME_WRITER, es_resource.url, index, ",".join(batch)) for batch in batches]
        answers = []
        for process in processes:
            stdout, stderr = process.communicate(timeout=120)
            assert process.returncode == 0, stderr[-3000:]
            answers.append(json.loads(stdout.strip().splitlines()[-1]))
        stored = load_name_ids(client, index)
        for batch, answer in zip(batches, answers, strict=True):
            assert answer == {name: stored[name] for name in batch}  # every writer agrees with the index
        for answer in answers:
            seen.update(answer)
    stored = load_name_ids(client, index)
    assert stored == seen and len(stored) == NAME_ROUNDS * 60  # 2 rounds x 60 names = 120, each recorded once
    assert len(set(stored.values())) == NAME_ROUNDS * 60 and UNKNOWN_NAME_ID not in stored.values()
    documents = Counter(hit["_source"]["name"] for hit in scan_pit(client, index, {"exists": {"field": "name"}}))
    assert set(documents.values()) == {1}


# ---------------------------------------------------------------------------------------------------
# The IO manager's folder, written by several runs at once (deterministic interleavings, no server).

BACKFILL_KEY, OTHER_BACKFILL_KEY = "2026-03-01-08:00", "2026-03-01-09:00"
LIVE_KEYS = ["2026-03-02-10:00", "2026-03-02-10:05"]
_read_while_pickled: list[object] = []


@asset(partitions_def=StaticPartitionsDefinition([BACKFILL_KEY, OTHER_BACKFILL_KEY, *LIVE_KEYS]))
def tick_output(context: AssetExecutionContext) -> object:
    return context.partition_key


@asset(partitions_def=tick_output.partitions_def)
def reads_tick_output(tick_output: object) -> object:
    return tick_output


class ReadsItsFileWhilePickled:
    """Pickled as the string "new"; while it is being pickled it reads the file its output goes to, as a
    run of another process loading that partition at that very moment would."""

    def __init__(self, path: Path) -> None:
        self.path = path

    def __reduce__(self) -> tuple[type, tuple[str]]:
        try:
            _read_while_pickled.append(pickle.loads(self.path.read_bytes()))
        except (EOFError, pickle.UnpicklingError) as error:
            _read_while_pickled.append(error)
        return (str, ("new",))


def test_an_output_just_written_survives_the_newer_files_of_concurrent_writers(tmp_path: Path) -> None:
    """A backfill writes its old partition; before its next step reads it, the live ticks write two
    newer partitions and another backfill one more: the default rule (2 latest keys, 2 last written)
    alone would prune it, the run's read would fail. Written seconds ago, it is kept."""
    manager = RetainedFilesystemIOManager(base_dir=str(tmp_path))
    for partition in [BACKFILL_KEY, LIVE_KEYS[0], OTHER_BACKFILL_KEY, LIVE_KEYS[1]]:
        assert materialize([tick_output], partition_key=partition, resources={"io_manager": manager}).success
    read = materialize(
        [tick_output, reads_tick_output],
        selection=[reads_tick_output],
        partition_key=BACKFILL_KEY,
        resources={"io_manager": manager},
        raise_on_error=False,
    )
    assert read.success and read.output_for_node("reads_tick_output") == BACKFILL_KEY


def test_a_reader_finds_the_previous_output_or_the_new_one_never_half_a_file(tmp_path: Path) -> None:
    manager = RetainedFilesystemIOManager(base_dir=str(tmp_path))
    path = tmp_path / "tick_output" / LIVE_KEYS[0]
    _read_while_pickled.clear()

    @asset(partitions_def=tick_output.partitions_def, name="tick_output")
    def rewritten(context: AssetExecutionContext) -> object:
        return ReadsItsFileWhilePickled(path)

    assert materialize([tick_output], partition_key=LIVE_KEYS[0], resources={"io_manager": manager}).success
    assert materialize([rewritten], partition_key=LIVE_KEYS[0], resources={"io_manager": manager}).success
    assert _read_while_pickled == [LIVE_KEYS[0]]  # the previous output, whole, while the new one was written
    assert pickle.loads(path.read_bytes()) == "new"


def test_another_writers_temporary_file_is_left_alone_until_it_is_an_hour_old(tmp_path: Path) -> None:
    manager = RetainedFilesystemIOManager(base_dir=str(tmp_path), keep_latest=2, keep_written=1, keep_recent_s=0)
    folder = tmp_path / "tick_output"
    folder.mkdir()
    in_flight, dead = folder / "tmpwriting.tmp", folder / "tmpdead.tmp"
    in_flight.write_bytes(b"half a pickle")
    dead.write_bytes(b"half a pickle")
    os.utime(dead, (time.time() - 7200, time.time() - 7200))
    for partition in [BACKFILL_KEY, *LIVE_KEYS]:
        assert materialize([tick_output], partition_key=partition, resources={"io_manager": manager}).success
    assert sorted(p.name for p in folder.iterdir()) == [*LIVE_KEYS, in_flight.name]
