"""Tick performance benchmark: our tick beside the naive one, on simulator data in the real Elasticsearch.

One command (see README, "Tick performance")::

    python benchmarks/tick_benchmark.py --markdown BENCHMARKS.md

loads 1,000 names x 14 days and 10,000 names x 3 days (once; reused afterwards) into a local server it
starts on port 9270, trains a small model, then times as medians of ``--runs`` runs, each scenario in
its own process (peak RSS = that process's high-water mark):

- steady: the latest partition's tick once the previous one has run (incremental read);
- cold: the same tick with no state (the whole 24 h window for every name);
- naive: one query per name for its last 288 values, one index request per forecast document;
- dagster run: ``tick_job`` executed as ``dagster job execute`` (process start, imports, run);
- backfill: one day (288 partitions) and seven days (2,016) through ``python -m tauxcharge_assets
  backfill`` (1,000 names): one Dagster run over the range (a single-run backfill);
- shards: the steady tick of the largest scale as 4 name shards, 4 processes at once (per-shard cost).

``--small`` is the CI version (20 names, 2 days, a few partitions, everything in this process: the
range run and two name shards included).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
REPO = HERE.parent
sys.path.insert(0, str(HERE))

STEP_MINUTES = 5


@dataclass
class Settings:
    scales: list[tuple[int, float]]  # (names, days)
    runs: int = 3
    end: str = "2026-11-23T00:00Z"
    url: str | None = None
    port: int = 9270
    home: Path = REPO / ".tauxcharge" / "tick_benchmark"
    backfill_partitions: int = 288
    backfill_days: tuple[int, ...] = (1, 7)  # each a range of backfill_partitions x days, one run
    backfill_names: int = 1000
    shards: int = 4  # name shards of the largest scale's steady tick; 0: not measured
    naive_max_names: int = 1000
    dagster_runs: bool = True
    backfill_functions: bool = False
    steady_only: bool = False  # only the steady tick, with its stage timers (a quick look after a change)
    only: tuple[str, ...] = ()  # of SCENARIOS: run just these after the steady tick (empty: all)
    stub_model: bool = False  # CI: a last-value forecaster instead of the trained LSTM (no TensorFlow)
    in_process: bool = False
    training: dict[str, Any] = field(
        default_factory=lambda: {"epochs": 1, "training_days": 2.0, "sample_stride": 12, "max_training_windows": 30000}
    )


SCENARIOS = ("cold", "new_worker", "naive", "dagster", "shards", "backfill")


def dataset_prefix(names: int) -> str:
    return f"tickbench-{names // 1000}k" if names % 1000 == 0 else f"tickbench-{names}"


def prepare_environment(settings: Settings) -> None:
    """Everything the bench writes goes under ``settings.home``; set before tauxcharge_assets is imported.

    Child processes also get a bytecode cache under the home (``PYTHONPYCACHEPREFIX``): an installation
    without compiled bytecode (uv's default; ``PYTHONDONTWRITEBYTECODE`` set) would otherwise compile
    Dagster and TensorFlow from source in every run process, which no real deployment does.
    """
    import pandas as pd

    settings.home.mkdir(parents=True, exist_ok=True)
    dagster_home = settings.home / "dagster_home"
    dagster_home.mkdir(exist_ok=True)
    (dagster_home / "dagster.yaml").write_text("telemetry:\n  enabled: false\n")
    start = (pd.Timestamp(settings.end) - pd.Timedelta(days=40)).strftime("%Y-%m-%d")
    os.environ.update(
        {
            "TAUXCHARGE_HOME": str(settings.home),
            "DAGSTER_HOME": str(dagster_home),
            "TAUXCHARGE_PARTITIONS_START": start,
            "PYTHONPYCACHEPREFIX": str(settings.home / "pycache"),
        }
    )
    os.environ.pop("PYTHONDONTWRITEBYTECODE", None)
    os.environ.pop("MLFLOW_TRACKING_URI", None)


def partition_keys(end: str, count: int) -> list[str]:
    """The keys of the ``count`` partitions whose windows end at or before ``end``, oldest first."""
    import pandas as pd

    from tauxcharge_assets.defs.partitions import partition_key_ending_at

    stop = pd.Timestamp(end)
    return [partition_key_ending_at(stop - i * pd.Timedelta(minutes=STEP_MINUTES)) for i in range(count)][::-1]


def partition_end(key: str):
    from tauxcharge_assets.defs.partitions import tick_window

    return tick_window(key).end


def anomaly_lookback() -> int:
    """Slots of earlier forecasts the anomaly step reads (from its default configuration)."""
    from tauxcharge_assets.defs.serving.assets import AnomalyConfig

    config = AnomalyConfig()
    return max(config.forecast_lookback_slots, config.evaluated_slots)


def ensure_model(settings: Settings, prefix: str) -> str:
    """A champion trained on ``prefix``'s data (small config: the model's quality is not measured here)."""
    import pandas as pd
    from tick_scenarios import resources

    from tauxcharge_assets.cli.runner import train
    from tauxcharge_assets.defs.model.assets import TrainingConfig
    from tauxcharge_assets.model.registry import champion_version, latest_version, promote
    from tauxcharge_assets.settings import default_mlflow_tracking_uri

    os.environ["TAUXCHARGE_INDEX_PREFIX"] = prefix
    uri, name = default_mlflow_tracking_uri(), "tauxcharge-load-lstm"
    until = pd.Timestamp(settings.end) - pd.Timedelta(hours=2)
    marker = settings.home / "model.json"
    wanted = {"prefix": prefix, "train_until": until.isoformat(), "training": settings.training}
    version = champion_version(uri, name)
    if version and marker.exists() and json.loads(marker.read_text()) == wanted:
        return version
    config = {k: v for k, v in settings.training.items() if k in TrainingConfig.model_fields}
    started = time.perf_counter()
    train(resources(), until, None, **config)
    latest = latest_version(uri, name)
    if latest is None:
        raise RuntimeError("training registered no model version")
    if champion_version(uri, name) != latest["version"]:
        promote(uri, name, latest["version"])  # the gate may keep a 1-epoch model out: promote it anyway
    marker.write_text(json.dumps(wanted))
    print(f"trained model version {latest['version']} in {time.perf_counter() - started:.0f} s", flush=True)
    return latest["version"]


# Runs the measured command as its own child and reports that child's peak RSS. Linux hands a parent's
# RSS at fork to the exec'ed child's ``ru_maxrss`` (a harness that trained a model in-process would
# make every scenario look 1.6 GiB large); this small launcher is the parent the command forks from.
_PEAK_RSS_LAUNCHER = (
    "import os, subprocess, sys\n"
    "child = subprocess.Popen(sys.argv[2:])\n"
    "_, status, usage = os.wait4(child.pid, 0)\n"
    "open(sys.argv[1], 'w').write(str(usage.ru_maxrss))\n"
    "sys.exit(os.waitstatus_to_exitcode(status))\n"
)


def run_process(command: list[str], env: dict[str, str]) -> tuple[float, float, int]:
    """(wall seconds, peak RSS MiB, exit code) of a child process, from ``wait4``'s rusage in a launcher."""
    with tempfile.TemporaryFile() as log, tempfile.NamedTemporaryFile("r", suffix=".rss") as rss:
        # a file, not a pipe: Dagster's logs would fill a pipe and block
        started = time.perf_counter()
        launcher = [sys.executable, "-c", _PEAK_RSS_LAUNCHER, rss.name, *command]
        process = subprocess.Popen(launcher, env=env, cwd=REPO, stdout=log, stderr=subprocess.STDOUT)
        code = process.wait()
        wall = time.perf_counter() - started
        if code:
            log.seek(0)
            tail = log.read().decode(errors="replace")[-3000:]
            raise RuntimeError(f"{' '.join(command)} failed ({code}):\n{tail}")
        peak_kib = int(rss.read() or 0)
    return wall, peak_kib / 1024, code


