"""Training time and accuracy at scale: the global LSTM on N simulated names x D days, on this machine.

    python benchmarks/training_benchmark.py --names 1000 --days 28 --output /tmp/training.md

Times what a retrain does (window sampling, fit with early stopping, conformal calibration) and
backtests the result beside the naive and seasonal-naive forecasts on the held-out last 20 %.
"""

from __future__ import annotations

import argparse
import resource
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd

from tauxcharge_assets.data.simulator import SimulationSpec, simulate
from tauxcharge_assets.model import backtest
from tauxcharge_assets.model.forecaster import LstmForecaster, series_from_frame, train_forecast_model
from tauxcharge_assets.model.network import ModelHyperparameters


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--names", type=int, default=1000)
    parser.add_argument("--days", type=float, default=28.0)
    parser.add_argument("--origin-step", type=int, default=12, help="backtest origins every N slots")
    parser.add_argument("--backtest-names", type=int, default=200, help="names backtested (a sample, for time)")
    parser.add_argument("--output", type=Path)
    args = parser.parse_args(argv)

    started = time.perf_counter()
    values = simulate(
        SimulationSpec(n_names=args.names, days=args.days, end=pd.Timestamp("2026-03-02", tz="UTC"), seed=5)
    ).values
    simulated = time.perf_counter()
    ids = {str(name): i + 1 for i, name in enumerate(values.columns)}
    hp = ModelHyperparameters()
    model = train_forecast_model(series_from_frame(values, ids), hp, len(ids) + 1)
    trained = time.perf_counter()
    sample = values.iloc[:, : args.backtest_names]
    spec = backtest.BacktestSpec(train_fraction=1 - hp.holdout_fraction, origin_step=args.origin_step)
    starts = {str(name): values.index[0] for name in sample.columns}
    result = backtest.run_backtest(
        backtest.grid_columns(sample),
        [LstmForecaster(hp, starts, model, ids), *backtest.baseline_forecasters(spec)],
        spec,
    )
    peak_gib = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20
    report = (
        f"## Training at scale: {args.names} names x {args.days:g} days\n\n"
        f"`python benchmarks/training_benchmark.py --names {args.names} --days {args.days:g}`\n\n"
        f"| step | wall time |\n|---|---|\n"
        f"| simulate {values.size:,} values | {simulated - started:.0f} s |\n"
        f"| train (sampling, {len(model.history.get('loss', []))} epochs with early stopping, calibration) "
        f"| **{trained - simulated:.0f} s** ({(trained - simulated) / 60:.1f} min) |\n\n"
        f"Peak RSS {peak_gib:.1f} GiB; validation coverage of the 80 % interval {model.validation_coverage:.3f}; "
        f"final losses {', '.join(f'{k} {v[-1]:.3f}' for k, v in model.history.items())}.\n\n"
        f"Backtest on {sample.shape[1]} of the names (last 20 %, origins every {args.origin_step} slots):\n\n"
        f"{result.to_markdown()}"
    )
    print(report)
    if args.output:
        args.output.write_text(report)
    return 0 if np.isfinite(model.validation_coverage) else 1


if __name__ == "__main__":
    sys.exit(main())
