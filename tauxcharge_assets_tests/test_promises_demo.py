"""README: "run [the demo] twice and the second run adds zero documents — every write uses a deterministic id"."""

from __future__ import annotations

import uuid
from pathlib import Path
from typing import Any

import pandas as pd
import pytest

from tauxcharge_assets.cli import demo
from tauxcharge_assets.model.registry import latest_version, promote

MODEL_NAME = "tauxcharge-load-lstm"  # mlflow_from_env's registered name
TINY = {"training_days": 2.5, "epochs": 2, "lstm_units": 8, "dense_units": 8, "sample_stride": 12}


def test_a_second_demo_run_adds_no_document(es_url: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The demo function twice, with a tiny spec, against the test server, in a data folder of its own."""
    home = tmp_path / "dagster_home"
    home.mkdir()
    (home / "dagster.yaml").touch()
    tracking_uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    monkeypatch.setenv("TAUXCHARGE_ES_URL", es_url)
    monkeypatch.setenv("TAUXCHARGE_INDEX_PREFIX", f"test-demo-{uuid.uuid4().hex[:8]}")
    monkeypatch.setenv("TAUXCHARGE_HOME", str(tmp_path))
    monkeypatch.setenv("MLFLOW_TRACKING_URI", tracking_uri)
    monkeypatch.setenv("DAGSTER_HOME", str(home))
    monkeypatch.delenv("TAUXCHARGE_ES_API_KEY", raising=False)
    real_train = demo.train
    trainings: list[bool] = []

    def tiny_train(resources: dict, train_until: pd.Timestamp, instance: Any, **config: Any) -> bool:
        """The demo's retrain with a toy network; a first model that loses to naive is promoted by hand
        (the README's operator override for a first deployment), so the ticks have a champion."""
        promoted = real_train(resources, train_until, instance, **{**TINY, **config})
        trainings.append(promoted)
        if not promoted:
            promote(tracking_uri, MODEL_NAME, latest_version(tracking_uri, MODEL_NAME)["version"])
        return promoted

    monkeypatch.setattr(demo, "train", tiny_train)
    end = pd.Timestamp.now(tz="UTC").floor("h") - pd.Timedelta(days=1)
    first = demo.run_demo(n_names=4, days=2.5, end=end, replay_slots=2)
    second = demo.run_demo(n_names=4, days=2.5, end=end, replay_slots=2)
    assert len(trainings) == 1  # the second run reused the model trained through the same time
    assert first.documents_before == {"metrics": 0, "forecasts": 0, "anomalies": 0}
    assert first.documents_after["metrics"] > 0 and first.documents_after["forecasts"] == 2 * 4 * 12
    assert second.documents_before == first.documents_after
    assert second.documents_after == second.documents_before  # zero documents added
    assert len(second.forecasts) == 4 * 12  # the second run did issue (rewrite) its forecasts
