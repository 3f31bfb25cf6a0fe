"""A filesystem IO manager whose per-partition outputs are bounded by a retention rule.

Each 5-minute partition of the tick assets pickles its outputs (at 10,000 names: ~25 MB for the
cleaned grid, ~23 MB for the sequences, ~10 MB for the forecasts): kept forever, that is over 15 GB
a day. After writing a partition's output, the files of the same asset are pruned to the
``keep_latest`` partitions with the latest keys (the live ticks) plus the ``keep_written`` most
recently written ones (a running backfill). Unpartitioned outputs (the model) are never pruned.

A pruned output can no longer be loaded by a later run of a downstream step alone (re-execution
from failure of an old partition); materializing the partition again recreates it.

Several processes may write the same folder at once (a backfill beside the live ticks, two runs of
one partition), so each output is written to a temporary file and renamed over its path: a reader
finds the previous output or the new one, never half a file. Files written in the last
``keep_recent_s`` seconds are never pruned: a concurrent backfill's newer files once deleted a live
run's output between its write and its read (``test_concurrency``).

A range run (``defs.ranges``: a backfill as one run) hands over a ``PartitionOutputs``: each
partition's file is moved to that partition's path, and a downstream step of the range gets a
``LazyPartitions`` that loads one partition at a time. A range's steps may read its files long after
they were written (a 7-day range spends minutes per asset), so the range leaves a lease in the asset's
folder (``.range-<first>--<last>``): no prune deletes a partition inside a lease touched in the last
``lease_s`` seconds, and every step that loads the range touches it again.
"""

from __future__ import annotations

import os
import pickle
import tempfile
import time
from pathlib import Path
from typing import Any

from dagster import ConfigurableIOManagerFactory, InputContext, OutputContext, UPathIOManager
from pydantic import Field
from upath import UPath

from tauxcharge_assets.data.shards import UNSHARDED, Shard
from tauxcharge_assets.defs.ranges import LazyPartitions, PartitionOutputs
from tauxcharge_assets.window.retention import modified_time, outside_retention

TEMPORARY_SUFFIX = ".tmp"
LEASE_PREFIX, LEASE_SEPARATOR = ".range-", "--"


