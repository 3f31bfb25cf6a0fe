"""A filesystem IO manager whose per-partition outputs are bounded by a retention rule.

Each 5-minute partition of the tick assets pickles its outputs (at 10,000 names: ~25 MB for the
cleaned grid, ~23 MB for the sequences, ~10 MB for the forecasts): kept forever, that is over 15 GB
a day. After writing a partition's output, the files of the same asset are pruned to the
``keep_latest`` partitions with the latest keys (the live ticks) plus the ``keep_written`` most
recently written ones (a running backfill). Unpartitioned outputs (the model) are never pruned.

A pruned output can no longer be loaded by a later run of a downstream step alone (re-execution
from failure of an old partition); materializing the partition again recreates it.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from dagster import ConfigurableIOManagerFactory, OutputContext
from dagster._core.storage.fs_io_manager import PickledObjectFilesystemIOManager
from pydantic import Field
from upath import UPath


def prune_partition_files(folder: Path, keep_latest: int, keep_written: int) -> list[Path]:
    """Delete the partition files of ``folder`` outside the retention rule; returns the deleted ones."""
    files = sorted(path for path in folder.iterdir() if path.is_file()) if folder.is_dir() else []
    keep = set(files[-keep_latest:]) if keep_latest > 0 else set()
    if keep_written > 0:
        keep |= set(sorted(files, key=_mtime)[-keep_written:])
    deleted = [path for path in files if path not in keep]
    for path in deleted:
        path.unlink(missing_ok=True)
    return deleted


def _mtime(path: Path) -> float:
    try:
        return path.stat().st_mtime
    except FileNotFoundError:
        return 0.0


class _RetainedPickleIOManager(PickledObjectFilesystemIOManager):
    def __init__(self, base_dir: str, keep_latest: int, keep_written: int) -> None:
        super().__init__(base_dir=base_dir)
        self.keep_latest = keep_latest
        self.keep_written = keep_written

    def dump_to_path(self, context: OutputContext, obj: Any, path: UPath) -> None:
        super().dump_to_path(context, obj, path)
        if context.has_asset_partitions and context.has_asset_key:
            prune_partition_files(Path(str(path)).parent, self.keep_latest, self.keep_written)


class RetainedFilesystemIOManager(ConfigurableIOManagerFactory):
    """Pickles outputs under ``base_dir`` like ``FilesystemIOManager``, with a retention rule per asset."""

    base_dir: str = Field(description="Folder of the pickled outputs: <base_dir>/<asset>/<partition key>")
    keep_latest: int = Field(default=2, description="Partitions with the latest keys kept per asset")
    keep_written: int = Field(default=2, description="Most recently written partitions kept per asset")

    def create_io_manager(self, context: Any) -> _RetainedPickleIOManager:
        return _RetainedPickleIOManager(self.base_dir, self.keep_latest, self.keep_written)
