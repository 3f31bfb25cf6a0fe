"""Forecast and anomaly documents, and the tick's scoring of its newest slot."""

import numpy as np
import pandas as pd

from tauxcharge_assets.detection.report import EVIDENCE_WORDS, anomaly_documents, score_recent_slots
from tauxcharge_assets.detection.scoring import ScoringConfig

T = pd.Timestamp("2026-03-02 12:00", tz="UTC")
CONFIG = ScoringConfig(baseline_window=30, record_window=30, alarm_window=6, min_history=12)
STAMPS = pd.date_range(T - pd.Timedelta(minutes=5 * 39), T, freq="5min")


def one_step_forecasts(actuals: pd.DataFrame, spread: float = 1.0) -> pd.DataFrame:
    rows = []
    for name in actuals.columns:
        for stamp in actuals.index:
            rows.append(
                {
                    "name": name,
                    "issued_at": stamp,
                    "target_timestamp": stamp,
                    "value": 50.0,
                    "lower": 50.0 - spread,
                    "upper": 50.0 + spread,
                    "model_version": "3",
                }
            )
    return pd.DataFrame(rows)


def test_a_jump_in_the_newest_slot_is_flagged_critical_with_a_reason_and_calm_names_are_not() -> None:
    rng = np.random.default_rng(0)
    actuals = pd.DataFrame(50 + rng.normal(0, 0.78, (len(STAMPS), 2)), index=STAMPS, columns=["calm", "jumps"])
    actuals.loc[T, "jumps"] = 75.0
    scored = score_recent_slots(actuals, one_step_forecasts(actuals), CONFIG)
    by_name = scored.set_index("name")
    assert by_name.loc["jumps", "severity"] == "critical" and by_name.loc["jumps", "is_anomaly"]
    assert not by_name.loc["calm", "is_anomaly"] and by_name.loc["calm", "score"] < 0.5
    assert by_name.loc["jumps", "reason"].startswith("actual 75 vs forecast 50 (80 % interval 49..51)")
    assert by_name.loc["jumps", "evidence"] in EVIDENCE_WORDS
    assert by_name.loc["jumps", "model_version"] == "3"
    docs = list(anomaly_documents(scored[scored["is_anomaly"]], "key", T))
    again = list(anomaly_documents(scored[scored["is_anomaly"]], "key", T))
    assert [d for d, _ in docs] == [d for d, _ in again] and len(docs) == 1  # ids are deterministic


def test_values_without_a_forecast_are_scored_on_their_own_history_and_stored_with_null_forecasts() -> None:
    actuals = pd.DataFrame({"a": 50.0, "b": 50.0}, index=STAMPS)
    actuals.loc[T, "b"] = 90.0  # a level jump on a name whose forecast is missing
    scored = score_recent_slots(actuals, one_step_forecasts(actuals[["a"]]), CONFIG)
    b = scored.set_index("name").loc["b"]
    assert np.isnan(b["forecast"]) and b["is_anomaly"]
    ((_, document),) = anomaly_documents(scored[scored["name"] == "b"], "key", T)
    assert document["forecast"] is None and document["evidence"] in ("value_level", "variance")


def test_an_empty_window_gives_an_empty_report_that_can_be_filtered() -> None:
    actuals = pd.DataFrame({"a": 50.0}, index=STAMPS)
    scored = score_recent_slots(actuals.iloc[:0], one_step_forecasts(actuals).iloc[:0], CONFIG)
    assert scored.empty and scored[scored["is_anomaly"]].columns.tolist() == scored.columns.tolist()
