import dataclasses

import numpy as np
import pandas as pd

from tauxcharge_assets.data.simulator import SimulationSpec, load_labels, save_labels, simulate

END = pd.Timestamp("2026-03-02", tz="UTC")


def test_deterministic_for_a_seed_and_different_across_seeds() -> None:
    a = simulate(SimulationSpec(n_names=5, days=3, end=END, seed=1))
    b = simulate(SimulationSpec(n_names=5, days=3, end=END, seed=1))
    c = simulate(SimulationSpec(n_names=5, days=3, end=END, seed=2))
    pd.testing.assert_frame_equal(a.values, b.values)
    assert list(a.documents()) == list(b.documents())
    assert not np.allclose(np.nan_to_num(a.values.to_numpy()), np.nan_to_num(c.values.to_numpy()))


def test_shape_range_cycles_and_defects() -> None:
    spec = SimulationSpec(n_names=8, days=14, end=END, seed=3, duplicate_rate=0.02, bad_value_rate=0.01)
    sim = simulate(spec)
    assert sim.values.shape == (14 * 288, 8)
    assert sim.values.index[-1] == END - pd.Timedelta(minutes=5)
    finite = sim.values.to_numpy()[~np.isnan(sim.values.to_numpy())]
    assert finite.min() >= 0 and finite.max() <= 100
    assert 0.005 < sim.values.isna().to_numpy().mean() < 0.02
    hourly = sim.values.groupby(sim.values.index.hour).mean().mean(axis=1)
    assert hourly.max() - hourly.min() > 5  # a daily cycle
    docs = [doc for _, doc in sim.documents()]
    ids = [doc_id for doc_id, _ in sim.documents()]
    assert len(set(ids)) == len(ids)
    keys = pd.Series([(d["name"], d["timestamp"]) for d in docs])
    assert keys.duplicated().sum() > 0  # duplicated documents, under distinct ids
    assert any(d["value"] == "n/a" for d in docs)
    assert any(isinstance(d["value"], float) and d["value"] > 100 for d in docs)


def test_labels_mark_the_injected_anomalies(tmp_path) -> None:
    sim = simulate(SimulationSpec(n_names=10, days=7, end=END, seed=5, anomalies_per_name=1.0, recent_anomalies=3))
    assert len(sim.labels) >= 3
    assert set(sim.labels["kind"]) <= {"spike", "level_shift", "flat_line", "drift"}
    recent = sim.labels[sim.labels["start"] >= END - pd.Timedelta(hours=1)]
    assert len(recent) >= 3
    path = save_labels(sim, tmp_path / "labels.json")
    pd.testing.assert_frame_equal(load_labels(path), sim.labels)


def test_new_fields_at_their_defaults_keep_the_demo_series_and_styles_have_their_own_draws() -> None:
    spec = SimulationSpec(n_names=6, days=3, end=END, seed=9, anomalies_per_name=1.0)
    sim = simulate(spec)
    assert set(sim.styles["unit"]) == {"percent"} and set(sim.styles["noise"]) == {"normal"}
    assert (sim.styles["rows"] == spec.steps).all() and not sim.styles["anomaly_free"].any()
    assert set(sim.labels["kind"]) <= {"spike", "level_shift", "flat_line", "drift"}
    with_counts = simulate(dataclasses.replace(spec, count_share=0.5))
    percent = with_counts.styles.loc[with_counts.styles["unit"] == "percent", "name"]
    pd.testing.assert_frame_equal(with_counts.values[percent], sim.values[percent])
    pd.testing.assert_frame_equal(with_counts.labels, sim.labels)
