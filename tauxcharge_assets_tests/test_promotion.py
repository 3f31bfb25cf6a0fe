"""The champion/challenger rule on hand-made backtest summaries."""

import pandas as pd
import pytest

from tauxcharge_assets.model.promotion import promotion_decision

BASELINES = ["naive", "seasonal_day"]


def summary(
    challenger: float,
    champion: float | None,
    naive: float = 1.0,
    seasonal: float = 1.2,
    at_one_step: dict[str, float] | None = None,
) -> pd.DataFrame:
    """The decision row (horizon ``mean``) holds the given values; the one-step row (horizon ``1``) holds
    ``at_one_step`` or, by default, the opposite ranking, so a rule reading the wrong row decides wrongly."""
    mean = {"challenger": challenger, "naive": naive, "seasonal_day": seasonal}
    if champion is not None:
        mean["champion"] = champion
    worst = max(v for v in mean.values() if v == v)
    one_step = at_one_step or {name: worst + 1.0 - value for name, value in mean.items()}  # reversed ranking
    return pd.DataFrame(
        [{"forecaster": f, "horizon": "1", "median_mase": v} for f, v in one_step.items()]
        + [{"forecaster": f, "horizon": "mean", "median_mase": v} for f, v in mean.items()]
    )


def test_a_challenger_better_than_everything_is_promoted() -> None:
    decision = promotion_decision(summary(0.8, 0.9), BASELINES, champion_version="4")
    assert decision["promote"] is True
    assert decision["rivals"] == {"naive": 1.0, "seasonal_day": 1.2, "champion (version 4)": 0.9}


def test_the_decision_reads_the_mean_over_horizons_not_the_one_step_row() -> None:
    # Best over the horizons, worst at one step: promoted (the one-step row is the reverse ranking).
    won = promotion_decision(summary(0.8, 0.9), BASELINES, champion_version="4")
    assert won["promote"] is True and won["challenger"] == 0.8
    # Best at one step, worst over the horizons: not promoted.
    lost = promotion_decision(
        summary(1.3, 0.9, at_one_step={"challenger": 0.1, "naive": 1.0, "seasonal_day": 1.2, "champion": 0.9}),
        BASELINES,
        champion_version="4",
    )
    assert lost["promote"] is False and lost["challenger"] == 1.3


def test_a_challenger_worse_than_the_champion_is_not_promoted_even_if_it_beats_the_baselines() -> None:
    decision = promotion_decision(summary(0.85, 0.8), BASELINES, champion_version="4")
    assert decision["promote"] is False and "champion (version 4) (0.800)" in decision["reason"]


def test_the_first_model_must_beat_the_baselines() -> None:
    assert promotion_decision(summary(0.9, None), BASELINES, None)["promote"] is True
    lost = promotion_decision(summary(1.05, None), BASELINES, None)
    assert lost["promote"] is False and "naive (1.000)" in lost["reason"]


def test_a_tie_is_not_a_win() -> None:
    with_champion = promotion_decision(summary(0.8, 0.8), BASELINES, champion_version="4")
    assert with_champion["promote"] is False and "champion (version 4) (0.800)" in with_champion["reason"]
    with_baseline = promotion_decision(summary(1.0, None), BASELINES, None)
    assert with_baseline["promote"] is False and "naive (1.000)" in with_baseline["reason"]


def test_a_challenger_with_no_finite_rival_is_not_promoted() -> None:
    """``all([])`` is True: a backtest where nothing could be compared must not count as a win."""
    nan = float("nan")
    no_rival = promotion_decision(summary(0.5, None, naive=nan, seasonal=nan), BASELINES, None)
    assert no_rival["promote"] is False and no_rival["rivals"] == {}
    assert "no rival" in no_rival["reason"]
    baselines_absent = summary(0.5, None).query("forecaster == 'challenger'")
    absent = promotion_decision(baselines_absent, BASELINES, None)
    assert absent["promote"] is False and "no rival" in absent["reason"]
    # A champion alias without a finite backtest row is no rival either.
    champion_nan = promotion_decision(summary(0.5, nan, naive=nan, seasonal=nan), BASELINES, champion_version="4")
    assert champion_nan["promote"] is False and champion_nan["rivals"] == {}


def test_a_challenger_without_finite_forecasts_is_not_promoted() -> None:
    assert promotion_decision(summary(float("nan"), None), ["naive"], None)["promote"] is False


def test_a_summary_without_the_challenger_is_an_error() -> None:
    with pytest.raises(ValueError, match="challenger"):
        promotion_decision(summary(0.8, None).query("forecaster != 'challenger'"), ["naive"], None)
