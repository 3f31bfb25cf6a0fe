import numpy as np
import pandas as pd

from tauxcharge_assets.anomalies import (
    AnomalyThresholds,
    anomaly_documents,
    detect_anomalies,
    forecast_documents,
    forecast_frame,
    usual_variation,
)
from tauxcharge_assets.sequences import SequenceTensors

T = pd.Timestamp("2026-03-02 10:00", tz="UTC")


def test_a_spike_is_flagged_with_a_reason_and_normal_points_are_not() -> None:
    actuals = pd.DataFrame({"name": ["a", "b"], "timestamp": [T, T], "actual": [90.0, 41.0]})
    forecasts = pd.DataFrame(
        {"name": ["a", "b"], "target_timestamp": [T, T], "value": [40.0, 40.0], "model_version": ["1", "1"]}
    )
    scored = detect_anomalies(actuals, forecasts, pd.Series({"a": 2.0, "b": 2.0}), AnomalyThresholds())
    flagged = scored[scored["is_anomaly"]]
    assert flagged["name"].tolist() == ["a"]
    row = flagged.iloc[0]
    assert row["severity"] == "critical" and row["z_score"] == 25.0
    assert 0.99 < row["score"] <= 1.0
    assert "50.0 points above the forecast 40.0" in row["reason"]
    assert scored.set_index("name").loc["b", "severity"] == "normal"
    docs = list(anomaly_documents(flagged, "key", T))
    rerun_later = list(anomaly_documents(flagged, "key", T + pd.Timedelta(hours=1)))
    assert [doc_id for doc_id, _ in rerun_later] == [doc_id for doc_id, _ in docs]  # same ids: no duplicate


def test_usual_variation_is_robust_and_floored() -> None:
    values = np.array([[10, 11, 10, 11, 10, 90, 10], [5, 5, 5, 5, 5, 5, 5]], dtype=np.float32)
    scale = usual_variation(values, np.ones_like(values), min_scale=0.5)
    assert 1.0 < scale[0] < 2.0  # one outlier does not inflate it
    assert scale[1] == 0.5


def test_forecast_ids_are_stable_across_reruns() -> None:
    stamps = pd.date_range(end=T - pd.Timedelta(minutes=5), periods=4, freq="5min")
    seq = SequenceTensors(["a"], np.array([1]), np.zeros((1, 4)), np.ones((1, 4)), stamps, [])
    frame = forecast_frame(seq, np.array([[1.0, 2.0]]), "m", "3", "key")
    assert frame["target_timestamp"].tolist() == [T, T + pd.Timedelta(minutes=5)]
    first = [doc_id for doc_id, _ in forecast_documents(frame)]
    again = [doc_id for doc_id, _ in forecast_documents(forecast_frame(seq, np.array([[5.0, 6.0]]), "m", "4", "k"))]
    assert first == again and len(set(first)) == 2
