"""Detector settings side by side on the NAB and simulator sets, the model's forecasts computed once.

    python benchmarks/nab_benchmark.py --output /tmp/nab.md --save-model /tmp/nabmodel
    python benchmarks/nab_sweep.py --model /tmp/nabmodel [--output /tmp/sweep.md]

Each row changes one ``ScoringConfig`` field (or the rule that combines the evidence ratios) from the
defaults and reports the three normalized NAB scores of both sets, each profile at its own
corpus-wide threshold as ``nab_benchmark`` does. Settings are meant to be chosen on the simulator's
labels; the NAB columns show what such a choice does there, not a licence to tune on them.
"""

from __future__ import annotations

import argparse
import dataclasses
import sys
import tempfile
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

import numpy as np
import pandas as pd

sys.path.insert(0, str(Path(__file__).resolve().parent))

from nab_benchmark import EVALUATION_SPEC, write_simulator_set

from tauxcharge_assets.data import nab
from tauxcharge_assets.detection import labelled_files, nab_scoring, scoring

Cached = dict[str, tuple[pd.DataFrame, np.ndarray]]  # file stem -> (data, one-step p10/p50/p90)

SWEEP: list[dict[str, int]] = [
    {},
    *({"alarm_window": v} for v in (72, 144, 288)),
    *({"record_window": v} for v in (144, 576, 1152, 2016)),
    *({"level_window": v} for v in (3, 12)),
    *({"baseline_window": v} for v in (144,)),
    {"min_history": 36},
]


def forecasts_of(directory: Path, model: labelled_files.ForecastModel) -> Cached:
    """Every file's one-step quantiles, computed once: scoring is cheap, the network is not."""
    files = {path.stem: labelled_files.read_input(path) for path in sorted(directory.glob("*.csv"))}
    cached: Cached = {}
    for name, frame in files.items():
        values = frame["value"].to_numpy(np.float64)
        cached[name] = (
            frame,
            labelled_files.one_step_quantiles(model, name, values, labelled_files.first_stamp(frame)),
        )
    return cached


def normalized_scores(cached: Cached, windows: dict, config: scoring.ScoringConfig) -> list[float]:
    results = {}
    for name, (frame, quantiles) in cached.items():
        values = frame["value"].to_numpy(np.float64)
        score = scoring.score_series(values, quantiles[:, 0], quantiles[:, 1], quantiles[:, 2], config).score[:, 0]
        results[name] = pd.DataFrame(
            {"timestamp": pd.to_datetime(frame["timestamp"], utc=True), "anomaly_score": np.nan_to_num(score)}
        )
    return nab_scoring.evaluate_all_profiles(results, windows)["normalized"].round(1).tolist()


@contextmanager
def combining(rule: Callable[[list[np.ndarray]], tuple[np.ndarray, np.ndarray]]) -> Iterator[None]:
    """Swap the rule that picks the two ratios whose geometric mean is the combined ratio."""
    original = scoring._two_largest
    scoring._two_largest = rule
    try:
        yield
    finally:
        scoring._two_largest = original


def largest_only(arrays: list[np.ndarray]) -> tuple[np.ndarray, np.ndarray]:
    largest = np.max(np.stack(arrays), axis=0)
    return largest, largest


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", type=Path, required=True, help="prefix saved by nab_benchmark --save-model")
    parser.add_argument("--nab-dir", type=Path, default=nab.DEFAULT_NAB_DIR)
    parser.add_argument("--output", type=Path)
    args = parser.parse_args(argv)
    model = labelled_files.load_detector_model(args.model)
    simulator_dir = Path(tempfile.mkdtemp(prefix="nab_sweep_")) / "simulator_data"
    write_simulator_set(EVALUATION_SPEC, simulator_dir)
    sets = {"simulator": simulator_dir, "NAB AWS": args.nab_dir}
    cached = {label: forecasts_of(directory, model) for label, directory in sets.items()}
    windows = {label: nab.read_anomaly_windows(directory) for label, directory in sets.items()}
    base = scoring.ScoringConfig()

    def row(label: str, config: scoring.ScoringConfig) -> str:
        cells = [f"{v:.1f}" for name in sets for v in normalized_scores(cached[name], windows[name], config)]
        return f"| {label} | " + " | ".join(cells) + " |"

    lines = [
        "| setting | sim standard | sim low FP | sim low FN | NAB standard | NAB low FP | NAB low FN |",
        "|---|---:|---:|---:|---:|---:|---:|",
    ]
    for change in SWEEP:
        label = ", ".join(f"{k}={v}" for k, v in change.items()) or "defaults"
        lines.append(row(label, dataclasses.replace(base, **change)))
        print(lines[-1], flush=True)
    with combining(largest_only):
        lines.append(row("largest ratio alone (not the top-two geometric mean)", base))
        print(lines[-1], flush=True)
    text = "\n".join(lines)
    if args.output:
        args.output.write_text(text + "\n")
    print(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
