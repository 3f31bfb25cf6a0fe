"""The tick's anomaly report: scoring from the hourly checkpoint, the checkpoint it leaves, its words."""

from __future__ import annotations

import numpy as np
import pandas as pd

from tauxcharge_assets.detection.checkpoints import Checkpoint, state_documents, state_from_documents
from tauxcharge_assets.detection.detector import FIELDS, DetectorConfig, DetectorState, score_matrix
from tauxcharge_assets.detection.report import anomaly_documents, score_tick, slot_number

CONFIG = DetectorConfig()
STEP = pd.Timedelta(minutes=5)
END = pd.Timestamp("2026-03-02 12:00", tz="UTC")  # a tick ending on the hour


def window(end: pd.Timestamp, slots: int = 288, names: tuple[str, ...] = ("calm", "jumps")) -> pd.DataFrame:
    stamps = pd.date_range(end - slots * STEP, end - STEP, freq="5min")
    rng = np.random.default_rng(int(end.value // STEP.value) % 1000)
    values = 50 + 3 * np.sin(np.arange(len(stamps)))[:, None] + rng.normal(0, 0.3, (len(stamps), len(names)))
    return pd.DataFrame(values, index=stamps, columns=list(names))


def one_step(actuals: pd.DataFrame) -> pd.DataFrame:
    """Forecasts equal to the noiseless value, with an 80 % band of +-0.4."""
    truth = 50 + 3 * np.sin(np.arange(len(actuals)))
    rows = [
        {"name": name, "issued_at": stamp - STEP, "target_timestamp": stamp, "value": truth[i],
         "lower": truth[i] - 0.4, "upper": truth[i] + 0.4, "model_version": "3"}
        for name in actuals.columns for i, stamp in enumerate(actuals.index)
    ]  # fmt: skip
    return pd.DataFrame(rows)


def test_without_a_checkpoint_the_tick_replays_its_window_and_leaves_the_next_hours_checkpoint() -> None:
    actuals = window(END)
    result = score_tick(actuals, one_step(actuals), None, CONFIG)
    assert result.replayed_slots == 288 and result.started_from.startswith("a fresh state")
    assert result.checkpoint is not None and result.checkpoint.end == END
    # The checkpoint is the state after every slot before END: the same loop over the window gives it.
    state = DetectorState.new(["calm", "jumps"])
    forecasts = one_step(actuals).pivot(index="target_timestamp", columns="name")
    bands = [forecasts[column].to_numpy() for column in ("lower", "value", "upper")]
    score_matrix(actuals.to_numpy(), *bands, CONFIG, first_slot=slot_number(actuals.index[0]), state=state)
    for field in ("mean", "variance", "count", "low", "high"):
        assert np.array_equal(getattr(result.checkpoint.state, field), getattr(state, field))


def test_a_tick_inside_the_hour_starts_from_its_checkpoint_and_replays_the_slots_since() -> None:
    first = window(END)
    checkpoint = score_tick(first, one_step(first), None, CONFIG).checkpoint
    later = window(END + 3 * STEP)
    later.loc[later.index[-1], "jumps"] = 95.0  # far beyond the 24 h range
    result = score_tick(later, one_step(later), checkpoint, CONFIG)
    assert result.replayed_slots == 3 and result.started_from == f"checkpoint of {END.isoformat()}"
    assert result.checkpoint is None  # only the tick ending on the hour writes one
    jumps = result.scored.set_index("name").loc["jumps"]
    assert jumps["severity"] == "critical" and jumps["evidence"] == "range_record" and jumps["score"] == 1.0
    assert jumps["reason"].startswith("actual 95 is above the highest value seen in up to 30 days")
    assert jumps["model_version"] == "3"
    calm = result.scored.set_index("name").loc["calm"]
    assert not calm["is_anomaly"]
    documents = list(anomaly_documents(result.flagged, "key", END))
    assert [d for d, _ in documents] == [d for d, _ in anomaly_documents(result.flagged, "key", END)]
    assert len(documents) == 1 and documents[0][1]["evidence"] == "range_record"


def test_a_checkpoint_survives_its_round_trip_through_documents() -> None:
    actuals = window(END)
    checkpoint = score_tick(actuals, one_step(actuals), None, CONFIG).checkpoint
    assert checkpoint is not None
    documents = state_documents(checkpoint, names_per_document=1)  # one name per document: two chunks
    assert len(documents) == 2 and len({doc_id for doc_id, _ in documents}) == 2
    assert np.isinf(checkpoint.state.low).any()  # the empty days of the range ring survive as infinities
    back = state_from_documents([document for _, document in reversed(documents)], CONFIG)
    assert back is not None and back.names == ["calm", "jumps"] and back.day == checkpoint.state.day
    for field in FIELDS:
        assert np.array_equal(getattr(back, field), getattr(checkpoint.state, field), equal_nan=True), field
    later = window(END + STEP)
    a = score_tick(later, one_step(later), checkpoint, CONFIG).scored
    b = score_tick(later, one_step(later), Checkpoint(END, back), CONFIG).scored
    pd.testing.assert_frame_equal(a, b)


def test_values_without_a_forecast_still_meet_the_range_rule_and_are_stored_with_null_forecasts() -> None:
    actuals = window(END)
    actuals.loc[actuals.index[-1], "jumps"] = 5.0
    result = score_tick(actuals, one_step(actuals[["calm"]]), None, CONFIG)
    jumps = result.scored.set_index("name").loc["jumps"]
    assert np.isnan(jumps["forecast"]) and jumps["is_anomaly"] and "below the lowest" in jumps["reason"]
    ((_, document),) = anomaly_documents(result.flagged[result.flagged["name"] == "jumps"], "key", END)
    assert document["forecast"] is None and document["evidence"] == "range_record"


def test_an_empty_window_gives_an_empty_report_that_can_be_filtered() -> None:
    actuals = window(END)
    result = score_tick(actuals.iloc[:0], one_step(actuals).iloc[:0], None, CONFIG)
    assert result.scored.empty and result.flagged.empty and result.checkpoint is None


def test_a_checkpoint_of_another_detector_version_is_not_used() -> None:
    """A deployment that changes the detector's state fields starts afresh instead of failing the tick."""
    actuals = window(END)
    checkpoint = score_tick(actuals, one_step(actuals), None, CONFIG).checkpoint
    assert checkpoint is not None
    documents = [document for _, document in state_documents(checkpoint)]
    for document in documents:
        document["state"]["arrays"].pop("run")
    assert state_from_documents(documents, CONFIG) is None


def test_a_missed_hour_starts_from_the_checkpoint_before_it_and_an_incomplete_one_is_refused() -> None:
    """The tick at :00 failed, so the hour has no checkpoint: the next tick replays from the one an hour
    earlier (inside its window) instead of losing the name's history, and leaves the missing one."""
    first = window(END)
    earlier = score_tick(first, one_step(first), None, CONFIG).checkpoint
    later = window(END + pd.Timedelta(hours=1) + 2 * STEP)
    result = score_tick(later, one_step(later), earlier, CONFIG)
    assert result.started_from == f"checkpoint of {END.isoformat()}" and result.replayed_slots == 12 + 2
    assert result.checkpoint is not None and result.checkpoint.end == END + pd.Timedelta(hours=1)
    documents = [document for _, document in state_documents(earlier, names_per_document=1)]
    assert state_from_documents(documents[:1], CONFIG) is None  # one of its two chunks is missing
