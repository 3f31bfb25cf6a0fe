"""Partition ranges: a backfill of N tick partitions as one Dagster run (``BackfillPolicy.single_run``).

Every tick asset computes one partition with one plain function. In a range run (a backfill launched
as one run from the UI, ``dagster asset materialize --partition-range`` or the ``backfill`` command)
each asset calls that same function for every partition of the range, oldest first, so a range run
equals the per-partition runs by construction; the state a tick leaves for the next (rolling window,
kept forecasts, detector checkpoints) goes through the same stores as between live ticks, within one
process (each store keeps the last one it saved in memory), and the ~1.2 s a Dagster run costs per
partition is paid once.

Memory stays bounded whatever the range's length: each partition's output is pickled to its own file
as soon as it is computed (``PartitionOutputs``), the IO manager moves those files to the partitions'
paths, and a downstream step loads one partition at a time (``LazyPartitions``). A 7-day range at
1,000 names holds one partition's objects, not 2,016. Disk does not stay small: every partition's
outputs stay on disk while the range runs (~11 MiB per partition at 1,000 names, most of it the 24 h
window each ``raw_es_extract`` partition carries; ~110 MiB at 10,000), so ``backfill
--partitions-per-run`` splits a long range into runs one after the other.
"""

from __future__ import annotations

import os
import pickle
import shutil
import tempfile
import time
from collections.abc import Callable, Iterator, Mapping
from functools import cache
from pathlib import Path
from typing import Any

from dagster import (
    AssetCheckResult,
    AssetExecutionContext,
    AssetsDefinition,
    BackfillPolicy,
    DagsterType,
    MetadataValue,
    Output,
    asset,
)

from tauxcharge_assets.defs.partitions import tick_partitions
from tauxcharge_assets.defs.resources import TICK_RETRY_POLICY
from tauxcharge_assets.settings import data_dir

PROGRESS_EVERY = 12  # a log line per hour of partitions
SPILL_MAX_AGE_S = 6 * 3600  # a spill folder untouched this long belongs to a run that died


def tick_asset(**kwargs: Any) -> Callable[[Callable[..., Any]], AssetsDefinition]:
    """``@asset`` for the tick: 5-minute partitions, the tick's retry policy, and backfills as one run."""
    return asset(
        retry_policy=TICK_RETRY_POLICY,
        partitions_def=tick_partitions,
        backfill_policy=BackfillPolicy.single_run(),
        **kwargs,
    )


class PartitionOutputs(Mapping[str, Any]):
    """A range's outputs, one spill file per partition written as soon as the value is computed."""

    def __init__(self) -> None:
        spill_root = data_dir() / "spill"
        spill_root.mkdir(parents=True, exist_ok=True)
        for stale in spill_root.iterdir():  # a run killed mid-range left its spill behind
            if time.time() - stale.stat().st_mtime > SPILL_MAX_AGE_S:
                shutil.rmtree(stale, ignore_errors=True)
        self.folder = Path(tempfile.mkdtemp(dir=spill_root))
        self._files: dict[str, Path] = {}

    def add(self, key: str, value: Any) -> None:
        path = self.folder / f"{len(self._files):06d}.pkl"
        with path.open("wb") as handle:
            pickle.dump(value, handle, protocol=pickle.HIGHEST_PROTOCOL)
        self._files[key] = path
        os.utime(self.folder)  # the folder's age says whether its run is still alive

    def __getitem__(self, key: str) -> Any:
        with self._files[key].open("rb") as handle:
            return pickle.load(handle)

    def __iter__(self) -> Iterator[str]:
        return iter(self._files)

    def __len__(self) -> int:
        return len(self._files)

    def move_to(self, paths: Mapping[str, Path]) -> None:
        """Each partition's file to its final path (a rename: nothing is pickled twice), then the spill folder goes."""
        missing = sorted(set(paths) - set(self._files))
        if missing:
            raise ValueError(f"the range output lacks partitions {missing[:3]} (of {len(missing)})")
        for key, target in paths.items():
            target.parent.mkdir(parents=True, exist_ok=True)
            shutil.move(str(self._files[key]), str(target))  # a rename on one filesystem
        shutil.rmtree(self.folder, ignore_errors=True)

    def __reduce__(self) -> Any:  # never pickled as a whole: it would copy every partition into one file
        raise TypeError("PartitionOutputs is stored partition by partition by the IO manager")


