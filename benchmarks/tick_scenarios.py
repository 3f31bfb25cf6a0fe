"""The measured scenarios of the tick benchmark; each runs in its own process for an honest peak RSS.

``python benchmarks/tick_scenarios.py SCENARIO --keys K1,K2,... --out result.json`` with the bench
environment set (``TAUXCHARGE_ES_URL``, ``TAUXCHARGE_INDEX_PREFIX``, ``TAUXCHARGE_HOME``, ...) by
``tick_benchmark.py``. A scenario times every listed partition after running ``--warmup`` first (the
previous partition, so a steady tick finds its state), and writes one JSON document.

The function-level tick calls the six tick assets directly (the code a Dagster run executes, without
the run machinery); timers wrapped around a few calls split the forecast and anomaly steps into
inference, write-back and Elasticsearch reads.
"""

from __future__ import annotations

import contextlib
import cProfile
import functools
import io
import json
import os
import pstats
import resource
import sys
import time
import warnings
from collections import defaultdict
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import numpy as np

warnings.filterwarnings("ignore")
sys.path.insert(0, str(Path(__file__).resolve().parent))

STAGES = ["fetch", "clean", "encode", "sequences", "forecast", "anomalies"]


class Timers:
    """Seconds per stage, and per wrapped call inside a stage (``forecast.inference``...)."""

    def __init__(self) -> None:
        self.seconds: dict[str, float] = defaultdict(float)
        self.peak_rss_mib: dict[str, float] = {}  # process high-water mark when each stage ended
        self.current = ""
        self._restore: list[tuple[object, str, object]] = []

    @contextlib.contextmanager
    def stage(self, name: str) -> Iterator[None]:
        self.current = name
        started = time.perf_counter()
        try:
            yield
        finally:
            self.seconds[name] += time.perf_counter() - started
            self.peak_rss_mib[name] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
            self.current = ""

    def wrap(self, owner: object, attribute: str, label: str) -> None:
        original = getattr(owner, attribute, None)
        if original is None:
            return

        def timed(*args: Any, **kwargs: Any) -> Any:
            started = time.perf_counter()
            try:
                return original(*args, **kwargs)
            finally:
                self.seconds[f"{self.current}.{label}"] += time.perf_counter() - started

        self._restore.append((owner, attribute, original))
        setattr(owner, attribute, timed)

    def unwrap(self) -> None:
        for owner, attribute, original in reversed(self._restore):
            setattr(owner, attribute, original)
        self._restore.clear()


def resources() -> dict[str, object]:
    """The bench's resources, with plain values (no EnvVar) so direct invocation needs no run."""
    from tauxcharge_assets.defs.io_manager import RetainedFilesystemIOManager
    from tauxcharge_assets.defs.resources import AlertWebhookResource, ElasticsearchResource, MlflowResource
    from tauxcharge_assets.settings import data_dir, default_mlflow_tracking_uri

    return {
        "elasticsearch": ElasticsearchResource(
            url=os.environ["TAUXCHARGE_ES_URL"], index_prefix=os.environ["TAUXCHARGE_INDEX_PREFIX"]
        ),
        "mlflow": MlflowResource(tracking_uri=default_mlflow_tracking_uri()),
        "alerts": AlertWebhookResource(),  # off: the benchmark times the tick, not a receiver
        "io_manager": RetainedFilesystemIOManager(base_dir=str(data_dir() / "storage")),
    }


class StubForecastModel:
    """The last value as every quantile, +-1: the forecast asset's interface without TensorFlow (CI only)."""

    horizon = 12

    def batch_for(
        self, names: object, name_ids: np.ndarray, values: np.ndarray, mask: np.ndarray, origin: object
    ) -> np.ndarray:
        return np.asarray(values, dtype=np.float64)

    def predict_quantiles(self, batch: np.ndarray) -> np.ndarray:
        last = np.repeat(batch[:, -1:], self.horizon, axis=1)
        return np.stack([last - 1.0, last, last + 1.0], axis=-1)

    def forecast_tick(
        self, names: list[str], name_ids: np.ndarray, values: np.ndarray, mask: np.ndarray, origin: object
    ) -> tuple[np.ndarray, np.ndarray]:
        quantiles = self.predict_quantiles(self.batch_for(names, name_ids, values, mask, origin))
        return quantiles, np.full(len(names), "lstm")

    def unseen_count(self, names: list[str]) -> int:
        return 0


def use_stub_model() -> None:
    """Make the forecasts asset use ``StubForecastModel`` in this process."""
    from tauxcharge_assets.defs.resources import MlflowResource

    MlflowResource.champion_version = lambda *_: "stub"
    MlflowResource.load_model = lambda *_: StubForecastModel()