class RetainedPickleIOManager(UPathIOManager):
    """Pickles each output to ``<base>/<asset>/<partition key>`` (Dagster's public ``UPathIOManager``
    lays the paths out), then applies the retention rule to that asset's partitions."""

    def __init__(
        self,
        base_path: UPath,
        keep_latest: int,
        keep_written: int,
        keep_recent_s: float,
        shard: Shard = UNSHARDED,
        lease_s: float = 3600.0,
    ) -> None:
        super().__init__(base_path=base_path)
        self.root = base_path
        self.shard = shard
        self.keep_latest = keep_latest
        self.keep_written = keep_written
        self.keep_recent_s = keep_recent_s
        self.lease_s = lease_s

    def handle_output(self, context: OutputContext, obj: Any) -> None:
        if not (context.has_asset_partitions and len(context.asset_partition_keys) > 1):
            return super().handle_output(context, obj)
        if not isinstance(obj, PartitionOutputs):
            raise TypeError(
                f"{context.asset_key.to_user_string()}: a run over {len(context.asset_partition_keys)} partitions "
                "must return a PartitionOutputs (defs.ranges.for_each_partition), not a "
                f"{type(obj).__name__}"
            )
        keys = list(context.asset_partition_keys)
        paths = {key: Path(str(self._partition_path(context, key))) for key in keys}
        folder = next(iter(paths.values())).parent
        folder.mkdir(parents=True, exist_ok=True)
        _lease(folder, keys).touch()  # before the move: a concurrent prune never sees the range unleased
        obj.move_to(paths)
        self.prune(folder)

    def load_input(self, context: InputContext) -> Any:
        if not (context.has_asset_key and context.has_asset_partitions and len(context.asset_partition_keys) > 1):
            return super().load_input(context)
        keys = list(context.asset_partition_keys)
        paths = {key: Path(str(self._partition_path(context, key))) for key in keys}
        lease = _lease(next(iter(paths.values())).parent, keys)
        if lease.exists():
            lease.touch()  # this step reads the range from now on: keep it leased
        missing = [key for key, path in paths.items() if not path.exists()]
        if missing:
            raise FileNotFoundError(
                f"{context.asset_key.to_user_string()}: no stored output for {len(missing)} partitions of the range "
                f"(first {missing[0]}); materialize them again"
            )
        return LazyPartitions(paths, _unpickle)

    def get_path_for_partition(self, context: InputContext | OutputContext, path: UPath, partition: str) -> UPath:
        """``<asset>/<partition>``; a name shard's run keeps its own: ``<asset>/@shard-i-of-n/<partition>``."""
        folder = path / self.shard.suffix if self.shard.sharded else path
        return super().get_path_for_partition(context, folder, partition)

    def _partition_path(self, context: OutputContext | InputContext, key: str) -> UPath:
        return self.get_path_for_partition(context, self.root.joinpath(*context.asset_key.path), key)

    def dump_to_path(self, context: OutputContext, obj: Any, path: UPath) -> None:
        target = Path(str(path))
        target.parent.mkdir(parents=True, exist_ok=True)
        with tempfile.NamedTemporaryFile("wb", dir=target.parent, suffix=TEMPORARY_SUFFIX, delete=False) as handle:
            try:
                pickle.dump(obj, handle, protocol=pickle.HIGHEST_PROTOCOL)
            except BaseException:
                handle.close()
                os.unlink(handle.name)
                raise
        os.replace(handle.name, target)
        if context.has_asset_partitions:
            self.prune(target.parent)

    def prune(self, folder: Path) -> None:
        """The retention rule over the folder's outputs; another writer's file still being written (a
        temporary one) is left alone unless it is an hour old (its writer died)."""
        files = [f for f in folder.iterdir() if f.is_file()]  # a shard's folder is pruned by that shard's runs
        leased: list[tuple[str, str]] = []
        for lease in (f for f in files if f.name.startswith(LEASE_PREFIX)):
            if time.time() - modified_time(lease) > self.lease_s:
                lease.unlink(missing_ok=True)
            else:
                first, _, last = lease.name[len(LEASE_PREFIX) :].partition(LEASE_SEPARATOR)
                leased.append((first, last))
        outputs = [
            f
            for f in files
            if not f.name.endswith(TEMPORARY_SUFFIX)
            and not f.name.startswith(LEASE_PREFIX)
            and not any(first <= f.name <= last for first, last in leased)  # keys sort as time does
        ]
        for old in outside_retention(outputs, self.keep_latest, self.keep_written, self.keep_recent_s):
            old.unlink(missing_ok=True)
        for stale in (f for f in files if f.name.endswith(TEMPORARY_SUFFIX)):
            if time.time() - modified_time(stale) > 3600:
                stale.unlink(missing_ok=True)

    def load_from_path(self, context: InputContext, path: UPath) -> Any:
        return _unpickle(Path(str(path)))


def _lease(folder: Path, keys: list[str]) -> Path:
    return folder / f"{LEASE_PREFIX}{min(keys)}{LEASE_SEPARATOR}{max(keys)}"


def _unpickle(path: Path) -> Any:
    with path.open("rb") as handle:
        return pickle.load(handle)


class RetainedFilesystemIOManager(ConfigurableIOManagerFactory):
    """Pickles outputs under ``base_dir`` like ``FilesystemIOManager``, with a retention rule per asset."""

    base_dir: str = Field(description="Folder of the pickled outputs: <base_dir>/<asset>/<partition key>")
    keep_latest: int = Field(default=2, description="Partitions with the latest keys kept per asset")
    keep_written: int = Field(default=2, description="Most recently written partitions kept per asset")
    keep_recent_s: float = Field(
        default=300.0,
        description="Outputs written this recently are kept: a concurrent run may still read them (a Dagster "
        "tick at 10,000 names takes ~20 s)",
    )

    lease_s: float = Field(
        default=3600.0, description="A range run's outputs are kept this long after its last step touched them"
    )
    shard_index: int = Field(default=0, description="The name shard of the run (set by shard_run_config)")
    shard_count: int = Field(default=1, description="How many name shards; 1: outputs at <asset>/<partition>")

    def create_io_manager(self, context: Any) -> RetainedPickleIOManager:
        shard = Shard(self.shard_index, self.shard_count)
        return RetainedPickleIOManager(
            UPath(self.base_dir), self.keep_latest, self.keep_written, self.keep_recent_s, shard, self.lease_s
        )
