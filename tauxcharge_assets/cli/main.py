"""Command line: ``python -m tauxcharge_assets es|simulate|load-nab|demo|backfill|detect|promote``."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import pandas as pd


def _es(args: argparse.Namespace) -> int:
    from tauxcharge_assets.elastic import server as es_server

    local = es_server.LocalServer(port=args.port)
    if args.action == "start":
        print(es_server.start(local))
    elif args.action == "stop":
        print("stopped" if es_server.stop(local) else "not running")
    else:
        print(json.dumps(es_server.status(local)))
    return 0


def _simulate(args: argparse.Namespace) -> int:
    from tauxcharge_assets.cli.demo import load_simulation
    from tauxcharge_assets.cli.runner import ensure_elasticsearch
    from tauxcharge_assets.data.simulator import SimulationSpec
    from tauxcharge_assets.defs.resources import elasticsearch_from_env

    ensure_elasticsearch()
    resource = elasticsearch_from_env().process_config_and_initialize()
    end = pd.Timestamp(args.end, tz="UTC") if args.end else pd.Timestamp.now(tz="UTC").floor("5min")
    spec = SimulationSpec(
        n_names=args.names, days=args.days, end=end, seed=args.seed, recent_anomalies=args.recent_anomalies
    )
    written = load_simulation(resource, spec, Path(args.labels))
    print(f"wrote {written} documents; labels in {args.labels}")
    return 0


def _load_nab(args: argparse.Namespace) -> int:
    from tauxcharge_assets.cli.runner import ensure_elasticsearch
    from tauxcharge_assets.data import nab
    from tauxcharge_assets.defs.resources import elasticsearch_from_env
    from tauxcharge_assets.elastic.bulk import bulk_write

    ensure_elasticsearch()
    resource = elasticsearch_from_env().process_config_and_initialize()
    series = nab.read_directory(Path(args.input))
    written = bulk_write(resource.get_client(), resource.indices.metrics, nab.documents(series))
    print(f"wrote {written} documents for {len(series)} names")
    return 0


def _demo(args: argparse.Namespace) -> int:
    from tauxcharge_assets.cli.demo import print_report, run_demo

    end = pd.Timestamp(args.end, tz="UTC") if args.end else None
    result = run_demo(n_names=args.names, days=args.days, end=end, replay_slots=args.replay_slots)
    print_report(result)
    return 0


def _backfill(args: argparse.Namespace) -> int:
    from dagster import PartitionKeyRange

    from tauxcharge_assets.cli.runner import dagster_instance, ensure_elasticsearch, materialize_ticks, tick_resources
    from tauxcharge_assets.defs.partitions import tick_partitions
    from tauxcharge_assets.defs.resources import elasticsearch_from_env, mlflow_from_env

    ensure_elasticsearch()
    keys = tick_partitions.get_partition_keys_in_range(PartitionKeyRange(args.start, args.end))
    print(f"backfilling {len(keys)} partitions {keys[0]} .. {keys[-1]}", flush=True)
    materialize_ticks(keys, tick_resources(elasticsearch_from_env(), mlflow_from_env()), dagster_instance())
    print("done")
    return 0


def _detect(args: argparse.Namespace) -> int:
    from tauxcharge_assets.data.simulator import SimulationSpec, simulate
    from tauxcharge_assets.detection import labelled_files, scoring
    from tauxcharge_assets.model.network import ModelHyperparameters

    simulated = None
    if args.pretrain_names and not args.model:
        spec = SimulationSpec(
            n_names=args.pretrain_names, days=args.pretrain_days, end=pd.Timestamp("2026-01-05", tz="UTC")
        )
        simulated = simulate(spec).values
    written = labelled_files.detect_directory(
        Path(args.input),
        Path(args.output),
        scoring.ScoringConfig(),
        ModelHyperparameters(epochs=args.epochs),
        model=labelled_files.load_detector_model(Path(args.model)) if args.model else None,
        simulated=simulated,
        detector_name=args.detector_name,
    )
    print(f"wrote {len(written)} result files to {args.output}")
    return 0


def _promote(args: argparse.Namespace) -> int:
    from tauxcharge_assets.defs.resources import mlflow_from_env
    from tauxcharge_assets.model.registry import champion_version, promote

    mlflow = mlflow_from_env().process_config_and_initialize()
    before = champion_version(mlflow.tracking_uri, mlflow.registered_model_name)
    promote(mlflow.tracking_uri, mlflow.registered_model_name, args.version)
    print(f"champion of {mlflow.registered_model_name}: version {before} -> {args.version} (manual override)")
    return 0


def main(argv: list[str] | None = None) -> int:
    import warnings

    from dagster import BetaWarning, PreviewWarning

    warnings.filterwarnings("ignore", category=PreviewWarning)  # partitioned asset checks are "preview"
    warnings.filterwarnings("ignore", category=BetaWarning)
    from tauxcharge_assets.data.nab import DEFAULT_NAB_DIR
    from tauxcharge_assets.settings import data_dir

    parser = argparse.ArgumentParser(prog="python -m tauxcharge_assets")
    commands = parser.add_subparsers(dest="command", required=True)
    es = commands.add_parser("es", help="manage the local Elasticsearch")
    es.add_argument("action", choices=["start", "stop", "status"])
    es.add_argument("--port", type=int, default=9200)
    es.set_defaults(handler=_es)
    sim = commands.add_parser("simulate", help="load simulated load rates into the metrics index")
    sim.add_argument("--names", type=int, default=50)
    sim.add_argument("--days", type=float, default=14.0)
    sim.add_argument("--end", help="ISO timestamp of the end of the data (default: now)")
    sim.add_argument("--seed", type=int, default=7)
    sim.add_argument("--recent-anomalies", type=int, default=0)
    sim.add_argument("--labels", default=str(data_dir() / "simulator_labels.json"))
    sim.set_defaults(handler=_simulate)
    load = commands.add_parser("load-nab", help="load the NAB realAWSCloudwatch CSVs into the metrics index")
    load.add_argument("--input", default=str(DEFAULT_NAB_DIR))
    load.set_defaults(handler=_load_nab)
    demo = commands.add_parser("demo", help="run the main job end to end and print the results")
    demo.add_argument("--names", type=int, default=50)
    demo.add_argument("--days", type=float, default=14.0)
    demo.add_argument("--end", help="ISO timestamp the demo ends at (default: today 00:00 UTC)")
    demo.add_argument("--replay-slots", type=int, default=12)
    demo.set_defaults(handler=_demo)
    backfill = commands.add_parser(
        "backfill", help="materialize the tick assets for a range of past partitions, one run each, in one process"
    )
    backfill.add_argument("--start", required=True, help="first partition key, e.g. 2026-11-22-23:00")
    backfill.add_argument("--end", required=True, help="last partition key (inclusive)")
    backfill.set_defaults(handler=_backfill)
    detect = commands.add_parser(
        "detect", help="score labelled CSVs causally and write NAB-layout results (timestamp,value,anomaly_score)"
    )
    detect.add_argument("--input", default=str(DEFAULT_NAB_DIR), help="folder of timestamp,value CSVs")
    detect.add_argument("--output", required=True, help="folder for <detector>_<file>.csv results")
    detect.add_argument("--detector-name", default="tauxcharge")
    detect.add_argument("--epochs", type=int, default=6)
    detect.add_argument(
        "--model", help="prefix of a model saved by labelled_files.save_detector_model (default: train one)"
    )
    detect.add_argument("--pretrain-names", type=int, default=30, help="simulated series to pre-train on (0: none)")
    detect.add_argument("--pretrain-days", type=float, default=7.0)
    detect.set_defaults(handler=_detect)
    promote = commands.add_parser(
        "promote", help="point the champion alias at a registered version by hand (bypasses the backtest gate)"
    )
    promote.add_argument("--version", required=True)
    promote.set_defaults(handler=_promote)
    args = parser.parse_args(argv)
    return int(args.handler(args))


if __name__ == "__main__":
    sys.exit(main())
