"""Name shards and partition ranges: who owns which name, what Elasticsearch sends each shard, the sharded
schedule, and the IO manager's range outputs (one file per partition, loaded one at a time)."""

import datetime
import os
import pickle
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from dagster import (
    AssetExecutionContext,
    BackfillPolicy,
    DailyPartitionsDefinition,
    Definitions,
    Output,
    asset,
    build_schedule_context,
    materialize,
)

from tauxcharge_assets.cli.runner import RANGE_END_TAG, RANGE_START_TAG
from tauxcharge_assets.data.documents import DocumentBatch
from tauxcharge_assets.data.shards import Shard, shard_of
from tauxcharge_assets.data.simulator import _names
from tauxcharge_assets.definitions import ALL_ASSETS, build_resources
from tauxcharge_assets.defs.io_manager import RetainedFilesystemIOManager
from tauxcharge_assets.defs.ranges import LazyPartitions, for_each_partition
from tauxcharge_assets.defs.serving.jobs import tick_job
from tauxcharge_assets.defs.serving.schedules import SHARD_TAG, sharded_tick_schedule
from tauxcharge_assets.elastic.bulk import bulk_write, scan_pit
from tauxcharge_assets.window.incremental import ShardReader


def test_every_name_has_exactly_one_shard_and_the_shards_are_balanced() -> None:
    names = _names(10_000)["name"].to_numpy(dtype=object)
    owned = np.array([Shard(index, 4).owns(names) for index in range(4)])
    assert (owned.sum(axis=0) == 1).all()  # disjoint and complete
    assert all(abs(count - 2_500) <= 100 for count in owned.sum(axis=1))
    assert Shard(0, 1).owns(names).all()  # one shard is every name


def test_documents_without_a_name_are_shard_zeros() -> None:
    names = np.array([None, "", "cell-a"], dtype=object)
    assert Shard(0, 3).owns(names)[:2].tolist() == [True, True]
    assert not any(Shard(index, 3).owns(names)[:2].any() for index in (1, 2))


def test_a_names_shard_is_the_same_in_every_process() -> None:
    """Python salts ``hash`` of a str per process: the shard must not depend on it."""
    names = [f"link-{i}" for i in range(50)]
    here = [shard_of(name, 7) for name in names]
    code = f"from tauxcharge_assets.data.shards import shard_of; print([shard_of(n, 7) for n in {names!r}])"
    for seed in ("1", "2"):
        out = subprocess.run([sys.executable, "-c", code], env={**os.environ, "PYTHONHASHSEED": seed},
                             capture_output=True, text=True, check=True).stdout  # fmt: skip
        assert out.strip() == str(here)


@pytest.mark.parametrize(("index", "count"), [(4, 4), (-1, 4), (0, 0)])
def test_an_impossible_shard_says_what_is_allowed(index: int, count: int) -> None:
    with pytest.raises(ValueError, match="the count must be at least 1 and the index in"):
        Shard(index, count)


class _Reader:
    def __init__(self, batch: DocumentBatch) -> None:
        self.batch = batch

    def window(self, *_args: object) -> tuple[DocumentBatch, DocumentBatch]:
        return self.batch, self.batch

    def since(self, *_args: object) -> DocumentBatch:
        return self.batch


def test_a_shard_reader_keeps_only_its_shards_documents() -> None:
    names = np.array(["a", "b", "c", "d", None, "a"], dtype=object)
    n = len(names)
    batch = DocumentBatch(names, np.arange(n, dtype=np.int64), np.arange(n, dtype=np.int64), np.ones(n))
    seen = []
    for index in range(3):
        shard = Shard(index, 3)
        older, recent = ShardReader(_Reader(batch), shard).window(None, None, None, None)
        since = ShardReader(_Reader(batch), shard).since(None, None, None, None)
        assert older.name.tolist() == recent.name.tolist() == since.name.tolist()
        assert all(shard_of(name, 3) == index for name in since.name)
        seen += since.name.tolist()
    assert sorted(seen, key=str) == sorted(names.tolist(), key=str)


def test_the_sharded_schedule_launches_one_run_per_shard_with_its_run_config(tmp_path: Path) -> None:
    schedule = sharded_tick_schedule(4, str(tmp_path))
    definitions = Definitions(assets=ALL_ASSETS, jobs=[tick_job], schedules=[schedule], resources=build_resources())
    context = build_schedule_context(
        scheduled_execution_time=datetime.datetime(2026, 11, 30, 12, 0, tzinfo=datetime.UTC),
        repository_def=definitions.get_repository_def(),
    )
    requests = schedule.evaluate_tick(context).run_requests
    assert [r.partition_key for r in requests] == ["2026-11-30-11:55"] * 4  # the window that just closed
    assert len({r.run_key for r in requests}) == 4
    assert [r.tags[SHARD_TAG] for r in requests] == ["0/4", "1/4", "2/4", "3/4"]
    for index, request in enumerate(requests):
        assert request.run_config["ops"]["raw_es_extract"]["config"] == {"shard_index": index, "shard_count": 4}
        io = request.run_config["resources"]["io_manager"]["config"]
        assert io == {"base_dir": str(tmp_path), "shard_index": index, "shard_count": 4}


