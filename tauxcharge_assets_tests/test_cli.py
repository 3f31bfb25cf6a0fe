"""The command line as a user runs it (``python -m tauxcharge_assets ...`` in a subprocess): fast help that
shows every default, one plain line and a non-zero exit for expected failures, progress summaries."""

from __future__ import annotations

import argparse
import json
import os
import socket
import subprocess
import sys
import textwrap
import uuid
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from tauxcharge_assets.cli import main as cli
from tauxcharge_assets.cli.progress import Step

COMMANDS = ("es", "simulate", "load-nab", "ingest", "demo", "backfill", "detect", "dashboard", "promote")
SUBCOMMANDS = (("ingest", "csv"), ("ingest", "http"))
HEAVY_MODULES = ("dagster", "tensorflow", "keras", "mlflow", "pandas", "elasticsearch")
UNREACHABLE = "http://127.0.0.1:1"


def run_cli(*args: str, env: dict[str, str] | None = None, timeout: float = 300) -> subprocess.CompletedProcess[str]:
    """The CLI in a fresh process, as a user (or a CI job) runs it: stderr is not a terminal."""
    environment = {**os.environ, "TAUXCHARGE_ES_URL": UNREACHABLE, **(env or {})}
    return subprocess.run(
        [sys.executable, "-m", "tauxcharge_assets", *args],
        capture_output=True,
        text=True,
        env=environment,
        timeout=timeout,
        check=False,
    )


def assert_one_line_failure(result: subprocess.CompletedProcess[str], exit_code: int, *fragments: str) -> str:
    lines = result.stderr.strip().splitlines()
    assert result.returncode == exit_code, result.stderr
    assert len(lines) == 1, result.stderr
    assert "Traceback" not in result.stderr
    assert lines[0].startswith("error: ")
    for fragment in fragments:
        assert fragment in lines[0]
    return lines[0]


@pytest.fixture
def dagster_home(tmp_path: Path) -> str:
    """A Dagster instance folder with telemetry off: no one-time welcome banner in what a test reads."""
    home = tmp_path / "dagster_home"
    home.mkdir()
    (home / "dagster.yaml").write_text("telemetry:\n  enabled: false\n")
    return str(home)


# --- help ------------------------------------------------------------------------------------------


def test_help_imports_nothing_heavy() -> None:
    """``--help`` of the CLI and of every command parses without Dagster, TensorFlow, MLflow or pandas."""
    script = textwrap.dedent(
        f"""
        import json, sys
        from tauxcharge_assets.cli.main import main
        commands = [[name] for name in {list(COMMANDS)!r}] + [list(pair) for pair in {list(SUBCOMMANDS)!r}]
        for argv in [["--help"], *[[*command, "--help"] for command in commands]]:
            try:
                main(argv)
            except SystemExit as done:
                assert done.code == 0, argv
        print(json.dumps(sorted(m for m in {list(HEAVY_MODULES)!r} if m in sys.modules)), file=sys.stderr)
        """
    )
    result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=120, check=False)
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stderr.strip().splitlines()[-1]) == []


@pytest.mark.parametrize("command", [*COMMANDS, *(" ".join(pair) for pair in SUBCOMMANDS)])
def test_every_command_help_shows_defaults(command: str) -> None:
    result = run_cli(*command.split(), "--help")
    assert result.returncode == 0, result.stderr
    assert "(default:" in result.stdout
    assert result.stderr == ""


def test_every_option_has_help_and_a_default_or_required() -> None:
    parser = cli.build_parser()
    subparsers = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
    assert set(subparsers.choices) == set(COMMANDS)
    nested = []
    for name, sub in subparsers.choices.items():
        for action in sub._actions:
            if isinstance(action, argparse._SubParsersAction):
                nested += [(f"{name} {source}", inner) for source, inner in action.choices.items()]
    assert [name for name, _ in nested] == [" ".join(pair) for pair in SUBCOMMANDS]
    for name, sub in [("", parser), *subparsers.choices.items(), *nested]:
        formatter = cli.HelpFormatter(prog=name)
        for action in sub._actions:
            if not action.option_strings or isinstance(action, argparse._HelpAction):
                continue
            shown = formatter._get_help_string(action)
            assert action.help, f"{name} {action.option_strings} has no help"
            assert "(default:" in shown or "(required)" in shown, f"{name} {action.option_strings}: {shown}"


