"""Detection dev set: the ``detect`` command on a wide simulated set, scored by anomaly kind and series style.

    python benchmarks/detection_devset.py --output /tmp/devset.md [--workdir DIR] [--model PREFIX]

NAB's realAWSCloudwatch has 17 labelled files, too few to tell which anomalies the detector misses or on
which series it raises false alarms. This writes a simulated set (``DEVSET_SPEC``: every kind of
``simulator.ALL_ANOMALY_KINDS``, a quarter of the names anomaly-free, percentages and request counts,
smooth, normal and noisy names, 1,000 to 8,064 rows; up to 20,000 with ``--max-rows 20000``, slower) in
NAB's layout: one ``timestamp,value`` CSV per name and ``anomaly_windows.json`` with NAB-sized windows
(10 % of the file's rows over its number of anomalies, centred on each anomaly's first slot, as
``nab_benchmark.write_simulator_set`` but sized on each file's own rows, since names differ in length).
It then runs ``labelled_files.detect_directory`` (which trains the LSTM on the probationary 15 % of every
file unless ``--model`` is given) and reports:

* NAB's normalised score per profile (one corpus-wide threshold each, as NAB reports);
* at the shipped warning and critical thresholds (the detector config's defaults): recall by kind, an
  anomaly being found when a score >= threshold falls in its NAB window (and, apart, while it lasts:
  from its first slot to one hour after its last, which for a day-long anomaly reaches past a short
  file's NAB window); false alarms per series-week, alarm rows outside every window grouped into
  episodes (alarm rows at most an hour apart are one episode: one page for an operator);
  the share of anomaly-free names without any alarm; and the same split by series style.

Rows in NAB's probationary period (15 % of a file, at most 750 rows) are not scored, as in NAB.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import shlex
import sys
import tempfile
import time
import typing
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from tauxcharge_assets.data import nab
from tauxcharge_assets.data.simulator import ALL_ANOMALY_KINDS, Simulation, SimulationSpec, simulate
from tauxcharge_assets.detection import nab_scoring
from tauxcharge_assets.settings import STEP_MINUTES

DETECTOR = "tauxcharge"
DEVSET_SPEC = SimulationSpec(
    n_names=60,
    days=8064 * STEP_MINUTES / (24 * 60),  # a 4-week grid; each name keeps its last 1,000 to 8,064 rows
    end=pd.Timestamp("2026-01-05", tz="UTC"),
    seed=2024,
    missing_rate=0.0,  # gaps only where labelled (missing_burst): detect reads rows, not a grid
    anomalies_per_name=3.0,
    anomaly_kinds=ALL_ANOMALY_KINDS,
    anomaly_free_share=0.25,
    count_share=0.4,
    smooth_share=0.3,
    noisy_share=0.3,
    min_rows=1_000,
    anomaly_after=0.15,  # no anomaly in the probationary part the model trains on
)
LONG_ROWS = 4032  # two weeks of 5-minute rows: shorter names are "short"
EPISODE_GAP = pd.Timedelta(hours=1)  # alarm rows at most this far apart are one episode
DURING_AFTER = pd.Timedelta(hours=1)  # "during" an anomaly: its first slot .. its last slot + this
WEEK = pd.Timedelta(days=7)
STEP = pd.Timedelta(minutes=STEP_MINUTES)
STAMP_FORMAT = "%Y-%m-%d %H:%M:%S"

Window = tuple[pd.Timestamp, pd.Timestamp]


# --- the detector: the only place that knows detect_directory's signature --------------------------------


def detector_config() -> Any:
    """The detector's default config (its thresholds are the shipped ones), of the class ``detect_directory`` takes."""
    from tauxcharge_assets.detection import labelled_files

    return typing.get_type_hints(labelled_files.detect_directory)["config"]()


def run_detector(
    data_dir: Path, results_dir: Path, epochs: int, model_prefix: Path | None, progress: Callable[[str], None]
) -> None:
    """Score every file of ``data_dir`` into ``results_dir``; without a model the LSTM is trained here (timed in)."""
    from tauxcharge_assets.detection import labelled_files
    from tauxcharge_assets.model.network import ModelHyperparameters

    model = labelled_files.load_detector_model(model_prefix) if model_prefix else None
    hp = model.hp if model is not None else ModelHyperparameters(epochs=epochs, sample_stride=2)
    labelled_files.detect_directory(
        data_dir, results_dir, detector_config(), hp, model=model, detector_name=DETECTOR, progress=progress
    )


