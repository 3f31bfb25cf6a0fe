"""The dashboard: its data functions, and the page itself in headless Chromium.

The browser test loads a small world (simulated metrics, one real tick recorded in a Dagster instance with a
stub model, a champion registered in MLflow with its backtest metrics, one-step forecasts and anomalies
written with the project's document builders), starts the page with the README's command
(``python -m tauxcharge_assets dashboard``) and drives Debian's ``chromium`` through ``chromedriver``
(Selenium): the page loads without an exception, a name is chosen, the chart draws its values, the
anomaly table sorts both ways, the capacity and health sections show what was loaded. Screenshots go to
the test's folder; ``UPDATE_SCREENSHOTS=1`` refreshes the README's (``tauxcharge_assets_tests/screenshots``).
"""

from __future__ import annotations

import os
import shutil
import sys
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from dagster import AssetCheckKey, AssetKey, DagsterInstance, FilesystemIOManager, materialize

from tauxcharge_assets.cli.runner import QUIET
from tauxcharge_assets.dashboard import data
from tauxcharge_assets.data.simulator import SimulationSpec, simulate
from tauxcharge_assets.definitions import ALL_ASSETS, ALL_CHECKS
from tauxcharge_assets.defs.partitions import partition_key_ending_at
from tauxcharge_assets.defs.resources import AlertWebhookResource, ElasticsearchResource, MlflowResource
from tauxcharge_assets.defs.serving.jobs import TICK_ASSETS
from tauxcharge_assets.detection.report import anomaly_documents
from tauxcharge_assets.elastic.bulk import bulk_write
from tauxcharge_assets.model import backtest
from tauxcharge_assets.model.forecast_documents import forecast_documents
from tauxcharge_assets.model.promotion import CHALLENGER
from tauxcharge_assets.model.training import backtest_metrics
from tauxcharge_assets_tests.services import free_port, server_process
from tauxcharge_assets_tests.test_promises_checks import StubModel

ROOT = Path(__file__).resolve().parents[1]
SCREENSHOTS = Path(__file__).resolve().parent / "screenshots"
CHROMIUM, CHROMEDRIVER = shutil.which("chromium") or "/usr/bin/chromium", shutil.which("chromedriver")
STEP = pd.Timedelta(minutes=5)
END = pd.Timestamp.now(tz="UTC").floor("5min")
HISTORY_SLOTS = 72  # six hours of one-step forecasts per name
CHOSEN = "link-par-00001"  # the name the browser picks
HOT = "cell-par-00002"  # held near 85 %: the stub's p90 (last + 1) crosses 80 % within the hour


# --- the data functions, pure --------------------------------------------------------------------------


def flagged(rows: list[tuple[str, str, str, float]]) -> pd.DataFrame:
    return pd.DataFrame(
        {
            "timestamp": pd.to_datetime([row[0] for row in rows], utc=True),
            "name": [row[1] for row in rows],
            "severity": [row[2] for row in rows],
            "score": [row[3] for row in rows],
        }
    )


def test_anomalies_sort_by_severity_then_score_or_by_time() -> None:
    frame = flagged([
        ("2026-01-01 10:00", "a", "warning", 0.55),
        ("2026-01-01 09:00", "b", "critical", 0.61),
        ("2026-01-01 11:00", "c", "warning", 0.59),
        ("2026-01-01 08:00", "d", "critical", 0.90),
    ])  # fmt: skip
    assert data.sort_anomalies(frame, "severity")["name"].tolist() == ["d", "b", "c", "a"]
    assert data.sort_anomalies(frame, "time")["name"].tolist() == ["c", "a", "b", "d"]
    with pytest.raises(ValueError, match="sort by one of"):
        data.sort_anomalies(frame, "score")


