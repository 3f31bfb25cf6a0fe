"""Command line: ``python -m tauxcharge_assets es|simulate|load-nab|ingest|demo|backfill|detect|dashboard|promote``.

Parsing imports nothing heavy (no Dagster, TensorFlow, MLflow or pandas), so ``--help`` answers at
once: each command imports what it needs when it runs. Expected failures print one line and exit
non-zero (``cli/errors.py``); long steps show progress (``cli/progress.py``).
"""

from __future__ import annotations

import argparse
import json
import os
import socket
import sys
import traceback
import warnings
from collections.abc import Callable
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

from tauxcharge_assets.cli import errors, progress
from tauxcharge_assets.cli.errors import EXIT_UNAVAILABLE, EXIT_USAGE, UserFacingError
from tauxcharge_assets.cli.progress import Step

if TYPE_CHECKING:
    from elasticsearch import Elasticsearch

    from tauxcharge_assets.defs.resources import ElasticsearchResource

PROG = "python -m tauxcharge_assets"
PARTITION_KEY_FORMAT = "%Y-%m-%d-%H:%M"  # defs.partitions.PARTITION_KEY_FORMAT, without importing Dagster
DEFAULT_ES_PORT = 9200  # elastic.server.DEFAULT_PORT
# settings.REPO_ROOT and data.nab.DEFAULT_NAB_DIR, computed here because settings imports pandas (about a
# second); tests/test_cli.py checks they agree.
REPO_ROOT = Path(__file__).resolve().parents[2]
DEFAULT_NAB_DIR = REPO_ROOT.parent / "shared" / "data" / "nab" / "realAWSCloudwatch"

T = TypeVar("T")


def data_folder() -> Path:
    """``settings.data_dir()`` without creating it (help must not write) and without importing pandas."""
    return Path(os.environ.get("TAUXCHARGE_HOME", REPO_ROOT / ".tauxcharge")).resolve()


# ---------------------------------------------------------------------------------------------------
# Argument types: checked at parse time (exit 2 with usage) with the standard library only.


def _whole_number(text: str, least: int, most: int | None = None) -> int:
    try:
        value = int(text)
    except ValueError:
        value = least - 1
    if value < least or (most is not None and value > most):
        bounds = f"from {least} to {most}" if most is not None else f"of at least {least}"
        raise argparse.ArgumentTypeError(f"expected a whole number {bounds}, got {text!r}")
    return value


def _positive_int(text: str) -> int:
    return _whole_number(text, 1)


def _non_negative_int(text: str) -> int:
    return _whole_number(text, 0)


def _port(text: str) -> int:
    return _whole_number(text, 1, 65535 - 100)  # the transport port is port + 100


def _positive_float(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        value = float("nan")
    if not value > 0:
        raise argparse.ArgumentTypeError(f"expected a number above 0, got {text!r}")
    return value


def _timestamp(text: str) -> str:
    try:
        datetime.fromisoformat(text)
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"{text!r} is not an ISO 8601 timestamp, e.g. 2026-01-05T00:00 (UTC unless it has an offset)"
        ) from None
    return text


def _partition_key(text: str) -> str:
    try:
        datetime.strptime(text, PARTITION_KEY_FORMAT)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a partition key: expected YYYY-MM-DD-HH:MM") from None
    return text


def _header_from_env(text: str) -> tuple[str, str]:
    header, separator, variable = text.partition("=")
    if not separator or not header.strip() or not variable.strip() or ":" in header:
        raise argparse.ArgumentTypeError(
            f"expected HEADER=ENVIRONMENT_VARIABLE, e.g. Authorization=METRICS_AUTH, got {text!r} "
            "(the value is read from the variable, never given on the command line)"
        )
    return header.strip(), variable.strip()


# ---------------------------------------------------------------------------------------------------
# Helpers shared by the commands.


def _quiet_libraries(debug: bool) -> None:
    """Keep third-party start-up chatter out of what the user reads; ``--debug`` lets it through.

    Environment variables are read by TensorFlow and MLflow when they are imported, which happens
    later, inside the commands. Python warnings come from libraries (Dagster's preview/beta markers,
    deprecations inside TensorFlow and MLflow): they are for their developers, not our users.
    """
    os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")  # "Downloading artifacts" bars
    if debug:
        return
    # TensorFlow's C++ logs (CPU features, "failed call to cuInit"...). Set, not defaulted: model/network.py
    # sets "2" (errors shown) in any process that imports it, and its children inherit that.
    os.environ["TF_CPP_MIN_LOG_LEVEL"] = "3"
    # "Creating initial MLflow database tables...", "Failed to resolve installed pip version"
    os.environ.setdefault("MLFLOW_LOGGING_LEVEL", "ERROR")
    if not sys.warnoptions:  # an explicit -W or PYTHONWARNINGS wins
        warnings.simplefilter("ignore")