DAYS = DailyPartitionsDefinition(start_date="2026-11-01")
_loaded_types: list[str] = []


@asset(partitions_def=DAYS, backfill_policy=BackfillPolicy.single_run())
def day_number(context: AssetExecutionContext) -> Output:
    return for_each_partition(context, lambda key, _last: _output(int(key[-2:])))


@asset(partitions_def=DAYS, backfill_policy=BackfillPolicy.single_run())
def day_square(context: AssetExecutionContext, day_number: object) -> Output:
    _loaded_types.append(type(day_number).__name__)
    return for_each_partition(context, lambda _key, _last, number: _output(number * number), day_number)


def _output(value: int) -> Output:
    return Output(value, metadata={"value": value})


def test_a_range_run_stores_one_file_per_partition_and_loads_them_one_at_a_time(tmp_path: Path) -> None:
    storage = str(tmp_path / "storage")
    manager = RetainedFilesystemIOManager(base_dir=storage, keep_latest=1, keep_written=1, keep_recent_s=0)
    _loaded_types.clear()
    result = materialize(
        [day_number, day_square],
        resources={"io_manager": manager},
        tags={RANGE_START_TAG: "2026-11-03", RANGE_END_TAG: "2026-11-07"},
    )
    assert result.success
    assert _loaded_types == [LazyPartitions.__name__]  # the range arrived lazily, not as a dict of values
    for day in range(3, 8):  # every partition of the range kept (just written), whatever keep_latest says
        with (tmp_path / "storage" / "day_square" / f"2026-11-0{day}").open("rb") as handle:
            assert pickle.load(handle) == day * day
    events = result.asset_materializations_for_node("day_square")
    assert {e.partition: e.metadata["value"].value for e in events} == {f"2026-11-0{d}": d * d for d in range(3, 8)}
    assert {e.metadata["partitions"].value for e in events} == {5}  # each partition's own, plus the range's
    single = materialize([day_number], resources={"io_manager": manager}, partition_key="2026-11-09")
    assert single.success and single.output_for_node("day_number") == 9
    kept = sorted(p.name for p in (tmp_path / "storage" / "day_number").iterdir() if not p.name.startswith("."))
    assert kept == [f"2026-11-0{d}" for d in (3, 4, 5, 6, 7, 9)]  # the leased range survives the retention rule
    expired = RetainedFilesystemIOManager(base_dir=storage, keep_latest=1, keep_written=1, keep_recent_s=0, lease_s=0)
    assert materialize([day_number], resources={"io_manager": expired}, partition_key="2026-11-10").success
    kept = sorted(p.name for p in (tmp_path / "storage" / "day_number").iterdir())
    assert kept == ["2026-11-10"]  # the lease expired (and went): the rule applies again


def test_a_sharded_run_keeps_its_outputs_in_its_own_folder(tmp_path: Path) -> None:
    manager = RetainedFilesystemIOManager(base_dir=str(tmp_path), shard_index=1, shard_count=4)
    assert materialize([day_number], resources={"io_manager": manager}, partition_key="2026-11-02").success
    assert (tmp_path / "day_number" / "@shard-1-of-4" / "2026-11-02").exists()
    assert not (tmp_path / "day_number" / "2026-11-02").exists()


def test_the_prefilter_sends_a_shard_its_known_names_and_every_name_not_known_yet(es_resource) -> None:
    """Known names of other shards never leave Elasticsearch; new names and nameless documents do, and
    ``take`` keeps this shard's: together the shards read every document exactly once."""
    client, index = es_resource.get_client(), es_resource.indices.metrics
    known = [f"known-{i}" for i in range(12)]
    new = [f"new-{i}" for i in range(6)]
    documents = [
        (f"d-{name}", {"name": name, "timestamp": "2026-11-30T00:00:00Z", "value": 1.0}) for name in known + new
    ]
    documents.append(("d-nameless", {"timestamp": "2026-11-30T00:00:00Z", "value": 1.0}))
    bulk_write(client, index, documents)
    seen: list[object] = []
    for number in range(3):
        shard = Shard(number, 3)
        query = {"bool": {"filter": [shard.prefilter(known)]}}
        sent = {hit["_source"].get("name") for hit in scan_pit(client, index, query)}
        assert sent >= {name for name in known if shard_of(name, 3) == number} | set(new) | {None}
        assert not sent & {name for name in known if shard_of(name, 3) != number}  # never sent
        kept = shard.take(DocumentBatch(np.array(sorted(sent, key=str), dtype=object), *[np.zeros(len(sent))] * 3))
        seen += kept.name.tolist()
    assert sorted(seen, key=str) == sorted([*known, *new, None], key=str)
    assert Shard(0, 1).prefilter(known) is None