def test_backtest_table_puts_the_champion_beside_the_baselines_from_the_run_metrics() -> None:
    """The metric names are the ones a retrain logs (``training.backtest_metrics`` of a real backtest)."""
    metrics = champion_metrics()
    table = data.backtest_table(metrics, "3").set_index("forecaster")
    assert set(table.index) == {"version 3 (champion)", "naive", "seasonal_day", "seasonal_week"}
    for forecaster, name in (("version 3 (champion)", CHALLENGER), ("naive", "naive")):
        assert table.loc[forecaster, "median MASE, all steps"] == metrics[f"backtest_{name}_median_mase_hmean"]
        assert table.loc[forecaster, "median MASE t+5 min"] == metrics[f"backtest_{name}_median_mase_h1"]
        assert table.loc[forecaster, "80 % band coverage"] == metrics[f"backtest_{name}_coverage_hmean"]
    assert table["median MASE, all steps"].is_monotonic_increasing  # best first
    with_replaced = {**metrics, "backtest_champion_median_mase_hmean": 2.0, "validation_coverage_80": 0.8}
    assert "the version it replaced" in set(data.backtest_table(with_replaced, "3")["forecaster"])


def test_tick_lag_is_now_minus_the_newest_tick() -> None:
    now = pd.Timestamp("2026-01-01 12:07", tz="UTC")
    assert data.TickHealth(now - pd.Timedelta(minutes=7), None, now).lag_text == "7 min"
    assert data.TickHealth(now - pd.Timedelta(hours=5), None, now).lag_text == "5.0 h"
    assert data.TickHealth(None, None, now).lag_text == "no tick yet"


class ChallengerStandIn(backtest.NaiveForecaster):
    """A forecaster backtested under the challenger's name: the run metrics a retrain logs, without training."""

    name = CHALLENGER

    def _point(self, values: np.ndarray, origins: np.ndarray, horizon: int) -> np.ndarray:
        return super()._point(values, origins, horizon) * 0.999


def champion_metrics() -> dict[str, float]:
    rng = np.random.default_rng(3)
    steps = np.arange(3 * 288)
    series = {f"s{i}": (50 + 10 * np.sin(2 * np.pi * steps / 288) + rng.normal(0, 1, steps.size)).astype("float32")
              for i in range(3)}  # fmt: skip
    spec = backtest.BacktestSpec(train_fraction=0.7, horizon=12, report_horizons=(1, 12), origin_step=12)
    result = backtest.run_backtest(series, [ChallengerStandIn(), *backtest.baseline_forecasters(spec)], spec)
    return backtest_metrics(result)


# --- the world the page shows --------------------------------------------------------------------------


@dataclass(frozen=True)
class World:
    env: dict[str, str]
    names: list[str]
    critical_at: pd.Timestamp  # CHOSEN's critical anomaly (the most severe)
    newest_at: pd.Timestamp  # another name's warning, the newest anomaly
    elasticsearch: ElasticsearchResource


def register_champion(tracking_uri: str, artifacts: Path) -> str:
    """A registered version aliased ``champion`` whose run holds a retrain's backtest metrics."""
    import mlflow

    resource = MlflowResource(tracking_uri=tracking_uri, artifact_location=artifacts.as_uri())
    client = mlflow.MlflowClient(tracking_uri=tracking_uri, registry_uri=tracking_uri)
    run = client.create_run(resource.ensure_experiment())
    for key, value in champion_metrics().items():
        if np.isfinite(value):
            client.log_metric(run.info.run_id, key, value)
    client.set_terminated(run.info.run_id)
    client.create_registered_model(resource.registered_model_name)
    version = client.create_model_version(resource.registered_model_name, f"runs:/{run.info.run_id}/model",
                                          run_id=run.info.run_id).version  # fmt: skip
    # The alias is set directly: ``promote`` refuses a version without model files, and the page only reads
    # this one's metrics.
    client.set_registered_model_alias(resource.registered_model_name, "champion", str(version))
    return str(version)


def one_step_forecasts(values: pd.DataFrame, version: str) -> pd.DataFrame:
    """Forecasts made one step ahead for the last ``HISTORY_SLOTS`` slots of every name: the value +- noise."""
    recent = values.iloc[-HISTORY_SLOTS:].ffill().bfill()
    rng = np.random.default_rng(11)
    frame = recent.stack().rename("actual").reset_index()
    frame.columns = ["target_timestamp", "name", "actual"]
    centre = frame["actual"].to_numpy() + rng.normal(0, 1.0, len(frame))
    return pd.DataFrame({
        "name": frame["name"], "issued_at": frame["target_timestamp"], "target_timestamp": frame["target_timestamp"],
        "horizon_steps": 1, "value": centre.round(4), "lower": (centre - 3).round(4), "upper": (centre + 3).round(4),
        "model_name": "tauxcharge-load-lstm", "model_version": version, "partition_key": "history", "method": "lstm",
    })  # fmt: skip