def test_help_defaults_match_the_modules_they_stand_in_for() -> None:
    """main.py recomputes a few defaults so that ``--help`` needs no pandas/Dagster: they must agree."""
    from tauxcharge_assets import settings
    from tauxcharge_assets.data import nab
    from tauxcharge_assets.defs import partitions
    from tauxcharge_assets.elastic import server

    assert cli.REPO_ROOT == settings.REPO_ROOT
    assert cli.DEFAULT_NAB_DIR == nab.DEFAULT_NAB_DIR
    assert cli.data_folder() == settings.data_dir()
    assert cli.DEFAULT_ES_PORT == server.DEFAULT_PORT
    assert cli.PARTITION_KEY_FORMAT == partitions.PARTITION_KEY_FORMAT


# --- usage errors ----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "args",
    [
        ("simulate", "--names", "0"),
        ("simulate", "--end", "yesterday"),
        ("backfill", "--start", "2026-11-22", "--end", "2026-11-22-23:05"),
        ("promote",),
    ],
)
def test_bad_arguments_exit_2_with_usage(args: tuple[str, ...]) -> None:
    result = run_cli(*args)
    assert result.returncode == 2
    assert "Traceback" not in result.stderr
    assert result.stderr.strip().splitlines()[-1].startswith("usage:") or "error:" in result.stderr


def test_backfill_outside_the_partitions_is_one_line(dagster_home: str) -> None:
    result = run_cli(
        "backfill", "--start", "1999-01-01-00:00", "--end", "1999-01-01-00:05", env={"DAGSTER_HOME": dagster_home}
    )
    assert_one_line_failure(result, 2, "1999-01-01-00:00", "is not a tick partition", "every 5 minutes from")


# --- unreachable Elasticsearch ---------------------------------------------------------------------


def test_unreachable_server_is_one_line_naming_it() -> None:
    result = run_cli("simulate", "--names", "1", "--days", "0.1", "--es-attempts", "1")
    assert_one_line_failure(result, 1, UNREACHABLE, "es start", "TAUXCHARGE_ES_URL")
    assert result.stdout == ""


def test_debug_shows_the_traceback() -> None:
    result = run_cli("simulate", "--names", "1", "--days", "0.1", "--es-attempts", "1", "--debug")
    assert result.returncode == 1
    assert "Traceback" in result.stderr
    assert "ElasticsearchUnavailableError" in result.stderr
    last = result.stderr.strip().splitlines()[-1]
    assert last.startswith("error: ") and UNREACHABLE in last


def test_unreachable_server_inside_a_dagster_run_is_one_line(dagster_home: str) -> None:
    """The error is raised inside a tick's asset: Dagster's step and run failure logs stay out."""
    result = run_cli(
        "backfill",
        "--start",
        "2026-11-22-23:00",
        "--end",
        "2026-11-22-23:05",
        "--es-attempts",
        "1",
        env={"DAGSTER_HOME": dagster_home, "TAUXCHARGE_PARTITIONS_START": "2026-11-01"},
    )
    assert_one_line_failure(result, 1, UNREACHABLE)
    assert "STEP_FAILURE" not in result.stderr


def listening_socket(highest: int = 65435) -> socket.socket:
    """A socket listening on a free port the CLI accepts (its server also uses port + 100)."""
    for port in (0, *range(20000, 30000)):
        candidate = socket.socket()
        try:
            candidate.bind(("127.0.0.1", port))
        except OSError:
            candidate.close()
            continue
        if candidate.getsockname()[1] <= highest:
            candidate.listen()
            return candidate
        candidate.close()
    raise AssertionError("no free port below 65436 on 127.0.0.1")