def instrument(timers: Timers) -> None:
    from tauxcharge_assets.defs.resources import MlflowResource
    from tauxcharge_assets.defs.serving import assets as serving
    from tauxcharge_assets.detection import report
    from tauxcharge_assets.detection.checkpoints import CheckpointStore

    timers.wrap(serving, "bulk_write", "write")
    timers.wrap(report, "bulk_write", "write_anomalies")
    timers.wrap(report, "fetch_forecasts", "read_forecasts")
    timers.wrap(MlflowResource, "load_model", "load_model")
    timers.wrap(serving, "forecast_plot", "plot")
    timers.wrap(serving, "forecast_frame", "frame")
    timers.wrap(report, "score_tick", "score")
    timers.wrap(report.kept_forecasts, "carry_forward", "keep_forecasts")
    timers.wrap(CheckpointStore, "load", "load_checkpoint")
    timers.wrap(CheckpointStore, "save", "save_checkpoint")
    from tauxcharge_assets.window.store import WindowStore

    timers.wrap(WindowStore, "save", "save_state")
    timers.wrap(WindowStore, "load", "load_state")
    with contextlib.suppress(ImportError):
        from tauxcharge_assets.model import forecaster

        timers.wrap(forecaster.ForecastModel, "predict_quantiles", "inference")
        timers.wrap(forecaster.ForecastModel, "batch_for", "batch")


@functools.cache
def _instance() -> object:
    """One ephemeral instance per process: direct invocation would otherwise build one per call (~0.5 s)."""
    from dagster import DagsterInstance

    return DagsterInstance.ephemeral()


def tick(
    key: str, res: dict[str, object], timers: Timers, incremental: bool = True, shard: tuple[int, int] = (0, 1)
) -> dict[str, object]:
    """The six tick assets for one partition, called directly, in dependency order (of one name shard's names)."""
    from dagster import build_asset_context

    from tauxcharge_assets.defs.features.assets import encoded_names, sequence_tensors
    from tauxcharge_assets.defs.ingest.assets import CleaningConfig, ExtractConfig, cleaned_series, raw_es_extract
    from tauxcharge_assets.defs.serving import assets as serving

    def context():
        return build_asset_context(partition_key=key, resources=res, instance=_instance())

    with timers.stage("fetch"):
        extract = ExtractConfig(incremental=incremental, shard_index=shard[0], shard_count=shard[1])
        raw = raw_es_extract(context(), config=extract)
    with timers.stage("clean"):
        cleaned = cleaned_series(context(), config=CleaningConfig(), raw_es_extract=raw.value).value
    with timers.stage("encode"):
        ids = encoded_names(context(), cleaned_series=cleaned).value
    with timers.stage("sequences"):
        sequences = sequence_tensors(context(), cleaned_series=cleaned, encoded_names=ids).value
    with timers.stage("forecast"):
        frame = serving.forecasts(context(), sequence_tensors=sequences).value
    with timers.stage("anomalies"):
        serving.anomaly_report(
            context(), config=serving.AnomalyConfig(incremental=incremental), cleaned_series=cleaned, forecasts=frame
        )
    return {"read": raw.metadata["read"].value, "documents_read": raw.metadata["documents_read"].value}


def naive_tick(key: str, res: dict[str, object], timers: Timers) -> dict[str, object]:
    """The same tick with one query per name and one index request per forecast document."""
    import tick_naive
    from dagster import build_asset_context

    from tauxcharge_assets.data.cleaning import clean_series
    from tauxcharge_assets.defs.features.assets import encoded_names, sequence_tensors
    from tauxcharge_assets.defs.partitions import tick_window
    from tauxcharge_assets.defs.serving import assets as serving

    es = res["elasticsearch"]
    client, index = es.get_client(), es.indices.metrics
    window = tick_window(key)

    def context():
        return build_asset_context(partition_key=key, resources=res, instance=_instance())

    with timers.stage("fetch"):
        names = tick_naive.list_names(client, index, window.read_start, window.end)
        raw = tick_naive.fetch_per_name(client, index, names, window.read_start, window.end)
    with timers.stage("clean"):
        cleaned = clean_series(raw, window.read_start, window.end)
    with timers.stage("encode"):
        ids = encoded_names(context(), cleaned_series=cleaned).value
    with timers.stage("sequences"):
        sequences = sequence_tensors(context(), cleaned_series=cleaned, encoded_names=ids).value
    batched_write = serving.bulk_write

    def write_one_by_one(client: object, index: str, documents: object, **_: object) -> int:
        started = time.perf_counter()
        try:
            return tick_naive.write_one_by_one(client, index, documents)
        finally:
            timers.seconds["forecast.write"] += time.perf_counter() - started

    serving.bulk_write = write_one_by_one
    try:
        with timers.stage("forecast"):
            serving.forecasts(context(), sequence_tensors=sequences)
    finally:
        serving.bulk_write = batched_write
    return {"read": "per name", "documents_read": len(raw)}