def anomaly_rows(
    rows: list[tuple[str, pd.Timestamp, float, str, str]], actual: dict[tuple[str, pd.Timestamp], float]
) -> pd.DataFrame:
    return pd.DataFrame({
        "name": [r[0] for r in rows], "timestamp": [r[1] for r in rows], "actual": [actual[r[0], r[1]] for r in rows],
        "forecast": 50.0,
        "lower": 45.0, "upper": 55.0, "residual": 47.5, "z_score": 12.2, "evidence": "forecast_likelihood",
        "likelihood_decades": 7.0, "recent_surprise": 0.9, "usual_surprise": 0.1, "score": [r[2] for r in rows],
        "severity": [r[3] for r in rows], "reason": [r[4] for r in rows], "model_version": "1",
    })  # fmt: skip


@pytest.fixture(scope="module")
def world(es_url: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[World]:
    """Loaded once for the module's two tests (about 40 s on 2 busy cores: MLflow's tables, one tick)."""
    tmp_path = tmp_path_factory.mktemp("dashboard")
    es_resource = ElasticsearchResource(url=es_url, index_prefix=f"test-dash-{uuid.uuid4().hex[:8]}")
    client, indices = es_resource.get_client(), es_resource.indices
    sim = simulate(SimulationSpec(n_names=4, days=1.5, end=END, seed=5, missing_rate=0.0, duplicate_rate=0.0,
                                  late_rate=0.0, bad_value_rate=0.0, anomalies_per_name=0.0))  # fmt: skip
    critical_at, older_at, newest_at = END - 20 * STEP, END - 40 * STEP, END - STEP
    first = sim.values.columns[0]
    spikes = {(CHOSEN, critical_at): 97.5, (CHOSEN, older_at): 78.0, (first, newest_at): 12.0}  # what was flagged
    documents = []
    for i, (doc_id, document) in enumerate(sim.documents()):
        value = spikes.get((document["name"], pd.Timestamp(document["timestamp"])), document["value"])
        if document["name"] == HOT:
            value = 85.0 + (i % 10) / 10
        documents.append((doc_id, {**document, "value": value}))
    bulk_write(client, indices.metrics, documents)

    tracking_uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    version = register_champion(tracking_uri, tmp_path / "artifacts")
    home = tmp_path / "dagster_home"
    home.mkdir()
    (home / "dagster.yaml").write_text("telemetry:\n  enabled: false\n")
    home_patch = pytest.MonkeyPatch()
    home_patch.setenv("DAGSTER_HOME", str(home))  # the module's tests read the same instance
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(MlflowResource, "load_model", lambda self, version: StubModel())
        result = materialize(
            [*ALL_ASSETS, *ALL_CHECKS], selection=TICK_ASSETS, partition_key=partition_key_ending_at(END),
            resources={"elasticsearch": es_resource, "mlflow": MlflowResource(tracking_uri=tracking_uri),
                       "alerts": AlertWebhookResource(),
                       "io_manager": FilesystemIOManager(base_dir=str(tmp_path / "storage"))},
            instance=DagsterInstance.get(), run_config=QUIET, raise_on_error=True,
        )  # fmt: skip
    assert result.success

    history = one_step_forecasts(sim.values, version)
    bulk_write(client, indices.forecasts, list(forecast_documents(history)))
    flagged = anomaly_rows([
        (CHOSEN, critical_at, 0.93, "critical", "a 1-in-1e+09 spike of the test"),
        (CHOSEN, older_at, 0.52, "warning", "a 1-in-1e+05 wobble of the test"),
        (first, newest_at, 0.55, "warning", "the newest anomaly of the test"),
    ], spikes)  # fmt: skip
    bulk_write(client, indices.anomalies, list(anomaly_documents(flagged, "test", END)))

    env = {**os.environ, "TAUXCHARGE_ES_URL": es_resource.url, "TAUXCHARGE_INDEX_PREFIX": es_resource.index_prefix,
           "MLFLOW_TRACKING_URI": tracking_uri, "DAGSTER_HOME": str(home)}  # fmt: skip
    yield World(env, sorted(sim.values.columns), critical_at, newest_at, es_resource)
    home_patch.undo()
    client.indices.delete(index=f"{es_resource.index_prefix}-*", allow_no_indices=True)


def test_the_data_functions_read_what_the_world_holds(world: World) -> None:
    client, indices = world.elasticsearch.get_client(), world.elasticsearch.indices
    instance = DagsterInstance.get()  # the world's (DAGSTER_HOME)
    assert data.known_names(client, indices) == world.names
    start = END - HISTORY_SLOTS * STEP
    actual = data.actual_values(client, indices, CHOSEN, start, END)
    assert len(actual) == HISTORY_SLOTS and actual["timestamp"].is_monotonic_increasing
    band = data.forecast_band(client, indices, CHOSEN, start, END, 1)
    assert len(band) == HISTORY_SLOTS and (band["lower"] < band["value"]).all()
    assert (band["value"] < band["upper"]).all()
    latest = data.latest_forecast(client, indices, CHOSEN)
    assert len(latest) == 12 and (latest["issued_at"] == END).all()  # the tick's forecasts, every horizon
    assert data.anomalies(client, indices, start, END, name=CHOSEN)["severity"].tolist() == ["critical", "warning"]
    crossings = data.capacity(client, indices, data.SaturationRules(level=80.0))
    assert crossings["name"].tolist() == [HOT] and crossings["horizon"].tolist() == ["next_hour"]
    health = data.tick_health(client, indices, now=END + pd.Timedelta(minutes=3))
    assert health.latest_tick == END and health.lag_text == "3 min"
    checks = [(spec.key, spec.blocking) for check in ALL_CHECKS for spec in check.check_specs]
    results = data.check_results(instance, checks).set_index("check")
    assert (results.drop(index="challenger_beats_champion")["result"] == "passed").all()
    assert len(results) == 7 and results.loc["challenger_beats_champion", "result"] == "not run"
    assert results.loc["raw_es_extract_is_fresh", "partition"] == partition_key_ending_at(END)
    missing = data.check_results(instance, [(AssetCheckKey(AssetKey("nothing"), "never"), True)])
    assert missing["result"].tolist() == ["not run"]


# --- the page in headless Chromium ----------------------------------------------------------------------


@pytest.fixture
def dashboard(world: World, tmp_path: Path) -> Iterator[str]:
    """The README's command in its own process group, until the test ends."""
    port = free_port()
    command = [sys.executable, "-m", "tauxcharge_assets", "dashboard", "--port", str(port)]
    url = f"http://127.0.0.1:{port}"
    with server_process(command, f"{url}/_stcore/health", tmp_path / "dashboard.log", 90, env=world.env, cwd=ROOT):
        yield url


@pytest.fixture
def browser() -> Iterator[object]:
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    assert CHROMEDRIVER, "chromedriver is missing: scripts/test_services.sh installs chromium-driver"
    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for argument in ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
                     "--window-size=1400,1000", "--hide-scrollbars"):  # fmt: skip
        options.add_argument(argument)
    driver = webdriver.Chrome(options=options, service=Service(CHROMEDRIVER))
    driver.set_page_load_timeout(60)
    try:
        yield driver
    finally:
        driver.quit()