def incremental_equals_cold(prefix: str, key: str) -> bool:
    """The window the steady ticks built incrementally for ``key`` against a cold read of it, cleaned."""
    from tauxcharge_assets.data.cleaning import clean_window
    from tauxcharge_assets.elastic.client import connect
    from tauxcharge_assets.elastic.indices import IndexNames
    from tauxcharge_assets.window.incremental import ElasticsearchReader, cold_window
    from tauxcharge_assets.window.store import WindowStore

    index = IndexNames(prefix).metrics
    end = partition_end(key)
    stored = WindowStore.for_index(index).load(end)
    if stored is None:
        return False
    cold, _ = cold_window(ElasticsearchReader(connect(os.environ["TAUXCHARGE_ES_URL"]), index), end)
    a, b = clean_window(stored), clean_window(cold)
    return bool(a.values.equals(b.values) and a.observed.equals(b.observed) and a.counts == b.counts)


def scenario(name: str, keys: list[str], warmup: list[str], prefix: str, settings: Settings, profile: bool) -> dict:
    """One scenario of ``tick_scenarios`` in its own process (or this one with ``in_process``)."""
    env = {**os.environ, "TAUXCHARGE_INDEX_PREFIX": prefix}
    if settings.in_process:
        import tick_scenarios

        os.environ["TAUXCHARGE_INDEX_PREFIX"] = prefix
        if name == "backfill_functions":
            return tick_scenarios.run_backfill_functions(keys)
        if name == "dagster_inprocess":
            return tick_scenarios.run_dagster_inprocess(keys, warmup)
        return tick_scenarios.run_ticks(name, keys, warmup, profile)
    with tempfile.NamedTemporaryFile(suffix=".json", delete=False) as handle:
        out = Path(handle.name)
    command = [sys.executable, str(HERE / "tick_scenarios.py"), name, "--keys", ",".join(keys), "--out", str(out)]
    command += ["--warmup", ",".join(warmup)] + (["--profile"] if profile else [])
    wall, rss, _ = run_process(command, env)
    result = json.loads(out.read_text())
    out.unlink()
    return {**result, "process_seconds": wall, "peak_rss_mib": rss}


