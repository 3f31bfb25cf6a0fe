"""NAB benchmark of the anomaly detector: realAWSCloudwatch and a labelled simulator set, three cost profiles,
in-sample, at the shipped thresholds, and cross-validated.

    python benchmarks/nab_benchmark.py --output /tmp/nab_benchmark.md [--model PREFIX] [--save-model PREFIX]

The detector is the one the ticks and ``detect`` run (``labelled_files.score_file``: the LSTM's one-step
p10/p50/p90 of every row, then ``detector.score_matrix``). One LSTM is trained on the probationary 15 % of
every NAB file plus simulated series (another seed than the simulator evaluation set): labels are never
used for training. The forecasts are computed once per file; each detector setting then costs ~1 s.

What is reported, for each NAB profile:
* in-sample: one corpus-wide threshold chosen on all 17 files, as NAB's scoreboard does;
* at the shipped ``warning_score`` and ``critical_score`` (``DetectorConfig``): fixed, evaluated thresholds;
* cross-validated: leave-one-file-out and 5 folds, the threshold chosen on the other files only; and nested:
  ``raw_decades`` (the one setting chosen on NAB, among ``RAW_DECADES_GRID``) chosen with the threshold on
  the other files only. The spread is the normalised score of each 5-fold fold.
The simulator set is written in the NAB layout (windows sized as NAB's: 10 % of the file's length divided
by its number of anomalies, centred on each anomaly's first slot, overlapping ones merged).
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import pandas as pd

from tauxcharge_assets.data import nab
from tauxcharge_assets.data.simulator import SimulationSpec, simulate
from tauxcharge_assets.detection import detector, labelled_files, nab_scoring
from tauxcharge_assets.detection.detector import DetectorConfig
from tauxcharge_assets.model.network import ModelHyperparameters

PRETRAIN_SPEC = SimulationSpec(n_names=30, days=7, end=pd.Timestamp("2026-03-02", tz="UTC"), seed=3)
EVALUATION_SPEC = SimulationSpec(
    n_names=30, days=14, end=pd.Timestamp("2026-01-05", tz="UTC"), seed=101, missing_rate=0.0, anomalies_per_name=1.5
)


RAW_DECADES_GRID = (3.0, 4.0, 5.0, 7.0, 10.0, 20.0)
PROFILES = tuple(nab_scoring.PROFILES)
SHORT = {"standard": "standard", "reward_low_FP_rate": "low FP", "reward_low_FN_rate": "low FN"}


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


@dataclasses.dataclass(frozen=True)
class Forecasts:
    """Each file's rows and its one-step p10/p50/p90 (rows x 3), computed once."""

    frames: dict[str, pd.DataFrame]
    quantiles: dict[str, np.ndarray]

    def results(self, config: DetectorConfig) -> dict[str, pd.DataFrame]:
        """NAB result frames (timestamp, anomaly_score) of every file under ``config``."""
        out = {}
        for name, frame in self.frames.items():
            q = self.quantiles[name]
            scores = detector.score_matrix(frame["value"].to_numpy(np.float64), q[:, 0], q[:, 1], q[:, 2], config)
            out[name] = pd.DataFrame(
                {"timestamp": pd.to_datetime(frame["timestamp"], utc=True),
                 "anomaly_score": np.nan_to_num(scores[:, 0], nan=0.0)}
            )  # fmt: skip
        return out


def forecasts_for(directory: Path, model: labelled_files.ForecastModel) -> Forecasts:
    frames = {path.stem: labelled_files.read_input(path) for path in sorted(directory.glob("*.csv"))}
    quantiles = {
        name: labelled_files.one_step_quantiles(
            model, name, frame["value"].to_numpy(np.float64), labelled_files.first_stamp(frame)
        )
        for name, frame in frames.items()
    }
    return Forecasts(frames, quantiles)


def folds(names: list[str], k: int | None) -> list[list[str]]:
    """Leave-one-file-out (``k=None``) or ``k`` folds dealt round-robin over the sorted names."""
    ordered = sorted(names)
    if k is None:
        return [[name] for name in ordered]
    return [ordered[i::k] for i in range(k)]


def fixed_threshold_rows(results: dict[str, pd.DataFrame], windows: dict, thresholds: dict[str, float]) -> list[str]:
    rows = []
    for label, threshold in thresholds.items():
        cells = []
        for profile in PROFILES:
            score = nab_scoring.score_corpus(results, windows, profile, threshold=threshold)
            cells.append(f"{score.normalized:.1f}")
        score = nab_scoring.score_corpus(results, windows, "standard", threshold=threshold)
        rows.append(
            f"| {label} ({threshold:g}) | {' | '.join(cells)} | {score.detected_windows}/{score.windows} | {score.fp} |"
        )
    return rows