MARKS = """
const [root, kind, attribute, colour] = arguments; const counts = [];
for (const path of root.querySelectorAll(`g.mark-${kind}.role-mark path`)) {
  if ((path.getAttribute(attribute) || '').toLowerCase() === colour) counts.push((path.getAttribute('d') || '')
    .match(/[ML]/g)?.length ?? 0);
}
return counts;
"""


def drawn(driver, root, kind: str, attribute: str, colour: str) -> list[int]:
    """The chart's SVG marks of ``kind`` (line, symbol) drawn in ``colour``: each path's number of vertices."""
    return [int(n) for n in driver.execute_script(MARKS, root, kind, attribute, colour.lower())]


def test_the_page_in_headless_chromium(dashboard: str, browser, world: World, tmp_path: Path) -> None:
    from selenium.common.exceptions import TimeoutException
    from selenium.webdriver.common.by import By
    from selenium.webdriver.common.keys import Keys
    from selenium.webdriver.support.ui import WebDriverWait

    from tauxcharge_assets.dashboard.app import ACTUAL_COLOUR, ANOMALY_COLOUR

    driver = browser
    wait = WebDriverWait(driver, 90, poll_frequency=0.25)

    def section(key: str):
        return driver.find_element(By.CSS_SELECTOR, f".st-key-{key}")

    def text(key: str) -> str:
        return section(key).text

    def no_exception() -> None:
        errors = driver.find_elements(By.CSS_SELECTOR, '[data-testid="stException"]')
        assert not errors, errors[0].text

    def settled(condition):
        """``condition`` holds and Streamlit is not running the script (no stale frame mid-rerun)."""

        def check(_driver) -> bool:
            no_exception()
            running = driver.find_elements(By.CSS_SELECTOR, '[data-testid="stStatusWidget"]')
            return not any("Running" in element.text for element in running) and bool(condition())

        try:
            wait.until(check)
        except TimeoutException:
            driver.save_screenshot(str(tmp_path / "timeout.png"))
            raise AssertionError(f"the page never showed what was expected; it shows:\n{page_text()}") from None

    def page_text() -> str:
        return driver.find_element(By.TAG_NAME, "body").text

    driver.get(dashboard)
    settled(lambda: "Choose a name" in text("explorer") and "passed" in text("health") and HOT in text("capacity"))

    # Current anomalies: the critical one first, then by time the newest first.
    rows = lambda: section("anomalies").find_elements(By.CSS_SELECTOR, "tbody tr")  # noqa: E731
    assert "3 anomalies: 1 critical, 2 warning" in text("anomalies")
    assert world.critical_at.strftime("%Y-%m-%d %H:%M") in rows()[0].text and CHOSEN in rows()[0].text
    section("anomalies").find_element(By.XPATH, ".//label[.//p[text()='newest first']]").click()
    settled(lambda: world.newest_at.strftime("%Y-%m-%d %H:%M") in rows()[0].text)
    assert "the newest anomaly of the test" in rows()[0].text

    # Capacity and health show what the world holds.
    assert "1 names forecast to reach 80 %" in text("capacity") and "next_hour" in text("capacity")
    settled(lambda: "version 1 (champion)" in text("health"))  # the backtest table renders after the checks
    health = text("health")
    assert END.strftime("%Y-%m-%d %H:%M") in health and "champion version\n1" in health
    assert health.count("passed") == 6 and "not run" in health and "version 1 (champion)" in health
    assert "seasonal_week" in health

    # The explorer: choose a name, the chart draws its values, its forecasts and its anomalies.
    driver.set_window_size(1400, 1000)
    box = section("explorer").find_element(By.CSS_SELECTOR, '[data-testid="stSelectbox"] input')
    box.click()
    box.send_keys(CHOSEN)
    wait.until(lambda d: CHOSEN in " ".join(o.text for o in d.find_elements(By.CSS_SELECTOR, "[role='option']")))
    box.send_keys(Keys.ENTER)
    settled(lambda: f"{CHOSEN}: " in text("explorer") and section("explorer").find_elements(By.TAG_NAME, "svg"))
    settled(lambda: "a 1-in-1e+09 spike of the test" in text("explorer"))  # the reasons render under the chart
    caption = text("explorer")
    assert f"{CHOSEN}: 288 actual values, {HISTORY_SLOTS} forecasts, 2 anomalies" in caption, caption
    assert f"latest forecast issued {END.isoformat()}" in caption
    assert "a 1-in-1e+09 spike of the test" in caption  # the anomalies' reasons, under the chart
    chart = section("explorer")
    # The line of actual values has one vertex per value; the two anomalies are two red points.
    wait.until(lambda d: drawn(d, chart, "line", "stroke", ACTUAL_COLOUR) == [288])
    assert len(drawn(driver, chart, "symbol", "fill", ANOMALY_COLOUR)) == 2
    no_exception()

    shots = {"dashboard-explorer.png": section("explorer"), "dashboard-health.png": section("health")}
    driver.set_window_size(1400, 2600)
    full = tmp_path / "dashboard.png"
    driver.save_screenshot(str(full))
    assert full.stat().st_size > 10_000
    for name, element in shots.items():
        path = tmp_path / name
        element.screenshot(str(path))
        assert path.stat().st_size > 5_000
        if os.environ.get("UPDATE_SCREENSHOTS"):
            SCREENSHOTS.mkdir(exist_ok=True)
            shutil.copyfile(path, SCREENSHOTS / name)
