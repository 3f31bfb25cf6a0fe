"""The champion/challenger rule on hand-made backtest summaries."""

import pandas as pd
import pytest

from tauxcharge_assets.model.promotion import promotion_decision


def summary(challenger: float, champion: float | None, naive: float = 1.0, seasonal: float = 1.2) -> pd.DataFrame:
    rows = [("challenger", challenger), ("naive", naive), ("seasonal_day", seasonal)]
    if champion is not None:
        rows.append(("champion", champion))
    return pd.DataFrame([{"forecaster": f, "horizon": h, "median_mase": v} for f, v in rows for h in ("1", "mean")])


def test_a_challenger_better_than_everything_is_promoted() -> None:
    decision = promotion_decision(summary(0.8, 0.9), ["naive", "seasonal_day"], champion_version="4")
    assert decision["promote"] is True
    assert decision["rivals"] == {"naive": 1.0, "seasonal_day": 1.2, "champion (version 4)": 0.9}


def test_a_challenger_worse_than_the_champion_is_not_promoted_even_if_it_beats_the_baselines() -> None:
    decision = promotion_decision(summary(0.85, 0.8), ["naive", "seasonal_day"], champion_version="4")
    assert decision["promote"] is False and "champion (version 4) (0.800)" in decision["reason"]


def test_the_first_model_must_beat_the_baselines() -> None:
    assert promotion_decision(summary(0.9, None), ["naive", "seasonal_day"], None)["promote"] is True
    lost = promotion_decision(summary(1.05, None), ["naive", "seasonal_day"], None)
    assert lost["promote"] is False and "naive (1.000)" in lost["reason"]


def test_a_challenger_without_finite_forecasts_is_not_promoted() -> None:
    assert promotion_decision(summary(float("nan"), None), ["naive"], None)["promote"] is False


def test_a_summary_without_the_challenger_is_an_error() -> None:
    with pytest.raises(ValueError, match="challenger"):
        promotion_decision(summary(0.8, None).query("forecaster != 'challenger'"), ["naive"], None)