def dagster_runs(keys: list[str], warmup: list[str], prefix: str) -> dict:
    """``tick_job`` as a scheduled run executes it: a fresh process per run (imports, model load, steps)."""
    env = {**os.environ, "TAUXCHARGE_INDEX_PREFIX": prefix}
    runs = []
    for i, key in enumerate([*warmup, *keys]):
        command = [sys.executable, "-m", "dagster", "job", "execute", "-m", "tauxcharge_assets.definitions"]
        command += ["-j", "tick_job", "--tags", json.dumps({"dagster/partition": key})]
        wall, rss, _ = run_process(command, env)
        if i >= len(warmup):
            runs.append({"key": key, "total": wall, "peak_rss_mib": rss})
    return {"runs": runs, "peak_rss_mib": max(r["peak_rss_mib"] for r in runs)}


def backfill_run(keys: list[str], prefix: str) -> dict:
    """The operator's backfill command over ``keys``: one Dagster run over the range, one process."""
    env = {**os.environ, "TAUXCHARGE_INDEX_PREFIX": prefix}
    command = [sys.executable, "-m", "tauxcharge_assets", "backfill", "--start", keys[0], "--end", keys[-1]]
    command += ["--partitions-per-run", str(len(keys))]  # the whole range as one run
    wall, rss, _ = run_process(command, env)
    return {"total": wall, "partitions": len(keys), "peak_rss_mib": rss}


def sharded_ticks(keys: list[str], warmup: list[str], prefix: str, count: int, settings: Settings) -> dict:
    """The steady tick as ``count`` name shards, each in its own process, all started together (in this
    process one after the other with ``in_process``); each shard warms up on ``warmup`` first."""
    env = {**os.environ, "TAUXCHARGE_INDEX_PREFIX": prefix}
    if settings.in_process:
        import tick_scenarios

        os.environ["TAUXCHARGE_INDEX_PREFIX"] = prefix
        started = time.perf_counter()
        shards = [tick_scenarios.run_ticks("steady", keys, warmup, False, (i, count)) for i in range(count)]
        return {"count": count, "wall_s": time.perf_counter() - started, "shards": [summarise(r) for r in shards]}
    outs, processes = [], []
    started = time.perf_counter()
    for index in range(count):
        with tempfile.NamedTemporaryFile(suffix=".json", delete=False) as handle:
            outs.append(Path(handle.name))
        command = [sys.executable, str(HERE / "tick_scenarios.py"), "shard", "--shard", f"{index}/{count}"]
        command += ["--keys", ",".join(keys), "--warmup", ",".join(warmup), "--out", str(outs[-1])]
        processes.append(subprocess.Popen(command, env=env, cwd=REPO, stdout=subprocess.DEVNULL))
    codes = [process.wait() for process in processes]
    wall = time.perf_counter() - started
    if any(codes):
        raise RuntimeError(f"a shard's process failed: exit codes {codes}")
    results = [json.loads(out.read_text()) for out in outs]
    for out in outs:
        out.unlink()
    return {"count": count, "wall_s": wall, "shards": [summarise(r) for r in results]}


