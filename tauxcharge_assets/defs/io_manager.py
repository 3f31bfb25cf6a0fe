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

import pickle
from pathlib import Path
from typing import Any

from dagster import ConfigurableIOManagerFactory, InputContext, OutputContext, UPathIOManager
from pydantic import Field
from upath import UPath

from tauxcharge_assets.window.retention import outside_retention


class RetainedPickleIOManager(UPathIOManager):
    """Pickles each output to ``<base>/<asset>/<partition key>`` (Dagster's public ``UPathIOManager``
    lays the paths out), then applies the retention rule to that asset's partitions."""

    def __init__(self, base_path: UPath, keep_latest: int, keep_written: int) -> None:
        super().__init__(base_path=base_path)
        self.keep_latest = keep_latest
        self.keep_written = keep_written

    def dump_to_path(self, context: OutputContext, obj: Any, path: UPath) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        with path.open("wb") as handle:
            pickle.dump(obj, handle, protocol=pickle.HIGHEST_PROTOCOL)
        if context.has_asset_partitions:
            folder = Path(str(path)).parent
            for old in outside_retention(
                (f for f in folder.iterdir() if f.is_file()), self.keep_latest, self.keep_written
            ):
                old.unlink(missing_ok=True)

    def load_from_path(self, context: InputContext, path: UPath) -> Any:
        with path.open("rb") as handle:
            return pickle.load(handle)


class RetainedFilesystemIOManager(ConfigurableIOManagerFactory):
    """Pickles outputs under ``base_dir`` like ``FilesystemIOManager``, with a retention rule per asset."""

    base_dir: str = Field(description="Folder of the pickled outputs: <base_dir>/<asset>/<partition key>")
    keep_latest: int = Field(default=2, description="Partitions with the latest keys kept per asset")
    keep_written: int = Field(default=2, description="Most recently written partitions kept per asset")

    def create_io_manager(self, context: Any) -> RetainedPickleIOManager:
        return RetainedPickleIOManager(UPath(self.base_dir), self.keep_latest, self.keep_written)
