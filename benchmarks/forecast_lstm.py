"""The forecast benchmark with the project's LSTM beside the peers, in one run (same protocol, same origins).

    python benchmarks/forecast_lstm.py --data nab \\
        --forecasters naive,seasonal_day,seasonal_week,autoets,lightgbm,lstm \\
        --output /tmp/forecast_nab.md

The LSTM is trained on the training part of the series only (its default hyperparameters, as a
retrain uses them), then forecasts every origin of the test part like the peers.
"""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from forecast_benchmark import BenchmarkContext, main, register

from tauxcharge_assets.model.forecaster import LstmForecaster
from tauxcharge_assets.model.network import ModelHyperparameters


def lstm(context: BenchmarkContext) -> LstmForecaster:
    return LstmForecaster(ModelHyperparameters(horizon=context.spec.horizon, sample_stride=1), context.starts)


register("lstm", lstm)

if __name__ == "__main__":
    sys.exit(main())