def nab_section(forecasts: Forecasts, windows: dict, config: DetectorConfig) -> list[str]:
    shipped = forecasts.results(config)
    in_sample = nab_scoring.evaluate_all_profiles(shipped, windows)
    grid = [forecasts.results(dataclasses.replace(config, raw_decades=r)) for r in RAW_DECADES_GRID]
    names = list(forecasts.frames)
    lines = [
        "| NAB realAWSCloudwatch | standard | low FP | low FN | windows found | FP rows |",
        "|---|---:|---:|---:|---:|---:|",
    ]
    cells = " | ".join(f"{in_sample.loc[p, 'normalized']:.1f}" for p in PROFILES)
    chosen = ", ".join(f"{in_sample.loc[p, 'threshold']:.3f}" for p in PROFILES)
    standard = in_sample.loc["standard"]
    lines.append(
        f"| in-sample, one threshold per profile ({chosen}) | {cells} | "
        f"{int(standard['detected_windows'])}/{int(standard['windows'])} | {int(standard['fp'])} |"
    )
    lines += fixed_threshold_rows(
        shipped, windows, {"shipped warning": config.warning_score, "shipped critical": config.critical_score}
    )
    spreads = {}
    for label, candidates, k in (
        ("cross-validated, leave one file out (threshold)", [shipped], None),
        ("cross-validated, 5 folds (threshold)", [shipped], 5),
        (f"nested, leave one file out (raw_decades in {RAW_DECADES_GRID} and threshold)", grid, None),
        ("nested, 5 folds (raw_decades and threshold)", grid, 5),
    ):
        scores = [nab_scoring.cross_validate(candidates, windows, folds(names, k), p) for p in PROFILES]
        lines.append(f"| {label} | {' | '.join(f'{s.normalized:.1f}' for s in scores)} | | |")
        if k is not None:
            spreads[label] = scores
    lines += ["", "Spread over the 5 folds (each fold's own normalised score, min .. max):", ""]
    for label, scores in spreads.items():
        ranges = ", ".join(
            f"{SHORT[s.profile]} {min(s.fold_normalized):.1f} .. {max(s.fold_normalized):.1f}" for s in scores
        )
        lines.append(f"* {label}: {ranges}")
    nested = spreads["nested, 5 folds (raw_decades and threshold)"][0]
    picked = [RAW_DECADES_GRID[i] for i in nested.chosen]
    thresholds = [round(t, 3) for t in nested.thresholds]
    lines.append(f"* raw_decades chosen per fold (standard): {picked}; thresholds {thresholds}")
    return lines


def step_cost(names: int = 10_000, steps: int = 30) -> float:
    """Median seconds of one detector step over ``names`` names (random data)."""
    rng = np.random.default_rng(0)
    state = detector.DetectorState.new([str(i) for i in range(names)])
    timings = []
    for t in range(steps):
        value = rng.normal(50, 5, names)
        started = time.perf_counter()
        detector.step(state, t, value, value - 2, value, value + 2)
        timings.append(time.perf_counter() - started)
    return float(np.median(timings))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--output", type=Path, required=True, help="markdown file to write")
    parser.add_argument("--nab-dir", type=Path, default=nab.DEFAULT_NAB_DIR, help="NAB realAWSCloudwatch folder")
    parser.add_argument("--model", type=Path, help="prefix of a saved detector model (.keras + .pkl)")
    parser.add_argument("--save-model", type=Path, help="prefix to save the trained model to")
    parser.add_argument("--epochs", type=int, default=6, help="training epochs at most")
    parser.add_argument("--workdir", type=Path, help="where the simulator set goes (default: a temporary folder)")
    args = parser.parse_args(argv)
    config = DetectorConfig()
    workdir = args.workdir or Path(tempfile.mkdtemp(prefix="nab_benchmark_"))
    simulator_dir = workdir / "simulator_data"
    anomalies = write_simulator_set(EVALUATION_SPEC, simulator_dir)
    started = time.perf_counter()
    if args.model:
        model, note = labelled_files.load_detector_model(args.model), f"loaded from `{args.model}`"
    else:
        files = {path.stem: labelled_files.read_input(path) for path in sorted(args.nab_dir.glob("*.csv"))}
        hp = ModelHyperparameters(epochs=args.epochs, sample_stride=2)
        model = labelled_files.fit_detector_model(files, hp, simulate(PRETRAIN_SPEC).values)
        note = (
            f"LSTM trained in {time.perf_counter() - started:.0f} s on the NAB probationary parts + "
            f"{PRETRAIN_SPEC.n_names} simulated names (seed {PRETRAIN_SPEC.seed}), {args.epochs} epochs"
        )
        if args.save_model:
            labelled_files.save_detector_model(model, args.save_model)
    print(note, flush=True)
    nab_forecasts = forecasts_for(args.nab_dir, model)
    lines = nab_section(nab_forecasts, nab.read_anomaly_windows(args.nab_dir), config)
    simulated = nab_scoring.evaluate_all_profiles(
        forecasts_for(simulator_dir, model).results(config), nab.read_anomaly_windows(simulator_dir)
    )
    lines += [
        "",
        f"Simulator set (seed {EVALUATION_SPEC.seed}, {anomalies} anomalies), in-sample: "
        + ", ".join(f"{SHORT[p]} {simulated.loc[p, 'normalized']:.1f}" for p in PROFILES)
        + f" ({int(simulated.loc['standard', 'detected_windows'])}/{int(simulated.loc['standard', 'windows'])} "
        f"windows, {int(simulated.loc['standard', 'fp'])} FP rows).",
        "",
        f"Detector: `{config}`; model: {note}. One detector step at 10,000 names: {1000 * step_cost():.1f} ms "
        f"(median). Total {time.perf_counter() - started:.0f} s.",
        "Windows found and FP rows are for the standard profile at that row's threshold (FP rows: alarm rows "
        "outside every window, after the probationary 15 %).",
    ]
    text = "\n".join(lines)
    args.output.parent.mkdir(parents=True, exist_ok=True)
    args.output.write_text(text + "\n")
    print(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