def run_ticks(
    scenario: str, keys: list[str], warmup: list[str], profile: bool, shard: tuple[int, int] = (0, 1)
) -> dict[str, object]:
    """Warm-up partitions untimed, then every key timed separately; returns per-run stage seconds."""
    res = resources()
    runner: Callable[[str, dict[str, object], Timers], dict[str, object]]
    if scenario == "naive":
        runner = naive_tick
    else:
        incremental = scenario != "cold"

        def runner(key: str, res: dict[str, object], timers: Timers) -> dict[str, object]:
            return tick(key, res, timers, incremental=incremental, shard=shard)

    for key in warmup:
        runner(key, res, Timers())
    runs = []
    profile_text = ""
    for key in keys:
        if scenario == "new_worker":
            forget_local_state()
        timers = Timers()
        instrument(timers)
        started = time.perf_counter()
        try:
            info = runner(key, res, timers)
        finally:
            timers.unwrap()
        total = time.perf_counter() - started
        runs.append(
            {"key": key, "total": total, **info, "stages": dict(timers.seconds), "rss_after": timers.peak_rss_mib}
        )
    if profile and keys:  # the last key once more, under the profiler, outside the timed runs
        profiler = cProfile.Profile()
        profiler.enable()
        try:
            runner(keys[-1], res, Timers())
        finally:
            profiler.disable()
        out = io.StringIO()
        pstats.Stats(profiler, stream=out).sort_stats("tottime").print_stats(15)
        profile_text = out.getvalue()
    return {"runs": runs, "profile": profile_text}


def forget_local_state() -> None:
    """What a new worker lacks: every window, kept forecast and detector checkpoint on local disk."""
    import shutil

    from tauxcharge_assets.settings import data_dir

    for folder in ("rolling_window", "forecast_window", "detector_state"):
        shutil.rmtree(data_dir() / folder, ignore_errors=True)


def run_backfill_functions(keys: list[str]) -> dict[str, object]:
    """A backfill with the functions only: the first partition cold, then each one from its predecessor."""
    res = resources()
    started = time.perf_counter()
    reads: dict[str, int] = defaultdict(int)
    for key in keys:
        reads[str(tick(key, res, Timers())["read"])] += 1
    return {"total": time.perf_counter() - started, "partitions": len(keys), "reads": dict(reads)}


def run_range_inprocess(keys: list[str]) -> dict[str, object]:
    """The tick assets over ``keys`` as one Dagster run in this process (a single-run backfill)."""
    from dagster import DagsterInstance

    from tauxcharge_assets.cli.runner import materialize_range

    started = time.perf_counter()
    run_id = materialize_range(keys[0], keys[-1], resources(), DagsterInstance.get())
    return {"total": time.perf_counter() - started, "partitions": len(keys), "run_id": run_id}


def run_dagster_inprocess(keys: list[str], warmup: list[str]) -> dict[str, object]:
    """The tick assets materialized as Dagster runs in this process (no process start), like the backfill CLI."""
    from dagster import DagsterInstance, materialize

    from tauxcharge_assets.definitions import ALL_ASSETS, ALL_CHECKS
    from tauxcharge_assets.defs.serving.jobs import TICK_ASSETS

    res, instance = resources(), DagsterInstance.get()
    quiet = {"loggers": {"console": {"config": {"log_level": "WARNING"}}}}
    runs = []
    for i, key in enumerate([*warmup, *keys]):
        started = time.perf_counter()
        result = materialize(
            [*ALL_ASSETS, *ALL_CHECKS],
            selection=TICK_ASSETS,
            partition_key=key,
            resources=res,
            instance=instance,
            run_config=quiet,
        )
        if i >= len(warmup):
            runs.append({"key": key, "total": time.perf_counter() - started, "success": result.success})
    return {"runs": runs}


def main() -> None:
    import argparse

    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument(
        "scenario",
        choices=["steady", "cold", "new_worker", "naive", "shard", "backfill_functions", "dagster_inprocess"],
    )
    parser.add_argument("--keys", required=True, help="comma-separated partition keys to time")
    parser.add_argument("--warmup", default="", help="comma-separated partition keys run first, untimed")
    parser.add_argument("--profile", action="store_true")
    parser.add_argument("--shard", default="0/1", help="INDEX/COUNT: the name shard a 'shard' scenario ticks")
    parser.add_argument("--out", required=True)
    args = parser.parse_args()
    keys, warmup = args.keys.split(","), [k for k in args.warmup.split(",") if k]
    if args.scenario == "backfill_functions":
        result = run_backfill_functions(keys)
    elif args.scenario == "dagster_inprocess":
        result = run_dagster_inprocess(keys, warmup)
    else:
        index, count = (int(part) for part in args.shard.split("/"))
        scenario = "steady" if args.scenario == "shard" else args.scenario
        result = run_ticks(scenario, keys, warmup, args.profile, shard=(index, count))
    result["peak_rss_mib"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    Path(args.out).write_text(json.dumps(result, indent=2, default=str))


if __name__ == "__main__":
    main()
