"""The registered version as one pyfunc: ``models:/<name>@champion`` answers raw recent values per name with
the forecasts a tick makes from them, in-process, without TensorFlow, and through ``mlflow models serve``.

One tiny model (1 epoch, 8 units) is trained on simulated series, registered and promoted in the session's
MLflow store; no Elasticsearch is needed. The expected answers come from the tick's own steps
(``clean_series``, ``build_sequences`` with the ids a tick would have, the loaded ``ForecastModel``,
``forecast_frame``).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
import urllib.error
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from tauxcharge_assets.data.cleaning import clean_series
from tauxcharge_assets.data.sequences import build_sequences
from tauxcharge_assets.data.simulator import SimulationSpec, simulate
from tauxcharge_assets.defs.resources import MlflowResource
from tauxcharge_assets.model import network as lstm
from tauxcharge_assets.model.forecast_documents import forecast_frame
from tauxcharge_assets.model.forecaster import series_from_frame, train_forecast_model
from tauxcharge_assets.model.serving import OUTPUT_COLUMNS
from tauxcharge_assets_tests.services import free_port, server_process

HP = lstm.ModelHyperparameters(epochs=1, lstm_units=8, dense_units=8, sample_stride=24)
END = pd.Timestamp("2026-03-02T12:00", tz="UTC")
STEP = pd.Timedelta(minutes=5)
UNSEEN = "server-unseen-99999"  # a name the model never saw
SERVE_STARTUP_S = 300  # `mlflow models serve` imports MLflow and the model under CPU contention


@dataclass(frozen=True)
class Served:
    mlflow: MlflowResource
    version: str
    trained_ids: dict[str, int]
    request: pd.DataFrame  # long format: name, timestamp (ISO 8601 strings), value

    @property
    def champion_uri(self) -> str:
        return f"models:/{self.mlflow.registered_model_name}@champion"


def recent_values(values: pd.DataFrame, names: list[str], seed: int) -> pd.DataFrame:
    """The last 288 slots of ``names`` in long format, with points missing (single ones and a 2-hour hole),
    one point off the grid and one name the model never saw."""
    rng = np.random.default_rng(seed)
    window = values[names].iloc[-288:].copy()
    window[UNSEEN] = window[names[0]].to_numpy()[::-1]
    long = window.rename_axis("timestamp").reset_index().melt("timestamp", var_name="name", value_name="value")
    long = long.dropna(subset=["value"])
    hole = (long["name"] == names[1]) & long["timestamp"].between(END - 200 * STEP, END - 176 * STEP)
    long = long[~hole & (rng.random(len(long)) > 0.05)].reset_index(drop=True)
    long.loc[0, "timestamp"] += pd.Timedelta(minutes=2)  # off the grid: floored onto it, as cleaning does
    long["timestamp"] = long["timestamp"].map(lambda stamp: stamp.isoformat())
    return long[["name", "timestamp", "value"]]


@pytest.fixture(scope="module")
def served(mlflow_resource: MlflowResource) -> Served:
    sim = simulate(SimulationSpec(n_names=4, days=3, end=END, seed=5))
    ids = {name: i + 1 for i, name in enumerate(sim.values.columns)}
    model = train_forecast_model(series_from_frame(sim.values, ids), HP, vocabulary_size=len(ids) + 1)
    handle = mlflow_resource.log_and_register(model, {}, tags={}, trained_through=END, extra_params={})
    mlflow_resource.promote(handle.version)
    return Served(mlflow_resource, handle.version, ids, recent_values(sim.values, list(sim.values.columns[:3]), 2))


def tick_forecasts(served: Served, request: pd.DataFrame, issued_at: pd.Timestamp) -> pd.DataFrame:
    """What a tick whose window ends at ``issued_at`` forecasts from these documents, with the ids the names
    index would give (a new name gets the next id, beyond the network's vocabulary)."""
    cleaned = clean_series(request, issued_at - 288 * STEP, issued_at)
    es_ids = {**served.trained_ids, UNSEEN: max(served.trained_ids.values()) + 1}
    sequences = build_sequences(cleaned, es_ids)
    model = served.mlflow.load_model(served.version)
    quantiles, methods = model.forecast_tick(
        sequences.names, sequences.name_ids, sequences.values, sequences.mask, sequences.next_timestamp
    )
    frame = forecast_frame(sequences, quantiles, "", "", "", methods)
    return frame[list(OUTPUT_COLUMNS)].reset_index(drop=True)


def assert_same_forecasts(answer: pd.DataFrame, expected: pd.DataFrame) -> None:
    assert list(answer.columns) == list(OUTPUT_COLUMNS)
    assert answer["name"].tolist() == expected["name"].tolist()
    for column in ("issued_at", "target_timestamp"):
        assert pd.to_datetime(answer[column], utc=True).tolist() == expected[column].tolist(), column
    assert answer["horizon_steps"].astype(int).tolist() == expected["horizon_steps"].astype(int).tolist()
    assert answer["method"].tolist() == expected["method"].tolist()
    for column in ("lower", "value", "upper"):
        np.testing.assert_allclose(answer[column].to_numpy(float), expected[column].to_numpy(float), rtol=0, atol=1e-9)


def test_the_champion_pyfunc_answers_the_ticks_forecasts_from_raw_recent_values(served: Served) -> None:
    import mlflow

    mlflow.set_tracking_uri(served.mlflow.tracking_uri)
    pyfunc = mlflow.pyfunc.load_model(served.champion_uri)
    answer = pyfunc.predict(served.request)
    expected = tick_forecasts(served, served.request, END)
    assert sorted(set(expected["name"])) == sorted([*served.request["name"].unique()])  # 4 names, 12 steps each
    assert len(expected) == 4 * HP.horizon and expected["issued_at"].eq(END).all()
    assert_same_forecasts(answer, expected)
    later = END + 6 * STEP  # forecasts issued later than the newest value: the window still ends there
    assert_same_forecasts(
        pyfunc.predict(served.request, params={"issued_at": later.isoformat()}),
        tick_forecasts(served, served.request, later),
    )


def test_a_request_without_usable_values_gets_no_rows_and_one_without_times_a_clear_error(served: Served) -> None:
    import mlflow

    mlflow.set_tracking_uri(served.mlflow.tracking_uri)
    pyfunc = mlflow.pyfunc.load_model(served.champion_uri)
    unusable = pd.DataFrame({"name": ["a", "b"], "timestamp": [END.isoformat()] * 2, "value": [np.nan, 250.0]})
    answer = pyfunc.predict(unusable)  # missing, and out of range: nothing to forecast from (a tick skips them)
    assert answer.empty and list(answer.columns) == list(OUTPUT_COLUMNS)
    with pytest.raises(ValueError, match="No parseable timestamp"):
        pyfunc.predict(pd.DataFrame({"name": ["a"], "timestamp": ["yesterday"], "value": [1.0]}))


def test_the_pyfunc_loads_and_predicts_without_tensorflow(served: Served, tmp_path: Path) -> None:
    request = tmp_path / "request.json"
    request.write_text(served.request.to_json(orient="split", index=False))
    script = textwrap.dedent(
        f"""
        import sys
        import mlflow
        import pandas as pd
        mlflow.set_tracking_uri({served.mlflow.tracking_uri!r})
        request = pd.read_json({str(request)!r}, orient="split", convert_dates=False)
        answer = mlflow.pyfunc.load_model({served.champion_uri!r}).predict(request)
        print(len(answer), sorted(m for m in ("tensorflow", "keras") if m in sys.modules))
        """
    )
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    assert done.stdout.split("\n")[-2] == f"{4 * HP.horizon} []"


@pytest.fixture
def model_server(served: Served, tmp_path: Path) -> Iterator[str]:
    """``mlflow models serve`` of the champion alias (the project's environment), stopped with its group."""
    port = free_port()
    scripts = Path(sys.executable).parent  # the environment's `mlflow`, and the `uvicorn` it runs by name
    env = {**os.environ, "MLFLOW_TRACKING_URI": served.mlflow.tracking_uri,
           "PATH": f"{scripts}{os.pathsep}{os.environ.get('PATH', '')}"}  # fmt: skip
    command = [str(scripts / "mlflow"), "models", "serve", "-m", served.champion_uri,
               "--env-manager", "local", "-p", str(port), "--host", "127.0.0.1"]  # fmt: skip
    url = f"http://127.0.0.1:{port}"
    with server_process(command, f"{url}/ping", tmp_path / "serve.log", SERVE_STARTUP_S, env=env):
        yield url


def test_mlflow_models_serve_answers_the_in_process_forecasts(served: Served, model_server: str) -> None:
    names = sorted(served.request["name"].unique())[:3]
    request = served.request[served.request["name"].isin(names)]
    issued_at = END + 2 * STEP  # through the server's `params` too
    split = json.loads(request.to_json(orient="split", index=False))
    body = json.dumps({"dataframe_split": split, "params": {"issued_at": issued_at.isoformat()}}).encode()
    call = urllib.request.Request(
        f"{model_server}/invocations", data=body, headers={"Content-Type": "application/json"}, method="POST"
    )
    with urllib.request.urlopen(call, timeout=120) as response:
        answer = pd.DataFrame(json.loads(response.read())["predictions"])
    expected = tick_forecasts(served, request, issued_at)
    assert sorted(set(expected["name"])) == names and len(expected) == 3 * HP.horizon
    assert_same_forecasts(answer[list(OUTPUT_COLUMNS)], expected)
