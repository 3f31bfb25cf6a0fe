"""NAB benchmark of the ``detect`` command: realAWSCloudwatch and a labelled simulator set, three cost profiles.

    python benchmarks/nab_benchmark.py --output /tmp/nab_benchmark.md [--model /tmp/nab_out_sim30]

Runs ``labelled_files.detect_directory`` on the NAB files (read in place) and on a simulator set written in the
same layout (one CSV per name plus ``anomaly_windows.json``; windows sized as NAB's: 10 % of the file's
length divided by its number of anomalies, centred on each anomaly's first slot, overlapping ones merged),
then scores both with ``nab_scoring`` at one corpus-wide threshold per profile, as NAB reports.

Without ``--model`` one LSTM is trained on the probationary 15 % of every NAB file plus simulated series
(another seed than the evaluation set): labels are never used. ``--save-model`` keeps it for the next run.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

import pandas as pd

from tauxcharge_assets.data import nab
from tauxcharge_assets.data.simulator import SimulationSpec, simulate
from tauxcharge_assets.detection import labelled_files, nab_scoring, scoring
from tauxcharge_assets.model.network import ModelHyperparameters

PRETRAIN_SPEC = SimulationSpec(n_names=30, days=7, end=pd.Timestamp("2026-03-02", tz="UTC"), seed=3)
EVALUATION_SPEC = SimulationSpec(
    n_names=30, days=14, end=pd.Timestamp("2026-01-05", tz="UTC"), seed=101, missing_rate=0.0, anomalies_per_name=1.5
)
COLUMNS = ["normalized", "threshold", "precision", "recall", "f1", "detected_windows", "windows", "fp"]


def write_simulator_set(spec: SimulationSpec, directory: Path) -> int:
    """Simulated names as NAB data files plus their label windows; returns the number of anomalies."""
    sim = simulate(spec)
    directory.mkdir(parents=True, exist_ok=True)
    rows = len(sim.values)
    step = sim.values.index[1] - sim.values.index[0]
    labels: dict[str, list[list[str]]] = {}
    for name in sim.values.columns:
        column = sim.values[name].dropna()
        stamps = column.index.strftime("%Y-%m-%d %H:%M:%S")
        pd.DataFrame({"timestamp": stamps, "value": column.round(4).to_numpy()}).to_csv(
            directory / f"{name}.csv", index=False
        )
        starts = sorted(sim.labels.loc[sim.labels["name"] == name, "start"])
        half = step * int(0.1 * rows / max(len(starts), 1) / 2)
        merged: list[list[pd.Timestamp]] = []
        for start in starts:
            low, high = max(start - half, column.index[0]), min(start + half, column.index[-1])
            if merged and low <= merged[-1][1]:
                merged[-1][1] = max(merged[-1][1], high)
            else:
                merged.append([low, high])
        labels[f"simulator/{name}.csv"] = [
            [a.strftime("%Y-%m-%d %H:%M:%S"), b.strftime("%Y-%m-%d %H:%M:%S")] for a, b in merged
        ]
    (directory / "anomaly_windows.json").write_text(json.dumps(labels, indent=1))
    return len(sim.labels)


def evaluate(
    data_dir: Path, results_dir: Path, model: labelled_files.ForecastModel, config: scoring.ScoringConfig
) -> tuple[pd.DataFrame, float]:
    """Detect, then score every profile; returns the table and the detect wall time."""
    started = time.perf_counter()
    labelled_files.detect_directory(data_dir, results_dir, config, model.hp, model=model)
    elapsed = time.perf_counter() - started
    results = nab_scoring.read_results_directory(results_dir, detector="tauxcharge")
    return nab_scoring.evaluate_all_profiles(results, nab.read_anomaly_windows(data_dir)), elapsed


def markdown(tables: dict[str, tuple[pd.DataFrame, float]], config: scoring.ScoringConfig, model_note: str) -> str:
    lines = [
        "| data set | profile | normalized | threshold | precision | recall | F1 | found | FP rows | detect s |",
        "|---|---|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for label, (table, seconds) in tables.items():
        for profile, row in table.iterrows():
            lines.append(
                f"| {label} | {profile} | {row.normalized:.1f} | {row.threshold:.4f} | {row.precision:.3f} | "
                f"{row.recall:.3f} | {row.f1:.3f} | {int(row.detected_windows)}/{int(row.windows)} | {int(row.fp)} | "
                f"{seconds:.0f} |"
            )
    fields = ("level_window", "baseline_window", "record_window", "alarm_window")
    settings = ", ".join(f"{name}={getattr(config, name)}" for name in fields)
    return "\n".join(
        [
            "NAB scores of `python -m tauxcharge_assets detect` (one corpus-wide threshold per profile).",
            "",
            *lines,
            "",
            f"Detector: `scoring.score_series` with {settings}; model: {model_note}.",
            "Precision = alarms inside a window / all alarms (rows); recall = windows detected / windows scored.",
        ]
    )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--output", type=Path, required=True, help="markdown file to write")
    parser.add_argument("--nab-dir", type=Path, default=nab.DEFAULT_NAB_DIR)
    parser.add_argument("--model", type=Path, help="prefix of a saved detector model (.keras + .pkl)")
    parser.add_argument("--save-model", type=Path, help="prefix to save the trained model to")
    parser.add_argument("--epochs", type=int, default=6)
    parser.add_argument("--workdir", type=Path, help="where results go (default: a temporary folder)")
    args = parser.parse_args(argv)
    config = scoring.ScoringConfig()
    workdir = args.workdir or Path(tempfile.mkdtemp(prefix="nab_benchmark_"))
    simulator_dir = workdir / "simulator_data"
    anomalies = write_simulator_set(EVALUATION_SPEC, simulator_dir)
    if args.model:
        model, note = labelled_files.load_detector_model(args.model), f"loaded from `{args.model}`"
    else:
        started = time.perf_counter()
        files = {path.stem: labelled_files.read_input(path) for path in sorted(args.nab_dir.glob("*.csv"))}
        hp = ModelHyperparameters(epochs=args.epochs, sample_stride=2)
        model = labelled_files.fit_detector_model(files, hp, simulate(PRETRAIN_SPEC).values)
        note = (
            f"LSTM trained in {time.perf_counter() - started:.0f} s on the NAB probationary parts + "
            f"{PRETRAIN_SPEC.n_names} simulated names (seed {PRETRAIN_SPEC.seed}), {args.epochs} epochs"
        )
        if args.save_model:
            labelled_files.save_detector_model(model, args.save_model)
    tables = {
        "NAB realAWSCloudwatch": evaluate(args.nab_dir, workdir / "nab_results", model, config),
        f"simulator (seed {EVALUATION_SPEC.seed}, {anomalies} anomalies)": evaluate(
            simulator_dir, workdir / "simulator_results", model, config
        ),
    }
    text = markdown(tables, config, note)
    args.output.parent.mkdir(parents=True, exist_ok=True)
    args.output.write_text(text + "\n")
    print(text)
    print(f"\nresults in {workdir}; table in {args.output}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