def _quiet_tensorflow(debug: bool) -> None:
    """Import TensorFlow without its start-up lines, and set its Python logging (absl) to ERROR.

    TensorFlow 2.21 logs through C++ absl before that is initialised ("All log messages before
    absl::InitializeLog() ...", "Could not find cuda drivers ..."): straight to file descriptor 2, past
    TF_CPP_MIN_LOG_LEVEL. So the import runs with descriptor 2 on /dev/null; an import error is still
    raised (and shown) once it is restored.
    """
    if debug:
        return
    try:
        import absl.logging
    except ImportError:
        return
    absl.logging.set_verbosity(absl.logging.ERROR)
    sys.stderr.flush()
    saved = os.dup(2)
    devnull = os.open(os.devnull, os.O_WRONLY)
    try:
        os.dup2(devnull, 2)
        import tensorflow  # noqa: F401
    finally:
        os.dup2(saved, 2)
        os.close(saved)
        os.close(devnull)


def _elasticsearch(attempts: int) -> ElasticsearchResource:
    """The configured server (started locally on demand), its resource with ``attempts`` health checks."""
    from tauxcharge_assets.cli.runner import ensure_elasticsearch
    from tauxcharge_assets.defs.resources import elasticsearch_from_env

    ensure_elasticsearch()
    return elasticsearch_from_env(connect_attempts=attempts)


def metrics_settings() -> tuple[str | None, str | None, str]:
    """(URL, API key, index prefix) from the variables ``defs.resources.elasticsearch_from_env`` reads;
    URL None: the local server. ``tests/test_ingestion.py`` checks that both agree."""
    return (
        os.environ.get("TAUXCHARGE_ES_URL") or None,
        os.environ.get("TAUXCHARGE_ES_API_KEY") or None,
        os.environ.get("TAUXCHARGE_INDEX_PREFIX", "tauxcharge"),
    )


def _metrics_index(attempts: int) -> tuple[Elasticsearch, str]:
    """A healthy client and the metrics index, without Dagster: ``ingest`` only writes metrics, and the
    resource's module costs 4 s of imports (12 s on a busy machine: the definitions, MLflow, scikit-learn)
    that a puller started by cron or a test would pay each time."""
    from tauxcharge_assets.elastic import server
    from tauxcharge_assets.elastic.client import connect
    from tauxcharge_assets.elastic.indices import IndexNames, ensure_indices

    url, api_key, prefix = metrics_settings()
    if url is None:  # as cli/runner.ensure_elasticsearch: the local server, started on demand
        url = os.environ["TAUXCHARGE_ES_URL"] = server.start()
    client = connect(url, api_key, attempts=attempts)
    indices = IndexNames(prefix)
    ensure_indices(client, indices)
    return client, indices.metrics


def _input_folder(text: str, expected: str) -> Path:
    folder = Path(text)
    if not folder.exists():
        raise UserFacingError(f"{folder}: no such folder; pass --input a folder of {expected}.", EXIT_USAGE)
    if not folder.is_dir():
        raise UserFacingError(f"{folder}: not a folder; pass --input a folder of {expected}.", EXIT_USAGE)
    return folder


def _read_folder(folder: Path, read: Callable[[Path], T], expected: str) -> dict[str, T]:
    """Every CSV of ``folder`` by file stem; the first bad file stops it with one line naming it."""
    paths = sorted(folder.glob("*.csv"))
    if not paths:
        raise UserFacingError(f"No CSV files in {folder}: pass --input a folder of {expected}.", EXIT_USAGE)
    read_files: dict[str, T] = {}
    for path in paths:
        try:
            read_files[path.stem] = read(path)
        except (ValueError, OSError) as error:  # pandas' parser errors and UnicodeDecodeError are ValueErrors
            message = errors.one_line(str(error))
            if str(path) not in message:  # the reader's own checks name the file; pandas' errors do not
                message = f"{path}: {message}; expected {expected}: fix the file or move it out of the folder."
            raise UserFacingError(message, EXIT_USAGE) from error
    return read_files