# --- the dev set ---------------------------------------------------------------------------------------------


def nab_windows(starts: list[pd.Timestamp], first: pd.Timestamp, last: pd.Timestamp, rows: int) -> list[Window]:
    """One NAB-sized window per anomaly start (unmerged), clipped to the file: 10 % of its rows over the count."""
    half = STEP * int(0.1 * rows / max(len(starts), 1) / 2)
    return [(max(start - half, first), min(start + half, last)) for start in starts]


def merged(windows: list[Window]) -> list[Window]:
    """Overlapping windows as one, as NAB's label files hold them."""
    out: list[list[pd.Timestamp]] = []
    for low, high in sorted(windows):
        if out and low <= out[-1][1]:
            out[-1][1] = max(out[-1][1], high)
        else:
            out.append([low, high])
    return [(low, high) for low, high in out]


def write_devset(sim: Simulation, directory: Path) -> pd.DataFrame:
    """The names as NAB data files plus ``anomaly_windows.json``; returns the labels with their windows."""
    directory.mkdir(parents=True, exist_ok=True)
    units = sim.styles.set_index("name")["unit"]
    labels: dict[str, list[list[str]]] = {}
    anomalies: list[pd.DataFrame] = []
    for name in sim.values.columns:
        column = sim.values[name].dropna()
        values: Any = column.round(4).to_numpy()
        if units[name] == "count":
            values = values.astype(np.int64)
        pd.DataFrame({"timestamp": column.index.strftime(STAMP_FORMAT), "value": values}).to_csv(
            directory / f"{name}.csv", index=False
        )
        own = sim.labels[sim.labels["name"] == name].sort_values("start").reset_index(drop=True)
        windows = nab_windows(list(own["start"]), column.index[0], column.index[-1], len(column))
        own["window_start"] = [low for low, _ in windows]
        own["window_end"] = [high for _, high in windows]
        # An anomaly whose whole window fell in another one's missing burst left no row: nothing to find.
        seen = [column.index.searchsorted(low) < column.index.searchsorted(high, side="right") for low, high in windows]
        own, windows = own[seen].reset_index(drop=True), [w for w, keep in zip(windows, seen, strict=True) if keep]
        anomalies.append(own)
        labels[f"devset/{name}.csv"] = [
            [a.strftime(STAMP_FORMAT), b.strftime(STAMP_FORMAT)] for a, b in merged(windows)
        ]
    (directory / "anomaly_windows.json").write_text(json.dumps(labels, indent=1))
    return pd.concat(anomalies, ignore_index=True)


# --- scoring at one threshold (pure) ---------------------------------------------------------------------------


def episodes(stamps: pd.DatetimeIndex) -> int:
    """Alarm rows at most ``EPISODE_GAP`` after the previous alarm row continue its episode: one page, not many."""
    if len(stamps) == 0:
        return 0
    gaps = np.diff(np.sort(stamps.asi8))
    return 1 + int((gaps > EPISODE_GAP.value).sum())