def test_port_taken_by_something_else(tmp_path: Path) -> None:
    with listening_socket() as taken:
        port = taken.getsockname()[1]
        result = run_cli("es", "start", "--port", str(port), env={"TAUXCHARGE_ES_HOME": str(tmp_path)})
    assert_one_line_failure(result, 1, f"Port {port}", "not Elasticsearch", "--port")


def test_dashboard_on_a_taken_port_is_one_line() -> None:
    with listening_socket() as taken:
        port = taken.getsockname()[1]
        result = run_cli("dashboard", "--port", str(port))
    assert_one_line_failure(result, 2, f"127.0.0.1:{port}", "--port")


def test_dashboard_serves_headless_on_localhost_without_usage_statistics() -> None:
    command = cli.dashboard_command(8601, "127.0.0.1")
    options = dict(zip(command[5::2], command[6::2], strict=True))
    assert command[1:4] == ["-m", "streamlit", "run"] and Path(command[4]).is_file()
    assert options["--server.address"] == "127.0.0.1" and options["--server.port"] == "8601"
    assert options["--server.headless"] == "true" and options["--browser.gatherUsageStats"] == "false"


# --- detect input ----------------------------------------------------------------------------------


def good_csv(path: Path, rows: int = 1200, seed: int = 0) -> None:
    stamps = pd.date_range("2026-01-05", periods=rows, freq="5min")
    values = 50 + 10 * np.sin(2 * np.pi * np.arange(rows) / 288) + np.random.default_rng(seed).normal(0, 1, rows)
    pd.DataFrame({"timestamp": stamps.strftime("%Y-%m-%d %H:%M:%S"), "value": values.round(3)}).to_csv(
        path, index=False
    )


@pytest.mark.parametrize(
    ("content", "problem"),
    [
        ("timestamp,value\n2026-01-05 00:00:00,1\n2026-01-05 00:05:00,2,3\n", "Expected 2 fields in line 3"),
        ("timestamp,value\n2026-01-05 00:00:00,abc\n", "non-numeric value"),
        ("time,load\n2026-01-05 00:00:00,1\n", "missing column"),
        ("", "No columns to parse"),
    ],
)
def test_detect_names_the_bad_file(tmp_path: Path, content: str, problem: str) -> None:
    folder = tmp_path / "in"
    folder.mkdir()
    good_csv(folder / "a_good.csv")
    (folder / "b_bad.csv").write_text(content)
    result = run_cli("detect", "--input", str(folder), "--output", str(tmp_path / "out"))
    assert_one_line_failure(result, 2, str(folder / "b_bad.csv"), problem)
    assert not (tmp_path / "out").exists()


def test_detect_missing_folder(tmp_path: Path) -> None:
    missing = tmp_path / "nowhere"
    result = run_cli("detect", "--input", str(missing), "--output", str(tmp_path / "out"))
    assert_one_line_failure(result, 2, str(missing), "no such folder")


def test_detect_empty_folder(tmp_path: Path) -> None:
    result = run_cli("detect", "--input", str(tmp_path), "--output", str(tmp_path / "out"))
    assert_one_line_failure(result, 2, "No CSV files", str(tmp_path))