def _port_owner_problem(port: int) -> str | None:
    """Why the local server cannot start on ``port``: a port of its own taken by something else."""
    from tauxcharge_assets.elastic import server as es_server

    local = es_server.LocalServer(port=port)
    if es_server.cluster_health(local.url) is not None or es_server.recorded_pid(local) is not None:
        return None  # an Elasticsearch answers, or our server's process runs: not a stranger's port
    for taken, role in ((port, "HTTP"), (port + 100, "transport")):
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
            probe.settimeout(1.0)
            if probe.connect_ex(("127.0.0.1", taken)) == 0:
                return (
                    f"Port {taken} on 127.0.0.1 (the {role} port for --port {port}) is in use by something that "
                    f"is not Elasticsearch: stop it, or choose another port with --port (and set "
                    f"TAUXCHARGE_ES_URL=http://127.0.0.1:<port> for the other commands)."
                )
    return None


# ---------------------------------------------------------------------------------------------------
# The commands.


def _es(args: argparse.Namespace) -> int:
    from tauxcharge_assets.elastic import server as es_server

    local = es_server.LocalServer(port=args.port)
    if args.action == "start":
        if es_server.cluster_health(local.url) is not None:
            print(es_server.start(local))  # already up: reused at once
            return 0
        problem = _port_owner_problem(args.port)
        if problem:
            raise UserFacingError(problem, EXIT_UNAVAILABLE)
        with Step(f"Starting Elasticsearch on {local.url}"):
            url = es_server.start(local)
        print(url)
    elif args.action == "stop":
        print("stopped" if es_server.stop(local) else "not running")
    else:
        print(json.dumps(es_server.status(local)))
    return 0


def _simulate(args: argparse.Namespace) -> int:
    import pandas as pd

    from tauxcharge_assets.cli.demo import load_simulation
    from tauxcharge_assets.data.simulator import SimulationSpec
    from tauxcharge_assets.settings import to_utc

    resource = _elasticsearch(args.es_attempts).process_config_and_initialize()
    client = resource.get_client()  # an unreachable server fails now, not after the simulation
    if args.live:
        return _simulate_live(args, resource, client)
    end = to_utc(args.end) if args.end else pd.Timestamp.now(tz="UTC").floor("5min")
    spec = SimulationSpec(
        n_names=args.names, days=args.days, end=end, seed=args.seed, recent_anomalies=args.recent_anomalies
    )
    written = load_simulation(resource, spec, Path(args.labels))
    print(f"wrote {written} documents; labels in {args.labels}")
    return 0