def threshold_outcomes(
    results: Mapping[str, pd.DataFrame], anomalies: pd.DataFrame, threshold: float
) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Per anomaly (``found``, ``found_during``) and per series (weeks, false-alarm episodes, alarm episodes).

    ``results`` holds each name's ``timestamp`` and ``anomaly_score`` rows; ``anomalies`` its labels with
    ``start``, ``end``, ``window_start``, ``window_end``. Only rows after NAB's probation are counted.
    """
    found: list[dict[str, Any]] = []
    series: list[dict[str, Any]] = []
    for name, frame in results.items():
        stamps = pd.DatetimeIndex(pd.to_datetime(frame["timestamp"], utc=True))
        scored = np.arange(len(frame)) >= nab_scoring.probationary_length(len(frame))
        alarm = scored & (frame["anomaly_score"].to_numpy(np.float64) >= threshold)
        inside = np.zeros(len(frame), dtype=bool)
        own = anomalies[anomalies["name"] == name]
        for label in own.itertuples():
            window = (stamps >= label.window_start) & (stamps <= label.window_end)
            during = (stamps >= label.start) & (stamps <= label.end + DURING_AFTER)
            inside |= window
            found.append(
                {
                    "name": name,
                    "kind": label.kind,
                    "found": bool((alarm & window).any()),
                    "found_during": bool((alarm & during).any()),
                }
            )
        series.append(
            {
                "name": name,
                "anomalies": len(own),
                "weeks": int(scored.sum()) * STEP / WEEK,
                "false_alarms": episodes(stamps[alarm & ~inside]),
                "alarms": episodes(stamps[alarm]),
            }
        )
    return pd.DataFrame(found, columns=["name", "kind", "found", "found_during"]), pd.DataFrame(series)


def summarise(found: pd.DataFrame, series: pd.DataFrame) -> dict[str, float]:
    """Recall (NAB window, during), false-alarm episodes per series-week, share of clean names with no alarm."""
    clean = series[series["anomalies"] == 0]
    weeks = float(series["weeks"].sum())
    return {
        "series": float(len(series)),
        "anomalies": float(len(found)),
        "recall": float(found["found"].mean()) if len(found) else float("nan"),
        "recall_during": float(found["found_during"].mean()) if len(found) else float("nan"),
        "fp_per_week": float(series["false_alarms"].sum()) / weeks if weeks else float("nan"),
        "clean": float(len(clean)),
        "clean_quiet": float((clean["alarms"] == 0).mean()) if len(clean) else float("nan"),
    }


def style_groups(styles: pd.DataFrame) -> dict[str, list[str]]:
    """Names per series style: unit, noise level and length (short below ``LONG_ROWS``)."""
    length = np.where(styles["rows"] >= LONG_ROWS, "long", "short")
    groups: dict[str, list[str]] = {}
    for label, column in (("unit", styles["unit"]), ("noise", styles["noise"]), ("length", pd.Series(length))):
        for value in sorted(set(column)):
            groups[f"{label}: {value}"] = list(styles["name"][column.to_numpy() == value])
    return groups


# --- report ------------------------------------------------------------------------------------------------------


def _pct(value: float) -> str:
    return "-" if np.isnan(value) else f"{100 * value:.0f} %"


def markdown(
    command: str,
    nab_table: pd.DataFrame,
    outcomes: dict[str, tuple[pd.DataFrame, pd.DataFrame]],
    styles: pd.DataFrame,
    notes: list[str],
) -> str:
    """The report: command, NAB scores, recall by kind, false alarms, and both by series style."""
    levels = list(outcomes)
    lines = [f"`{command}`", "", *notes, "", "NAB scores (one corpus-wide threshold per profile):", ""]
    lines += [
        "| profile | normalized | threshold | precision | recall | F1 | found | FP rows |",
        "|---|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for profile, row in nab_table.iterrows():
        lines.append(
            f"| {profile} | {row.normalized:.1f} | {row.threshold:.4f} | {row.precision:.3f} | {row.recall:.3f} | "
            f"{row.f1:.3f} | {int(row.detected_windows)}/{int(row.windows)} | {int(row.fp)} |"
        )
    header = " | ".join(f"{level} (NAB window) | {level} (during)" for level in levels)
    lines += ["", "Recall by anomaly kind at the shipped thresholds:", "", f"| kind | anomalies | {header} |"]
    lines.append("|---|---:|" + "---:|" * 2 * len(levels))
    kinds = [kind for kind in ALL_ANOMALY_KINDS if kind in set(outcomes[levels[0]][0]["kind"])]
    for kind in [*kinds, "all"]:
        cells = []
        for level in levels:
            found = outcomes[level][0]
            own = found if kind == "all" else found[found["kind"] == kind]
            cells += [_pct(own["found"].mean()), _pct(own["found_during"].mean())]
        lines.append(f"| {kind} | {len(own)} | " + " | ".join(cells) + " |")
    columns = " | ".join(f"recall {level} | FP/week {level} | clean quiet {level}" for level in levels)
    lines += [
        "",
        "By series style (recall in NAB windows; FP/week: false-alarm episodes per series-week; "
        "clean quiet: anomaly-free names with no alarm):",
        "",
    ]
    lines += [f"| style | names | anomalies | {columns} |", "|---|---:|---:|" + "---:|" * 3 * len(levels)]
    groups = {"all": list(styles["name"]), **style_groups(styles)}
    for group, names in groups.items():
        cells, counts = [], ""
        for level in levels:
            found, series = outcomes[level]
            summary = summarise(found[found["name"].isin(names)], series[series["name"].isin(names)])
            counts = f"{int(summary['series'])} | {int(summary['anomalies'])}"
            quiet = f"{_pct(summary['clean_quiet'])} of {int(summary['clean'])}"
            cells += [_pct(summary["recall"]), f"{summary['fp_per_week']:.2f}", quiet]
        lines.append(f"| {group} | {counts} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--output", type=Path, required=True, help="markdown file to write")
    parser.add_argument("--workdir", type=Path, help="where the set and results go (default: a temporary folder)")
    parser.add_argument("--model", type=Path, help="prefix of a saved detector model (.keras + .pkl): no training")
    parser.add_argument("--epochs", type=int, default=6, help="LSTM epochs when training here")
    parser.add_argument("--seed", type=int, default=DEVSET_SPEC.seed)
    parser.add_argument("--names", type=int, default=DEVSET_SPEC.n_names)
    parser.add_argument(
        "--max-rows", type=int, default=DEVSET_SPEC.steps, help="longest name (e.g. 20000); the default keeps ~5 min"
    )
    args = parser.parse_args(argv)
    command = shlex.join(["python", "benchmarks/detection_devset.py", *(sys.argv[1:] if argv is None else argv)])
    started = time.perf_counter()
    workdir = args.workdir or Path(tempfile.mkdtemp(prefix="detection_devset_"))
    days = args.max_rows * STEP_MINUTES / (24 * 60)
    spec = dataclasses.replace(DEVSET_SPEC, seed=args.seed, n_names=args.names, days=days)
    data_dir, results_dir = workdir / "devset_data", workdir / "devset_results"

    sim = simulate(spec)
    anomalies = write_devset(sim, data_dir)
    anomalies.to_csv(workdir / "devset_labels.csv", index=False)
    sim.styles.to_csv(workdir / "devset_styles.csv", index=False)
    rows = int(sim.values.count().sum())
    print(f"dev set: {len(sim.styles)} names, {rows} rows, {len(anomalies)} anomalies in {data_dir}", flush=True)

    done: list[str] = []

    def progress(name: str) -> None:
        done.append(name)
        if len(done) % 10 == 0 or len(done) == len(sim.styles):
            print(f"  scored {len(done)}/{len(sim.styles)} files ({time.perf_counter() - started:.0f} s)", flush=True)

    print("detecting" + ("" if args.model else f" (training the LSTM first, {args.epochs} epochs)"), flush=True)
    detect_started = time.perf_counter()
    run_detector(data_dir, results_dir, args.epochs, args.model, progress)
    detect_seconds = time.perf_counter() - detect_started

    print("scoring", flush=True)
    results = nab_scoring.read_results_directory(results_dir, detector=DETECTOR)
    nab_table = nab_scoring.evaluate_all_profiles(results, nab.read_anomaly_windows(data_dir))
    config = detector_config()
    thresholds = {"warning": float(config.warning_score), "critical": float(config.critical_score)}
    outcomes = {level: threshold_outcomes(results, anomalies, value) for level, value in thresholds.items()}
    model_note = f"loaded from `{args.model}`" if args.model else f"trained here ({args.epochs} epochs)"
    notes = [
        f"Dev set: {len(sim.styles)} simulated names (seed {spec.seed}), {rows} rows, {len(anomalies)} labelled "
        f"anomalies; {int((sim.styles['unit'] == 'count').sum())} count names, "
        f"{int((sim.styles['rows'] < LONG_ROWS).sum())} shorter than {LONG_ROWS} rows.",
        f"Detector: `{type(config).__module__}.{type(config).__name__}` defaults, thresholds "
        + ", ".join(f"{level} {value:g}" for level, value in thresholds.items())
        + f"; LSTM {model_note}; detect (training included) {detect_seconds:.0f} s, "
        f"total {time.perf_counter() - started:.0f} s.",
        'Found: a score >= threshold inside the anomaly\'s NAB window; "during": between its first slot and 1 h '
        "after its last. False alarms: episodes of alarm rows outside every window, alarm rows <= 1 h apart counted "
        "once. Rows in NAB's probationary period are not scored.",
    ]
    text = markdown(command, nab_table, outcomes, sim.styles, notes)
    args.output.parent.mkdir(parents=True, exist_ok=True)
    args.output.write_text(text + "\n")
    print(text)
    print(f"\nset and results in {workdir}; report in {args.output}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
