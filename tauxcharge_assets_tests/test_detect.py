"""The ``detect`` command end to end on a tiny folder: NAB layout, causality, probation-only learning, bad input."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from tauxcharge_assets.detection import detector, labelled_files
from tauxcharge_assets.model.forecaster import ForecastModel
from tauxcharge_assets.model.network import ModelHyperparameters

HP = ModelHyperparameters(
    window=24, patch=12, horizon=2, lstm_units=4, embedding_dim=2, dense_units=8, epochs=1, batch_size=64
)
ROWS = 600
CONFIG = detector.DetectorConfig()


def series(seed: int, spike_at: int | None = None) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    stamps = pd.date_range("2026-01-05", periods=ROWS, freq="5min")
    values = 50 + 10 * np.sin(2 * np.pi * np.arange(ROWS) / 288) + rng.normal(0, 1, ROWS)
    if spike_at is not None:
        values[spike_at] += 40.0
    return pd.DataFrame({"timestamp": stamps.strftime("%Y-%m-%d %H:%M:%S"), "value": values.round(3)})


def write_folder(folder: Path, frames: dict[str, pd.DataFrame]) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    for name, frame in frames.items():
        frame.to_csv(folder / f"{name}.csv", index=False)
    return folder


@pytest.fixture(scope="module")
def frames() -> dict[str, pd.DataFrame]:
    return {"calm": series(1), "spiky": series(2, spike_at=450)}


@pytest.fixture(scope="module")
def model(frames: dict[str, pd.DataFrame]) -> ForecastModel:
    return labelled_files.fit_detector_model(frames, HP)


def test_writes_the_nab_results_layout(tmp_path: Path, frames: dict[str, pd.DataFrame], model: ForecastModel) -> None:
    written = labelled_files.detect_directory(
        write_folder(tmp_path / "in", frames), tmp_path / "out", CONFIG, HP, model=model
    )
    assert sorted(p.name for p in written.values()) == ["tauxcharge_calm.csv", "tauxcharge_spiky.csv"]
    for name, path in written.items():
        result = pd.read_csv(path)
        assert list(result.columns) == ["timestamp", "value", "anomaly_score"]
        assert len(result) == ROWS
        assert result["timestamp"].tolist() == frames[name]["timestamp"].tolist()
        assert result["anomaly_score"].between(0.0, 1.0).all()
    spiky = pd.read_csv(written["spiky"])["anomaly_score"]
    assert spiky.iloc[450] > 0.6
    assert spiky.iloc[450] == spiky.iloc[100:].max()


def test_truncated_input_gives_the_same_scores(
    tmp_path: Path, frames: dict[str, pd.DataFrame], model: ForecastModel
) -> None:
    """Causality of the whole command: rows after t (even the file's length) never change the score at t."""
    full = labelled_files.detect_directory(
        write_folder(tmp_path / "full", frames), tmp_path / "o1", CONFIG, HP, model=model
    )
    short = {name: frame.iloc[:400] for name, frame in frames.items()}
    cut = labelled_files.detect_directory(
        write_folder(tmp_path / "cut", short), tmp_path / "o2", CONFIG, HP, model=model
    )
    for name in frames:
        head = pd.read_csv(full[name])["anomaly_score"].to_numpy()[:400]
        assert np.allclose(pd.read_csv(cut[name])["anomaly_score"].to_numpy(), head, rtol=0, atol=1e-6)


def test_learning_uses_the_probationary_part_only(tmp_path: Path, frames: dict[str, pd.DataFrame]) -> None:
    """Training on a file whose post-probation rows differ gives the very same detector and scores."""
    probation = labelled_files.probationary_length(ROWS)
    altered = {name: frame.copy() for name, frame in frames.items()}
    for frame in altered.values():
        frame.loc[probation:, "value"] = 1000.0 + frame.loc[probation:, "value"] * 3
    first = labelled_files.detect_directory(write_folder(tmp_path / "a", frames), tmp_path / "oa", CONFIG, HP)
    second = labelled_files.fit_detector_model(altered, HP)
    again = labelled_files.detect_directory(
        write_folder(tmp_path / "b", frames), tmp_path / "ob", CONFIG, HP, model=second
    )
    for name in frames:
        scores = pd.read_csv(first[name])["anomaly_score"].to_numpy()
        assert np.allclose(pd.read_csv(again[name])["anomaly_score"].to_numpy(), scores, rtol=0, atol=1e-5)


def test_round_trip_of_a_saved_model(tmp_path: Path, frames: dict[str, pd.DataFrame], model: ForecastModel) -> None:
    labelled_files.save_detector_model(model, tmp_path / "m")
    loaded = labelled_files.load_detector_model(tmp_path / "m")
    folder = write_folder(tmp_path / "in", frames)
    a = labelled_files.detect_directory(folder, tmp_path / "oa", CONFIG, HP, model=model)
    b = labelled_files.detect_directory(folder, tmp_path / "ob", CONFIG, HP, model=loaded)
    assert pd.read_csv(a["spiky"]).equals(pd.read_csv(b["spiky"]))


@pytest.mark.parametrize(
    ("content", "message"),
    [
        ("timestamp,load\n2026-01-05 00:00:00,1\n", "missing column"),
        ("timestamp,value\n2026-01-05 00:00:00,1\n2026-01-05 00:05:00,abc\n", "non-numeric"),
        ("timestamp,value\nyesterday,1\n", "unreadable timestamp"),
        ("timestamp,value\n", "no rows"),
    ],
)
def test_bad_input_is_refused(tmp_path: Path, content: str, message: str, model: ForecastModel) -> None:
    folder = tmp_path / "in"
    folder.mkdir()
    (folder / "bad.csv").write_text(content)
    with pytest.raises(ValueError, match=message):
        labelled_files.detect_directory(folder, tmp_path / "out", CONFIG, HP, model=model)


def test_an_empty_folder_is_refused(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match="No CSV"):
        labelled_files.detect_directory(tmp_path, tmp_path / "out", CONFIG, HP)