def storage_per_partition(key: str, prefix: str) -> dict[str, int]:
    """Bytes the tick assets left on disk for one partition (IO manager outputs), plus the kept windows."""
    import pandas as pd

    from tauxcharge_assets.elastic.indices import IndexNames
    from tauxcharge_assets.settings import data_dir
    from tauxcharge_assets.window.store import WindowStore

    sizes: dict[str, int] = {}
    storage = data_dir() / "storage"
    for asset in (
        "raw_es_extract",
        "cleaned_series",
        "encoded_names",
        "sequence_tensors",
        "forecasts",
        "anomaly_report",
    ):
        path = storage / asset / key
        sizes[asset] = path.stat().st_size if path.exists() else 0
    window = WindowStore.for_index(IndexNames(prefix).metrics).path_for(partition_end(key))
    sizes["rolling_window_state"] = window.stat().st_size if window.exists() else 0
    from tauxcharge_assets.window.kept_forecasts import store_for

    kept = store_for(IndexNames(prefix).forecasts).path_for(partition_end(key) + pd.Timedelta(minutes=STEP_MINUTES))
    sizes["one_step_forecast_state"] = kept.stat().st_size if kept.exists() else 0
    return sizes


def clear_kept_state(indices: Any) -> None:
    """Start every scale without kept windows, as its fresh forecast index (a rerun of the bench included)."""
    import shutil

    from tauxcharge_assets.window.kept_forecasts import store_for
    from tauxcharge_assets.window.store import WindowStore

    for store in (WindowStore.for_index(indices.metrics), store_for(indices.forecasts)):
        shutil.rmtree(store.root, ignore_errors=True)


def median(values: list[float]) -> float:
    return float(statistics.median(values)) if values else float("nan")


def summarise(result: dict) -> dict:
    """Medians of the total and of every stage over the timed runs."""
    runs = result.get("runs", [])
    stages = sorted({stage for run in runs for stage in run.get("stages", {})})
    return {
        "median_s": median([run["total"] for run in runs]),
        "without_anomalies_median_s": median(
            [run["total"] - run.get("stages", {}).get("anomalies", 0.0) for run in runs]
        ),
        "runs_s": [round(run["total"], 3) for run in runs],
        "stages_median_s": {s: median([run.get("stages", {}).get(s, 0.0) for run in runs]) for s in stages},
        "peak_rss_mib": result.get("peak_rss_mib"),
        "reads": [run.get("read") for run in runs],
        "peak_rss_after_stage_mib": {
            s: max(run.get("rss_after", {}).get(s, 0.0) for run in runs)
            for s in sorted({s for run in runs for s in run.get("rss_after", {})})
        },
    }