def _simulate_live(args: argparse.Namespace, resource: Any, client: Any) -> int:
    import pandas as pd

    from tauxcharge_assets.cli.live import live_simulation, run_live
    from tauxcharge_assets.elastic.queries import newest_timestamp

    started = pd.Timestamp.now(tz="UTC")
    days = max(1, int(-(-args.days // 1)))
    with Step(f"Simulating {args.names} names, {days} days back to {args.days_ahead} days ahead"):
        simulation = live_simulation(args.names, args.seed, started, days, args.days_ahead)
    newest = newest_timestamp(client, resource.indices.metrics)
    since = newest if newest is not None else simulation.values.index[0] - pd.Timedelta(minutes=5)
    print(
        f"writing what arrives every {args.interval_s:g} s after {since.isoformat()} to "
        f"{resource.indices.metrics} (Ctrl-C stops)",
        flush=True,
    )
    rounds = run_live(
        resource,
        simulation,
        since,
        interval_s=args.interval_s,
        rounds=args.rounds,
        report=lambda done: print(f"{done.until.isoformat()}: wrote {done.written} documents", flush=True),
    )
    print(f"{len(rounds)} rounds, {sum(r.written for r in rounds)} documents")
    return 0


def _load_nab(args: argparse.Namespace) -> int:
    from tauxcharge_assets.data import nab
    from tauxcharge_assets.elastic.bulk import bulk_write

    expected = "NAB timestamp,value CSVs (the realAWSCloudwatch folder)"
    series = _read_folder(_input_folder(args.input, expected), nab.read_series, expected)
    resource = _elasticsearch(args.es_attempts).process_config_and_initialize()
    client = resource.get_client()
    total = sum(len(frame) for frame in series.values())
    with Step(f"Writing to {resource.indices.metrics}", total=total, unit="doc") as step:
        written = bulk_write(client, resource.indices.metrics, step.wrap(nab.documents(series)))
    print(f"wrote {written} documents for {len(series)} names")
    return 0


def _mapping(args: argparse.Namespace, noun: str, name: str | None) -> Any:
    """The ``FieldMapping`` of ``ingest csv|http``'s options (``noun``: column or field)."""
    from tauxcharge_assets.ingestion.records import FieldMapping

    dimensions = args.dimensions
    return FieldMapping(
        timestamp=getattr(args, f"timestamp_{noun}"),
        name=getattr(args, f"name_{noun}"),
        value=getattr(args, f"value_{noun}"),
        fixed_name=name,
        timestamp_format=args.timestamp_format,
        dimensions=None if dimensions is None else tuple(d.strip() for d in dimensions.split(",") if d.strip()),
    )


def _ingest_csv(args: argparse.Namespace) -> int:
    from tauxcharge_assets.elastic.bulk import refresh_index
    from tauxcharge_assets.ingestion import csv_files

    paths = [Path(file) for file in args.files]
    mappings = [_mapping(args, "column", path.stem if args.name_from_file else args.name) for path in paths]
    for path, mapping in zip(paths, mappings, strict=True):  # every header before the first write
        csv_files.check_header(path, mapping)
    client, index = _metrics_index(args.es_attempts)
    results = []
    try:
        for path, mapping in zip(paths, mappings, strict=True):
            with Step(f"Ingesting {path.name}", total=csv_files.count_rows(path), unit="row") as step:
                result = csv_files.ingest_file(client, index, path, mapping, args.chunk_size, progress=step.update)
            print(result.summary(), flush=True)
            results.append(result)
    finally:
        refresh_index(client, index)  # what was written is searchable, even when a later file failed
    if len(results) > 1:
        print(
            f"{len(results)} files: {sum(r.created for r in results):,} new documents, "
            f"{sum(r.already_present for r in results):,} already present, "
            f"{sum(r.bad.total for r in results):,} rows not written"
        )
    return 0


def _ingest_http(args: argparse.Namespace) -> int:
    from tauxcharge_assets.ingestion import http_pull

    if args.iterations is not None and args.every is None:
        raise UserFacingError("--iterations needs --every (without it the endpoint is pulled once).", EXIT_USAGE)
    headers = http_pull.headers_from_env(dict(args.header_from_env or []))  # a missing variable fails before ES
    mapping = _mapping(args, "field", args.name)
    client, index = _metrics_index(args.es_attempts)

    def pull() -> Any:
        return http_pull.pull_once(client, index, args.url, mapping, args.json_path, headers, args.timeout)

    def report(result: Any) -> None:
        stamp = datetime.now().astimezone().strftime("%H:%M:%S") if args.every is not None else ""
        print(f"{stamp} {result.summary()}".strip(), flush=True)

    def failed(error: Exception) -> None:
        progress.note(f"{datetime.now().astimezone():%H:%M:%S} pull failed: {errors.one_line(str(error))}")

    pulls, failures = http_pull.repeat(pull, args.every, args.iterations, report, failed)
    if failures:
        code = EXIT_USAGE if all(isinstance(f, ValueError) for f in failures) else EXIT_UNAVAILABLE
        raise UserFacingError(
            f"{len(failures)} of {pulls} pulls failed; the last: {errors.one_line(str(failures[-1]))}", code
        )
    return 0


def _demo(args: argparse.Namespace) -> int:
    _quiet_tensorflow(args.debug)
    from tauxcharge_assets.cli.demo import print_report, run_demo
    from tauxcharge_assets.settings import to_utc

    end = to_utc(args.end) if args.end else None
    result = run_demo(n_names=args.names, days=args.days, end=end, replay_slots=args.replay_slots)
    print_report(result)
    return 0


def _backfill(args: argparse.Namespace) -> int:
    from dagster import PartitionKeyRange

    from tauxcharge_assets.cli.errors import quiet_run_failures
    from tauxcharge_assets.cli.runner import dagster_instance, materialize_range, materialize_ticks, tick_resources
    from tauxcharge_assets.defs.partitions import tick_partitions
    from tauxcharge_assets.defs.resources import mlflow_from_env

    first, last = tick_partitions.get_first_partition_key(), tick_partitions.get_last_partition_key()
    for option, key in (("--start", args.start), ("--end", args.end)):
        if not tick_partitions.has_partition_key(key):
            raise UserFacingError(
                f"{option} {key} is not a tick partition: keys run every 5 minutes from {first} to {last} "
                "(TAUXCHARGE_PARTITIONS_START moves the first one back).",
                EXIT_USAGE,
            )
    if args.start > args.end:  # the key format sorts as time does
        raise UserFacingError(f"--start {args.start} is after --end {args.end}: swap them.", EXIT_USAGE)
    keys = tick_partitions.get_partition_keys_in_range(PartitionKeyRange(args.start, args.end))
    resources = tick_resources(_elasticsearch(args.es_attempts), mlflow_from_env())
    per_run = args.partitions_per_run
    chunks = [keys[i : i + per_run] for i in range(0, len(keys), per_run)]
    print(f"backfilling {len(keys)} partitions {keys[0]} .. {keys[-1]} in {len(chunks)} run(s)", flush=True)
    instance = dagster_instance()
    with Step("Backfill", total=len(keys), unit="partition") as step, quiet_run_failures():
        for chunk in chunks:  # in time order: each run starts from the state the previous one left
            if len(chunk) == 1:
                materialize_ticks(chunk, resources, instance)
            else:
                materialize_range(chunk[0], chunk[-1], resources, instance)
            step.update(len(chunk))
    print("done")
    return 0


def _detect(args: argparse.Namespace) -> int:
    expected = "timestamp,value CSVs"
    folder = _input_folder(args.input, expected)
    output = Path(args.output)
    if output.exists() and not output.is_dir():
        raise UserFacingError(f"{output}: exists and is not a folder; pass --output a folder.", EXIT_USAGE)
    model_prefix = Path(args.model) if args.model else None
    if model_prefix is not None:
        needed = (model_prefix.with_suffix(".keras"), model_prefix.with_suffix(".pkl"))
        missing = [str(path) for path in needed if not path.exists()]
        if missing:
            raise UserFacingError(
                f"--model {args.model}: missing {' and '.join(missing)}; pass the prefix given to "
                "save_detector_model, or leave --model out to train one.",
                EXIT_USAGE,
            )
    from tauxcharge_assets.detection import detector, labelled_files
    from tauxcharge_assets.detection.input_rows import read_labelled_csv
    from tauxcharge_assets.model.network import ModelHyperparameters

    inputs = _read_folder(folder, read_labelled_csv, expected)  # what labelled_files.read_input reads
    for read in inputs.values():
        if read.report.needed_handling:  # repeated or backward timestamps, gaps, another sampling step
            progress.note(read.report.summary())
    files = {name: read.frame for name, read in inputs.items()}
    _quiet_tensorflow(args.debug)  # after the checks of the input: a bad file fails without waiting for it
    hp = ModelHyperparameters(epochs=args.epochs)
    if model_prefix is not None:
        with Step(f"Loading the model {model_prefix}"):
            model = labelled_files.load_detector_model(model_prefix)
    else:
        simulated = None
        if args.pretrain_names:
            import pandas as pd

            from tauxcharge_assets.data.simulator import SimulationSpec, simulate

            spec = SimulationSpec(
                n_names=args.pretrain_names, days=args.pretrain_days, end=pd.Timestamp("2026-01-05", tz="UTC")
            )
            with Step(f"Simulating {spec.n_names} series x {spec.days:g} days to pre-train on"):
                simulated = simulate(spec).values
        try:
            with Step(f"Training on {len(files)} files", total=hp.epochs, unit="epoch") as step:
                callbacks = [progress.epoch_callback(step)]
                model = labelled_files.fit_detector_model(files, hp, simulated, callbacks=callbacks)
        except ValueError as error:  # too little history in the files to train on (make_training_set)
            raise UserFacingError(
                f"Cannot train on {folder}: {errors.one_line(str(error))} Or pre-train on simulated series "
                "(--pretrain-names), or pass a saved model (--model).",
                EXIT_USAGE,
            ) from error
    with Step("Scoring", total=len(files), unit="file") as step:
        written = labelled_files.detect_directory(
            folder,
            output,
            detector.DetectorConfig(),
            hp,
            model=model,
            detector_name=args.detector_name,
            progress=lambda name: step.update(),
        )
    print(f"wrote {len(written)} result files to {args.output}")
    return 0


def dashboard_command(port: int, address: str) -> list[str]:
    """``streamlit run`` of the page, headless, bound to ``address`` only, without Streamlit's usage statistics."""
    app = Path(__file__).resolve().parents[1] / "dashboard" / "app.py"
    return [sys.executable, "-m", "streamlit", "run", str(app), "--server.port", str(port),
            "--server.address", address, "--server.headless", "true", "--browser.gatherUsageStats", "false",
            "--global.showWarningOnDirectExecution", "false"]  # fmt: skip


def _dashboard(args: argparse.Namespace) -> int:
    import subprocess

    from tauxcharge_assets.cli.runner import ensure_dagster_home, ensure_elasticsearch

    with socket.socket() as probe:  # a port in use is one line here, not Streamlit's traceback later
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            probe.bind((args.address, args.port))
        except OSError as error:
            raise UserFacingError(
                f"Cannot serve the dashboard on {args.address}:{args.port} ({error.strerror}): choose another --port.",
                EXIT_USAGE,
            ) from None
    ensure_elasticsearch()
    ensure_dagster_home()
    print(f"dashboard on http://{args.address}:{args.port} (Ctrl-C stops it)", flush=True)
    return subprocess.call(dashboard_command(args.port, args.address))


def _promote(args: argparse.Namespace) -> int:
    from mlflow import MlflowClient
    from mlflow.exceptions import MlflowException

    from tauxcharge_assets.defs.resources import mlflow_from_env

    mlflow = mlflow_from_env().process_config_and_initialize()
    name, uri = mlflow.registered_model_name, mlflow.tracking_uri
    before = mlflow.champion_version()
    try:
        mlflow.promote(str(args.version))
    except MlflowException as error:
        if error.error_code != "RESOURCE_DOES_NOT_EXIST":
            raise
        try:
            client = MlflowClient(tracking_uri=uri, registry_uri=uri)
            versions = sorted((v.version for v in client.search_model_versions(f"name = '{name}'")), key=int)
        except MlflowException:
            versions = []
        known = f"its versions are {', '.join(map(str, versions))}" if versions else "it has no versions yet"
        raise UserFacingError(
            f"Model {name!r} has no version {args.version} in {uri} ({known}): pick a registered version, or "
            f"train one first (`{PROG} demo`).",
            EXIT_USAGE,
        ) from error
    print(f"champion of {name}: version {before} -> {args.version} (manual override)")
    return 0


# ---------------------------------------------------------------------------------------------------
# The parser.


class HelpFormatter(argparse.ArgumentDefaultsHelpFormatter):
    """Every option's default (or "required") in its help; options without a plain default say theirs."""

    def _get_help_string(self, action: argparse.Action) -> str:
        text = action.help or ""
        if action.required and action.option_strings:
            return f"{text} (required)"
        if "%(default)" in text or "(default:" in text or action.default in (None, argparse.SUPPRESS):
            return text
        return f"{text} (default: %(default)s)"


def _common_options(parser: argparse.ArgumentParser, in_subcommand: bool) -> None:
    """``--debug`` and ``--progress``, before or after the command; after it, they only override."""
    unset: Any = argparse.SUPPRESS
    parser.add_argument(
        "--debug",
        action="store_true",
        default=unset if in_subcommand else False,
        help="on an expected failure, print the full traceback too; let library warnings and logs through "
        "(default: off)",
    )
    parser.add_argument(
        "--progress",
        choices=progress.MODES,
        default=unset if in_subcommand else "auto",
        help="progress bars on stderr: auto = when stderr is a terminal (otherwise one summary line per long "
        "step), always, never (default: auto)",
    )


def _es_attempts(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--es-attempts",
        type=_positive_int,
        default=5,
        help="health checks of Elasticsearch (backoff 1, 2, 4... s) before giving up",
    )


def build_parser() -> argparse.ArgumentParser:
    labels = data_folder() / "simulator_labels.json"
    parser = argparse.ArgumentParser(
        prog=PROG,
        description="Forecast load rates every 5 minutes and report anomalies: manage the local "
        "Elasticsearch, load data, run the asset graph, score files.",
        epilog=f"Run `{PROG} <command> --help` for a command's options. Environment: TAUXCHARGE_ES_URL "
        "(default: the local server, started on demand), TAUXCHARGE_HOME (data folder, default: "
        f"{REPO_ROOT / '.tauxcharge'}), MLFLOW_TRACKING_URI (default: sqlite in the data folder).",
        formatter_class=HelpFormatter,
    )
    _common_options(parser, in_subcommand=False)
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    def command(name: str, help_text: str, handler: Callable[[argparse.Namespace], int]) -> argparse.ArgumentParser:
        sub = commands.add_parser(name, help=help_text, description=help_text, formatter_class=HelpFormatter)
        _common_options(sub, in_subcommand=True)
        sub.set_defaults(handler=handler)
        return sub

    es = command("es", "manage the project's local Elasticsearch (127.0.0.1)", _es)
    es.add_argument(
        "action",
        choices=["start", "stop", "status"],
        help="start: start it (or reuse the one answering) and print its URL; stop; status: print it as JSON",
    )
    es.add_argument("--port", type=_port, default=DEFAULT_ES_PORT, help="HTTP port (transport: port + 100)")

    sim = command("simulate", "load simulated load rates into the metrics index", _simulate)
    sim.add_argument("--names", type=_positive_int, default=50, help="how many series (monitored names)")
    sim.add_argument("--days", type=_positive_float, default=14.0, help="days of 5-minute points per name")
    sim.add_argument(
        "--end", type=_timestamp, help="ISO timestamp the data ends at, UTC (default: now, rounded down to 5 min)"
    )
    sim.add_argument("--seed", type=int, default=7, help="random seed: the same seed writes the same documents")
    sim.add_argument(
        "--recent-anomalies",
        type=_non_negative_int,
        default=0,
        help="anomalies placed in the last hour, so the next tick reports them",
    )
    sim.add_argument("--labels", default=str(labels), help="where to write the injected anomalies (JSON)")
    sim.add_argument(
        "--live",
        action="store_true",
        help="keep writing current data: every --interval-s, the documents that arrived since (continuing after "
        "the newest document already indexed), until Ctrl-C or --rounds (default: off)",
    )
    sim.add_argument("--interval-s", type=_positive_float, default=300.0, help="with --live: seconds between rounds")
    sim.add_argument("--rounds", type=_positive_int, help="with --live: stop after this many rounds (default: never)")
    sim.add_argument("--days-ahead", type=_positive_int, default=7, help="with --live: how long the simulation runs")
    _es_attempts(sim)

    load = command("load-nab", "load the NAB realAWSCloudwatch CSVs into the metrics index", _load_nab)
    load.add_argument("--input", default=str(DEFAULT_NAB_DIR), help="folder of NAB timestamp,value CSVs")
    _es_attempts(load)

    ingest = commands.add_parser(
        "ingest",
        help="load metrics into the metrics index from CSV files or an HTTP endpoint (idempotent)",
        description="Load metrics into the metrics index. Each row becomes a document (timestamp, name, value, "
        "other columns as dimensions) stamped with its arrival time (ingested_at); its id is (name, timestamp, "
        "value), so loading the same rows again writes nothing and keeps the first arrival time, and a "
        "corrected value arrives as a new document that the cleaning prefers.",
        formatter_class=HelpFormatter,
    )
    _common_options(ingest, in_subcommand=True)
    sources = ingest.add_subparsers(dest="source", required=True, metavar="SOURCE")

    def source(name: str, help_text: str, handler: Callable[[argparse.Namespace], int]) -> argparse.ArgumentParser:
        sub = sources.add_parser(name, help=help_text, description=help_text, formatter_class=HelpFormatter)
        _common_options(sub, in_subcommand=True)
        sub.set_defaults(handler=handler)
        return sub

    def mapping_options(sub: argparse.ArgumentParser, noun: str) -> None:
        sub.add_argument(f"--timestamp-{noun}", default="timestamp", help=f"{noun} of the measure's time")
        names = sub.add_mutually_exclusive_group()
        names.add_argument(f"--name-{noun}", default="name", help=f"{noun} of the monitored name")
        names.add_argument("--name", help=f"one name for every row, instead of a {noun} (default: none)")
        if noun == "column":
            names.add_argument(
                "--name-from-file",
                action="store_true",
                help="each file's name without .csv as the name of its rows (one series per file, as NAB's) "
                "(default: off)",
            )
        sub.add_argument(f"--value-{noun}", default="value", help=f"{noun} of the load rate (%%)")
        sub.add_argument(
            "--dimensions",
            help=f"comma-separated {noun}s kept as dimension fields (default: every other {noun})",
        )
        sub.add_argument(
            "--timestamp-format",
            help="how times are written: a strptime format such as '%%d/%%m/%%Y %%H:%%M', or unix / unix_ms "
            "(epoch seconds / milliseconds); a time without an offset is UTC (default: ISO 8601)",
        )

    csv = source("csv", "load CSV files, in chunks, into the metrics index", _ingest_csv)
    csv.add_argument("files", nargs="+", metavar="FILE", help="CSV files with a header line")
    mapping_options(csv, "column")
    csv.add_argument("--chunk-size", type=_positive_int, default=50_000, help="rows read and written at a time")
    _es_attempts(csv)

    http = source(
        "http", "pull JSON metrics from an HTTP endpoint, once or every N seconds, into the metrics index", _ingest_http
    )
    http.add_argument("url", metavar="URL", help="endpoint answering a GET with JSON")
    http.add_argument(
        "--json-path",
        help="dotted keys leading to the list of metrics in the payload, e.g. data.metrics "
        "(default: the payload is the list)",
    )
    mapping_options(http, "field")
    http.add_argument(
        "--header-from-env",
        type=_header_from_env,
        action="append",
        metavar="HEADER=VARIABLE",
        help="send HEADER with the value of the environment variable VARIABLE, e.g. "
        "Authorization=METRICS_AUTH; repeatable; values are never printed (default: none)",
    )
    http.add_argument(
        "--every",
        type=_positive_float,
        help="pull every this many seconds until interrupted, a failed pull reported and retried at the next "
        "(default: once)",
    )
    http.add_argument(
        "--iterations", type=_positive_int, help="with --every, stop after this many pulls (default: until interrupted)"
    )
    http.add_argument("--timeout", type=_positive_float, default=30.0, help="seconds to wait for the endpoint")
    _es_attempts(http)

    demo = command("demo", "run the main job end to end and print the results", _demo)
    demo.add_argument("--names", type=_positive_int, default=50, help="how many simulated series")
    demo.add_argument("--days", type=_positive_float, default=14.0, help="days of history to simulate and train on")
    demo.add_argument("--end", type=_timestamp, help="ISO timestamp the demo ends at, UTC (default: today 00:00 UTC)")
    demo.add_argument("--replay-slots", type=_positive_int, default=12, help="5-minute ticks replayed after training")

    backfill = command(
        "backfill",
        "materialize the tick assets for a range of past partitions in one Dagster run (or runs of "
        "--partitions-per-run), in one process",
        _backfill,
    )
    backfill.add_argument(
        "--start", type=_partition_key, required=True, help="first partition key (UTC), e.g. 2026-11-22-23:00"
    )
    backfill.add_argument("--end", type=_partition_key, required=True, help="last partition key (inclusive)")
    backfill.add_argument(
        "--partitions-per-run",
        type=_positive_int,
        default=288,
        help="at most this many partitions per run, the runs one after the other (default: 288, a day: progress "
        "per day, and at most a day of outputs on disk; 1: a run per partition)",
    )
    _es_attempts(backfill)

    detect = command(
        "detect", "score labelled CSVs causally and write NAB-layout results (timestamp,value,anomaly_score)", _detect
    )
    detect.add_argument("--input", default=str(DEFAULT_NAB_DIR), help="folder of timestamp,value CSVs")
    detect.add_argument("--output", required=True, help="folder for the <detector>_<file>.csv results")
    detect.add_argument("--detector-name", default="tauxcharge", help="prefix of the result files")
    detect.add_argument(
        "--epochs", type=_positive_int, default=6, help="training epochs (early stopping may end sooner)"
    )
    detect.add_argument(
        "--model",
        help="prefix of a model saved by labelled_files.save_detector_model (default: train one on the input)",
    )
    detect.add_argument(
        "--pretrain-names",
        type=_non_negative_int,
        default=30,
        help="simulated series added to the training set (0: none; unused with --model)",
    )
    detect.add_argument(
        "--pretrain-days", type=_positive_float, default=7.0, help="days of each simulated pre-training series"
    )

    dashboard = command(
        "dashboard",
        "serve the dashboard page (name explorer, current anomalies, capacity, pipeline health) with Streamlit",
        _dashboard,
    )
    dashboard.add_argument("--port", type=_port, default=8501, help="HTTP port of the page")
    dashboard.add_argument(
        "--address", default="127.0.0.1", help="address to listen on (0.0.0.0 shares it with the network)"
    )

    promote = command(
        "promote", "point the champion alias at a registered version by hand (bypasses the backtest gate)", _promote
    )
    promote.add_argument("--version", type=_positive_int, required=True, help="registered version number of the model")
    return parser


def main(argv: list[str] | None = None) -> int:
    """Parse, run the command, and turn an expected failure into one line on stderr and an exit code."""
    args = build_parser().parse_args(argv)
    errors.configure(args.debug)
    progress.configure(args.progress)
    _quiet_libraries(args.debug)
    try:
        return int(args.handler(args))
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
    except Exception as error:
        failure = errors.user_facing(error)
        if failure is None:
            raise  # a bug: its traceback is the useful output
        if args.debug:
            traceback.print_exception(error)
        print(f"error: {failure}", file=sys.stderr)
        return failure.exit_code


if __name__ == "__main__":
    sys.exit(main())
