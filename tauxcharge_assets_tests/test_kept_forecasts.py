"""The one-step forecasts the anomaly step keeps between ticks: how they slide, replace and reach back."""

from __future__ import annotations

import pandas as pd

from tauxcharge_assets.window.kept_forecasts import COLUMNS, carry_forward, store_for

STEP = pd.Timedelta(minutes=5)
T0 = pd.Timestamp("2026-03-02 10:00", tz="UTC")


def issued(at: pd.Timestamp, value: float) -> pd.DataFrame:
    """A tick's forecasts frame for two names and two horizons (only horizon 1 is kept)."""
    rows = []
    for name in ("a", "b"):
        for steps in (1, 2):
            target = at + (steps - 1) * STEP
            rows.append(
                {"name": name, "issued_at": at, "target_timestamp": target, "horizon_steps": steps,
                 "value": value, "lower": value - 1, "upper": value + 1, "model_version": "3"}
            )  # fmt: skip
    return pd.DataFrame(rows)


def test_kept_forecasts_slide_with_the_ticks_and_keep_only_one_step_ones() -> None:
    empty = pd.DataFrame(columns=COLUMNS)
    first = carry_forward(empty, issued(T0, 10.0), T0 - 2 * STEP, T0 + STEP)
    second = carry_forward(first.frame, issued(T0 + STEP, 20.0), T0 - STEP, T0 + 2 * STEP)
    assert sorted(set(second.frame["target_timestamp"])) == [T0, T0 + STEP]
    assert len(second.frame) == 4 and list(second.frame.columns) == COLUMNS
    third = carry_forward(second.frame, issued(T0 + 2 * STEP, 30.0), T0 + STEP, T0 + 3 * STEP)
    assert sorted(set(third.frame["target_timestamp"])) == [T0 + STEP, T0 + 2 * STEP]  # T0 slid out
    assert third.between(T0 + 2 * STEP, T0 + 3 * STEP)["value"].tolist() == [30.0, 30.0]
    assert third.covers(T0 + STEP) and not third.covers(T0)


def test_a_rerun_replaces_its_own_forecasts_as_its_documents_do() -> None:
    empty = pd.DataFrame(columns=COLUMNS)
    kept = carry_forward(empty, issued(T0, 10.0), T0 - STEP, T0 + STEP)
    again = carry_forward(kept.frame, issued(T0, 11.0), T0 - STEP, T0 + STEP)
    assert again.frame["value"].tolist() == [11.0, 11.0]


def test_the_store_finds_a_window_by_its_end_only(tmp_path) -> None:
    store = store_for("test-forecasts", base=tmp_path)
    kept = carry_forward(pd.DataFrame(columns=COLUMNS), issued(T0, 10.0), T0 - STEP, T0 + STEP)
    store.save(kept)
    loaded = store.load(T0 + STEP)
    assert loaded is not None and loaded.start == T0 - STEP
    pd.testing.assert_frame_equal(loaded.frame, kept.frame)
    assert store.load(T0) is None and store.load(T0 + 2 * STEP) is None