def run_benchmark(settings: Settings, log=print) -> dict:
    """Everything above, at every scale; returns the results (``tick_report`` renders them)."""
    prepare_environment(settings)
    import pandas as pd
    from tick_data import Dataset, ensure_loaded, prime_forecasts, reset_outputs

    from tauxcharge_assets.elastic import server as es_server
    from tauxcharge_assets.elastic.client import connect

    started_server = None
    url = settings.url
    if url is None:
        local = es_server.LocalServer(port=settings.port, heap_mb=1024)
        if es_server.cluster_health(local.url) is None:
            started_server = local  # ours to stop at the end; one already running stays up
        url = es_server.start(local)
    os.environ["TAUXCHARGE_ES_URL"] = url
    client = connect(url, request_timeout_s=600)
    end = pd.Timestamp(settings.end)
    datasets = [Dataset(dataset_prefix(n), n, days, end) for n, days in settings.scales]
    results: dict[str, Any] = {"settings": {**settings.__dict__, "home": str(settings.home)}, "scales": {}}
    for dataset in datasets:
        results["scales"][str(dataset.n_names)] = {"documents_loaded": ensure_loaded(client, dataset, log=True)}
    if settings.stub_model:
        import tick_scenarios

        tick_scenarios.use_stub_model()
        model_version = "stub"
    else:
        model_version = ensure_model(settings, min(datasets, key=lambda d: d.n_names).prefix)
    results["model_version"] = model_version
    keys = partition_keys(settings.end, settings.runs + 2)
    prime, warm, timed = keys[:1], keys[1:2], keys[2:]
    for dataset in datasets:
        scale = results["scales"][str(dataset.n_names)]
        prefix = dataset.prefix
        backfill = dataset.n_names == settings.backfill_names or (settings.in_process and dataset is datasets[0])
        # The backfills cover the partitions just before the timed ones: no stored state precedes them.
        backfill_end = (end - (settings.runs + 2) * pd.Timedelta(minutes=STEP_MINUTES)).isoformat()
        day = partition_keys(backfill_end, settings.backfill_partitions)
        first = keys[0]
        reset_outputs(client, dataset)
        clear_kept_state(dataset.indices)
        scale["primed_forecasts"] = prime_forecasts(
            client, dataset, partition_end(first) - anomaly_lookback() * pd.Timedelta(minutes=STEP_MINUTES), end
        )
        log(f"[{dataset.n_names} names] steady ...")
        scenario("steady", prime, [], prefix, settings, profile=False)  # a cold tick, in a process of its own
        steady = scenario("steady", timed, warm, prefix, settings, profile=True)
        scale["steady"], scale["profile"] = summarise(steady), steady.get("profile", "")
        if settings.steady_only:
            continue
        scale["incremental_equals_cold"] = incremental_equals_cold(prefix, timed[-1])

        def wanted(name: str) -> bool:
            return not settings.only or name in settings.only

        if wanted("cold"):
            log(f"[{dataset.n_names} names] cold ...")
            scale["cold"] = summarise(scenario("cold", timed, [], prefix, settings, profile=False))
        if wanted("new_worker"):
            # The window ending on the hour before the timed ticks is kept in Elasticsearch by the tick ending
            # then; each timed tick starts with no local state at all, as on a new machine.
            hour = (partition_end(timed[0]) - pd.Timedelta(minutes=STEP_MINUTES)).floor("h")
            log(f"[{dataset.n_names} names] new worker ...")
            from tauxcharge_assets.defs.partitions import partition_key_ending_at

            on_the_hour = [partition_key_ending_at(hour)]
            scale["new_worker"] = summarise(scenario("new_worker", timed, on_the_hour, prefix, settings, False))
        if dataset.n_names <= settings.naive_max_names and wanted("naive"):
            log(f"[{dataset.n_names} names] naive ...")
            scale["naive"] = summarise(scenario("naive", timed, [], prefix, settings, profile=False))
        if settings.dagster_runs and wanted("dagster"):
            log(f"[{dataset.n_names} names] dagster runs ...")
            if settings.in_process:
                scale["dagster_run"] = summarise(scenario("dagster_inprocess", timed, warm, prefix, settings, False))
            else:
                scale["dagster_run"] = summarise(dagster_runs(timed, warm, prefix))
            scale["storage_bytes"] = storage_per_partition(timed[-1], prefix)
        if settings.shards and dataset is datasets[-1] and wanted("shards"):
            log(f"[{dataset.n_names} names] {settings.shards} name shards at once ...")
            scale["shards"] = sharded_ticks(timed, [*prime, *warm], prefix, settings.shards, settings)
        if backfill and wanted("backfill"):
            log(f"[{dataset.n_names} names] backfill of {len(day)} partitions ...")
            if settings.in_process or settings.backfill_functions:
                scale["backfill_functions"] = scenario("backfill_functions", day, [], prefix, settings, False)
            if settings.in_process:
                import tick_scenarios

                clear_kept_state(dataset.indices)
                scale["backfill_range_inprocess"] = tick_scenarios.run_range_inprocess(day)
            elif settings.dagster_runs:
                for days in settings.backfill_days:
                    keys_of_range = partition_keys(backfill_end, settings.backfill_partitions * days)
                    log(f"[{dataset.n_names} names] backfill of {days} day(s): {len(keys_of_range)} partitions ...")
                    clear_kept_state(dataset.indices)
                    scale[f"backfill_dagster_{days}d"] = backfill_run(keys_of_range, prefix)
    if started_server is not None:
        es_server.stop(started_server)
    return results


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--scales", default="1000:14,10000:3", help="names:days pairs, comma-separated")
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--url", help="an Elasticsearch to use instead of starting one on --port")
    parser.add_argument("--port", type=int, default=9270)
    parser.add_argument("--end", default="2026-11-23T00:00Z", help="end of the simulated data")
    parser.add_argument("--backfill-partitions", type=int, default=288, help="partitions in a day's backfill")
    parser.add_argument("--backfill-days", default="1,7", help="comma-separated lengths (days) of the backfills")
    parser.add_argument("--shards", type=int, default=4, help="name shards of the largest scale's tick (0: none)")
    parser.add_argument("--naive-max-names", type=int, default=1000, help="skip the naive tick above this scale")
    parser.add_argument("--no-dagster", action="store_true", help="skip the Dagster runs and the Dagster backfill")
    parser.add_argument("--backfill-functions", action="store_true", help="also time the backfill without Dagster")
    parser.add_argument("--small", action="store_true", help="the CI version: 20 names x 2 days, in this process")
    parser.add_argument("--steady-only", action="store_true", help="only the steady tick; prints its stage timers")
    parser.add_argument("--only", default="", help=f"after the steady tick, only these of {', '.join(SCENARIOS)}")
    parser.add_argument("--json", help="write the raw results here")
    parser.add_argument("--markdown", help="replace the 'Tick performance at 10,000 names' section of this file")
    args = parser.parse_args()
    scales = [(int(n), float(d)) for n, d in (pair.split(":") for pair in args.scales.split(","))]
    settings = Settings(
        scales=scales,
        runs=args.runs,
        url=args.url,
        port=args.port,
        end=args.end,
        backfill_partitions=args.backfill_partitions,
        backfill_days=tuple(int(d) for d in args.backfill_days.split(",") if d),
        shards=args.shards,
        naive_max_names=args.naive_max_names,
        dagster_runs=not args.no_dagster,
        backfill_functions=args.backfill_functions,
        steady_only=args.steady_only,
        only=tuple(name for name in args.only.split(",") if name),
    )
    if args.small:
        settings = small_settings(settings)
    command = " ".join(["python", "benchmarks/tick_benchmark.py", *sys.argv[1:]])
    results = run_benchmark(settings, log=lambda line: print(line, flush=True))
    import tick_report

    results["command"] = command
    results["machine"] = tick_report.machine()
    if args.json:
        Path(args.json).write_text(json.dumps(results, indent=2, default=str))
    if settings.steady_only:
        for names, scale in results["scales"].items():
            print(f"{names} names, steady tick:", json.dumps(scale["steady"], indent=1, default=str))
            print(scale["profile"])
        return
    text = tick_report.render(results)
    print(text)
    if args.markdown:
        tick_report.replace_section(Path(args.markdown), text)


def small_settings(settings: Settings) -> Settings:
    """The CI version: tiny data, one process, a few partitions; checks structure, not speed."""
    import pandas as pd

    settings.scales = [(20, 2.0)]
    settings.runs = 1
    settings.backfill_partitions = 3
    settings.backfill_names = 20
    settings.shards = 2
    settings.in_process = True
    settings.home = Path(tempfile.mkdtemp(prefix="tickbench-small-"))
    settings.stub_model = True
    settings.end = (pd.Timestamp.now(tz="UTC").floor("h") - pd.Timedelta(days=1)).isoformat()
    return settings


if __name__ == "__main__":
    main()
