"""What the detector adds to a tick at 10,000 names: the scoring from the hourly checkpoint, and the
checkpoint written once an hour and read back on a cold worker.

    python benchmarks/detector_cost.py [--names 10000] [--runs 5]

Uses the project's local Elasticsearch (started if needed, or ``TAUXCHARGE_ES_URL``) with its own index
prefix, deleted afterwards. Medians of ``--runs``; the tick itself is measured by ``tick_benchmark.py``.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
import uuid

import numpy as np
import pandas as pd

from tauxcharge_assets.cli.runner import ensure_elasticsearch
from tauxcharge_assets.detection.checkpoints import CheckpointStore
from tauxcharge_assets.detection.detector import DetectorConfig
from tauxcharge_assets.detection.report import score_tick
from tauxcharge_assets.elastic.client import connect
from tauxcharge_assets.elastic.indices import IndexNames, ensure_indices

STEP = pd.Timedelta(minutes=5)


def frames(names: int, end: pd.Timestamp, slots: int = 288) -> tuple[pd.DataFrame, pd.DataFrame]:
    """A 24 h window of ``names`` names and the one-step forecasts of its last ``slots`` slots."""
    stamps = pd.date_range(end - slots * STEP, end - STEP, freq="5min")
    rng = np.random.default_rng(0)
    values = 50 + rng.normal(0, 1, (slots, names))
    columns = [f"name-{i:05d}" for i in range(names)]
    actuals = pd.DataFrame(values, index=stamps, columns=columns)
    forecasts = pd.DataFrame(
        {
            "name": np.tile(columns, slots),
            "issued_at": np.repeat(stamps - STEP, names),
            "target_timestamp": np.repeat(stamps, names),
            "value": 50.0,
            "lower": 48.7,
            "upper": 51.3,
            "model_version": "1",
        }
    )
    return actuals, forecasts


def timed(function, runs: int) -> float:
    seconds = []
    for _ in range(runs):
        started = time.perf_counter()
        function()
        seconds.append(time.perf_counter() - started)
    return statistics.median(seconds)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--names", type=int, default=10_000, help="names per tick")
    parser.add_argument("--runs", type=int, default=5, help="timed runs per measure (median)")
    args = parser.parse_args(argv)
    config = DetectorConfig()
    end = pd.Timestamp("2026-11-23 12:00", tz="UTC")
    actuals, forecasts = frames(args.names, end)
    cold = score_tick(actuals, forecasts, None, config)
    checkpoint = cold.checkpoint
    assert checkpoint is not None
    later_actuals, later_forecasts = frames(args.names, end + 11 * STEP)
    results = {
        "cold tick: replay of the 24 h window from a fresh state": timed(
            lambda: score_tick(actuals, forecasts, None, config), max(1, args.runs // 2)
        ),
        "warm tick: from the checkpoint, 11 slots replayed (the most in an hour)": timed(
            lambda: score_tick(later_actuals, later_forecasts, checkpoint, config), args.runs
        ),
    }
    client = connect(ensure_elasticsearch(), request_timeout_s=600)
    indices = IndexNames(f"detector-cost-{uuid.uuid4().hex[:8]}")
    ensure_indices(client, indices)
    try:
        store = CheckpointStore(client, indices.detector_state, config)
        results["hourly checkpoint written to Elasticsearch (+ local cache)"] = timed(
            lambda: store.save(checkpoint), args.runs
        )
        results["checkpoint read back from Elasticsearch (a new worker)"] = timed(
            lambda: store.read(checkpoint.end), args.runs
        )
        results["checkpoint from the local cache (a steady tick)"] = timed(
            lambda: store.load(checkpoint.end), args.runs
        )
    finally:
        client.indices.delete(index=f"{indices.prefix}-*", allow_no_indices=True)
    print(f"| detector, {args.names:,} names (median of {args.runs}) | seconds |")
    print("|---|---:|")
    for label, seconds in results.items():
        print(f"| {label} | {seconds:.2f} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