class LazyPartitions(Mapping[str, Any]):
    """A range's input: each partition's stored output, unpickled when asked for and not kept."""

    def __init__(self, paths: Mapping[str, Path], load: Callable[[Path], Any]) -> None:
        self.paths = dict(paths)
        self._load = load

    def __getitem__(self, key: str) -> Any:
        return self._load(self.paths[key])

    def __iter__(self) -> Iterator[str]:
        return iter(self.paths)

    def __len__(self) -> int:
        return len(self.paths)


def value_for(value: Any, key: str) -> Any:
    """One partition's value of an input: itself in a one-partition run, its entry in a range."""
    return value[key] if isinstance(value, LazyPartitions) else value


def for_each_partition(
    context: AssetExecutionContext,
    compute: Callable[..., Output],
    *inputs: Any,
    totals: tuple[str, ...] = (),
) -> Output:
    """``compute(key, is_last, *values)`` for each partition of the run, oldest first.

    One partition: its ``Output`` as is. A range: the outputs in a ``PartitionOutputs``; each partition's
    materialization gets that partition's own metadata (``add_asset_metadata``) plus the range's (its
    bounds, its seconds, the sums of the ``totals`` metadata keys); progress is logged.
    """
    keys = list(context.partition_keys)
    if len(keys) == 1:
        return compute(keys[0], True, *inputs)
    outputs, summed = PartitionOutputs(), dict.fromkeys(totals, 0)
    started = time.perf_counter()
    last: Output | None = None
    try:
        for i, key in enumerate(keys):
            last = compute(key, i == len(keys) - 1, *(value_for(value, key) for value in inputs))
            outputs.add(key, last.value)
            context.add_asset_metadata(dict(last.metadata), partition_key=key)
            for name in totals:
                summed[name] += _number(last.metadata.get(name))
            if (i + 1) % PROGRESS_EVERY == 0 or i + 1 == len(keys):
                elapsed = time.perf_counter() - started
                context.log.info(
                    f"{context.asset_key.to_user_string()}: {i + 1}/{len(keys)} partitions ({key}) in "
                    f"{elapsed:.1f} s, {elapsed / (i + 1):.3f} s each"
                )
    except BaseException:
        shutil.rmtree(outputs.folder, ignore_errors=True)
        raise
    assert last is not None
    return Output(
        outputs,
        metadata={
            "partitions": len(keys),
            "partition_range": f"{keys[0]} .. {keys[-1]}",
            "range_seconds": round(time.perf_counter() - started, 3),
            **{f"range_total_{name}": total for name, total in summed.items()},
        },
    )


def check_each_partition(context: Any, check: Callable[[str, Any], AssetCheckResult], value: Any) -> AssetCheckResult:
    """A check over every partition of the run: one partition's result as is; over a range, passed only
    when every partition passes, naming those that fail (a blocking check then stops the whole range)."""
    keys = list(context.partition_keys)
    if len(keys) == 1:
        return check(keys[0], value)
    failed: list[str] = []
    last: AssetCheckResult | None = None
    for key in keys:
        result = check(key, value_for(value, key))
        if not result.passed:
            failed.append(key)
            last = result
        elif last is None or last.passed:
            last = result
    assert last is not None
    return AssetCheckResult(
        passed=not failed,
        severity=last.severity,
        metadata={
            **last.metadata,
            "partitions_checked": len(keys),
            "partitions_failed": len(failed),
            "first_failed_partitions": MetadataValue.text(", ".join(failed[:10]) or "none"),
        },
    )


def _number(value: Any) -> float:
    raw = getattr(value, "value", value)
    return raw if isinstance(raw, int | float) and not isinstance(raw, bool) else 0


@cache
def one_or_range(python_type: type) -> DagsterType:
    """The Dagster type of a tick asset's input: one partition's ``python_type``, or a range's
    ``LazyPartitions`` of them (each loaded when used, so its entries are checked by the asset itself)."""
    return DagsterType(
        name=f"{python_type.__name__}OrRange",
        description=f"A {python_type.__name__}, or a partition range's LazyPartitions of them",
        type_check_fn=lambda _context, value: isinstance(value, python_type | LazyPartitions),
        typing_type=python_type,
    )