def test_detect_trains_with_epoch_progress_and_no_tensorflow_noise(tmp_path: Path) -> None:
    """Without a terminal: one summary line per long step, no bars, no TensorFlow start-up lines."""
    folder = tmp_path / "in"
    folder.mkdir()
    for seed in range(2):
        good_csv(folder / f"s{seed}.csv", seed=seed)
    result = run_cli(
        "detect",
        "--input",
        str(folder),
        "--output",
        str(tmp_path / "out"),
        "--epochs",
        "1",
        "--pretrain-names",
        "2",
        "--pretrain-days",
        "2",
    )
    assert result.returncode == 0, result.stderr
    assert "wrote 2 result files" in result.stdout
    lines = result.stderr.strip().splitlines()
    assert [line.split(":")[0] for line in lines] == [
        "Simulating 2 series x 2 days to pre-train on",
        "Training on 2 files",
        "Scoring",
    ], result.stderr
    assert "1 epoch in" in lines[1] and "val_loss" in lines[1]
    assert "2 files in" in lines[2]
    assert "\r" not in result.stderr


def test_promote_unknown_version_is_one_line(tmp_path: Path) -> None:
    result = run_cli("promote", "--version", "7", env={"MLFLOW_TRACKING_URI": f"sqlite:///{tmp_path / 'mlflow.db'}"})
    assert_one_line_failure(result, 2, "no version 7", "no versions yet")


# --- progress ---------------------------------------------------------------------------------------


def test_step_without_terminal_prints_one_summary_line(capsys: pytest.CaptureFixture[str]) -> None:
    with Step("Writing", total=10, unit="doc") as step:
        for _ in step.wrap(range(10)):
            pass
    with pytest.raises(RuntimeError), Step("Failing", total=3, unit="doc") as failing:
        failing.update()
        raise RuntimeError("boom")
    err = capsys.readouterr().err
    assert err.startswith("Writing: 10 docs in ")
    assert "Failing" not in err  # the error line, not a summary, tells what happened


def test_forced_bars_show_a_rate(capsys: pytest.CaptureFixture[str]) -> None:
    """``--progress always`` draws tqdm bars even without a terminal (e.g. to watch a CI job)."""
    from tauxcharge_assets.cli import progress

    progress.configure("always")
    try:
        with Step("Scoring", total=4, unit="file") as step:
            for _ in range(4):
                step.update()
    finally:
        progress.configure("auto")
    err = capsys.readouterr().err
    assert "Scoring: 100%" in err and "4/4" in err and "file/s" in err


# --- with the real server -----------------------------------------------------------------------------


@pytest.fixture
def index_prefix(es_url: str) -> Iterator[str]:
    from elasticsearch import Elasticsearch

    prefix = f"test-cli-{uuid.uuid4().hex[:8]}"
    yield prefix
    Elasticsearch(es_url, api_key=os.environ.get("TAUXCHARGE_ES_API_KEY")).indices.delete(
        index=f"{prefix}-*", allow_no_indices=True
    )


@pytest.mark.integration
def test_simulate_then_backfill_without_champion(
    es_url: str, index_prefix: str, dagster_home: str, tmp_path: Path
) -> None:
    env = {
        "TAUXCHARGE_ES_URL": es_url,
        "TAUXCHARGE_INDEX_PREFIX": index_prefix,
        "TAUXCHARGE_HOME": str(tmp_path),
        "DAGSTER_HOME": dagster_home,
        "TAUXCHARGE_PARTITIONS_START": "2026-11-01",
        "MLFLOW_TRACKING_URI": f"sqlite:///{tmp_path / 'mlflow.db'}",
    }
    loaded = run_cli("simulate", "--names", "3", "--days", "1.5", "--end", "2026-11-23T00:00", env=env)
    assert loaded.returncode == 0, loaded.stderr
    assert loaded.stdout.startswith("wrote ")
    summary = loaded.stderr.strip().splitlines()
    assert [line.split(":")[0] for line in summary] == [
        "Simulating 3 names x 1.5 days",
        f"Writing to {index_prefix}-metrics",
    ]
    assert "docs in" in summary[1] and "doc/s" in summary[1]

    backfill = run_cli("backfill", "--start", "2026-11-22-23:00", "--end", "2026-11-22-23:05", env=env)
    assert_one_line_failure(backfill, 1, "No champion version")
    assert "STEP_FAILURE" not in backfill.stderr
