"""Alerts, against a local HTTP receiver and the real Elasticsearch: critical anomalies and failed runs reach the
webhook once per episode, never again on a rerun or a backfill; a receiver that fails is retried or the claim
released; no webhook, no alert and no error; the URL's token appears nowhere in a run's events."""

from __future__ import annotations

import json
import threading
import uuid
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import pandas as pd
import pytest
from dagster import (
    DagsterInstance,
    Definitions,
    EnvVar,
    FilesystemIOManager,
    build_run_status_sensor_context,
    materialize,
)
from elasticsearch import ConnectionError as ElasticsearchConnectionError

from tauxcharge_assets.alerts.anomalies import alert_critical_anomalies
from tauxcharge_assets.alerts.episodes import AlertLedger, Event, alert_once, episode_starts
from tauxcharge_assets.alerts.failures import FailedRun, alert_failed_run, one_line
from tauxcharge_assets.alerts.webhook import AlertDeliveryError, post_text
from tauxcharge_assets.cli.runner import QUIET, materialize_ticks
from tauxcharge_assets.data.simulator import SimulationSpec, simulate
from tauxcharge_assets.definitions import ALL_ASSETS, ALL_CHECKS
from tauxcharge_assets.defs.alerts.sensors import run_failure_alerts
from tauxcharge_assets.defs.partitions import partition_key_ending_at
from tauxcharge_assets.defs.resources import (
    ALERT_WEBHOOK_VARIABLE,
    AlertWebhookResource,
    ElasticsearchResource,
    MlflowResource,
    alerts_from_env,
)
from tauxcharge_assets.defs.serving.jobs import TICK_ASSETS, tick_job
from tauxcharge_assets.elastic.bulk import bulk_write, refresh_index
from tauxcharge_assets_tests.test_promises_checks import StubModel, use_stub_model

STEP = pd.Timedelta(minutes=5)
HOUR = pd.Timedelta(hours=1)
TOKEN = "T0KEN-s3cret-8e1f"  # what a real webhook URL hides in its path
URL_VARIABLE = "TAUXCHARGE_TEST_ALERT_WEBHOOK_URL"


class Receiver:
    """A local webhook: records every POSTed JSON body; answers the queued statuses first, then 200."""

    def __init__(self) -> None:
        self.posts: list[dict[str, Any]] = []
        self.accepted: list[dict[str, Any]] = []
        self.statuses: list[int] = []
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
                status = receiver.statuses.pop(0) if receiver.statuses else 200
                receiver.posts.append(body)
                if status == 200:
                    receiver.accepted.append(body)
                self.send_response(status)
                self.end_headers()
                self.wfile.write(b"ok" if status == 200 else b"error")

            def log_message(self, *args: Any) -> None:
                return

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/hooks/{TOKEN}"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def texts(self) -> list[str]:
        return [body["text"] for body in self.accepted]


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    server = Receiver()
    yield server
    server.server.shutdown()
    server.server.server_close()


# ---------------------------------------------------------------------------------------------------
# The webhook alone.


def test_a_receiver_failing_then_recovering_gets_the_message_once(receiver: Receiver) -> None:
    receiver.statuses = [500, 503]
    post_text(receiver.url, "hello", attempts=3, backoff_s=0.01)
    assert len(receiver.posts) == 3 and receiver.texts() == ["hello"]


def test_a_4xx_is_one_clear_line_without_the_url_and_is_not_retried(receiver: Receiver) -> None:
    receiver.statuses = [404]
    with pytest.raises(AlertDeliveryError) as raised:
        post_text(receiver.url, "hello", attempts=3, backoff_s=0.01)
    message = str(raised.value)
    assert "HTTP 404" in message and "\n" not in message and TOKEN not in message
    assert len(receiver.posts) == 1 and receiver.accepted == []
    receiver.statuses = [500, 500]
    with pytest.raises(AlertDeliveryError, match="after 2 attempts"):
        post_text(receiver.url, "hello", attempts=2, backoff_s=0.01)
    assert len(receiver.posts) == 3 and receiver.accepted == []


def test_the_webhook_url_comes_from_the_environment_and_is_never_shown(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(ALERT_WEBHOOK_VARIABLE, raising=False)
    assert alerts_from_env().enabled is False
    monkeypatch.setenv(ALERT_WEBHOOK_VARIABLE, f"https://hooks.example/services/{TOKEN}")
    resource = alerts_from_env()
    assert isinstance(resource.url, EnvVar) and resource.url.env_var_name == ALERT_WEBHOOK_VARIABLE
    assert TOKEN not in repr(resource)


# ---------------------------------------------------------------------------------------------------
# The episode rule, pure.


def test_an_episode_is_a_run_of_events_with_no_gap_of_an_hour() -> None:
    t0 = pd.Timestamp("2026-11-20T10:00", tz="UTC")
    events = [Event("anomaly", "a", t0 + k * STEP, "") for k in (0, 1, 2)]
    events += [Event("anomaly", "a", t0 + 2 * STEP + HOUR + STEP, ""), Event("anomaly", "b", t0 + STEP, "")]
    assert episode_starts(events, {}, HOUR) == [t0, t0, t0, t0 + 2 * STEP + HOUR + STEP, t0 + STEP]
    # Recorded earlier: a's event 30 min before continues its episode; one at the same time (a rerun) does not count.
    earlier = {"a": [(t0 - 30 * STEP / 5, t0 - HOUR), (t0, t0)]}
    assert episode_starts([Event("anomaly", "a", t0, "")], earlier, HOUR) == [t0 - HOUR]
    assert episode_starts([Event("anomaly", "a", t0, "")], {"a": [(t0, t0)]}, HOUR) == [t0]


def test_one_line_keeps_the_first_line_and_cuts_long_ones() -> None:
    assert one_line("dagster.errors.SomeError: 1 check failed:\n  raw: is_fresh \n") == "1 check failed: raw: is_fresh"
    assert len(one_line("x" * 1000)) == 300


# ---------------------------------------------------------------------------------------------------
# Critical anomalies and failed runs, against Elasticsearch.


@pytest.fixture(scope="module")
def alerts_es(es_url: str) -> Iterator[ElasticsearchResource]:
    """One prefix for the module (its templates are installed once); each test gets its own alerts index."""
    es = ElasticsearchResource(url=es_url, index_prefix=f"test-alerts-{uuid.uuid4().hex[:8]}")
    yield es
    es.get_client().indices.delete(index=f"{es.index_prefix}-*", allow_no_indices=True)


@pytest.fixture
def ledger(alerts_es: ElasticsearchResource) -> AlertLedger:
    index = f"{alerts_es.indices.alerts}-{uuid.uuid4().hex[:6]}"  # matches the alerts template
    alerts_es.get_client().indices.create(index=index)
    return AlertLedger(alerts_es.get_client(), index)


def critical(name: str, at: pd.Timestamp, score: float = 1.0) -> dict[str, Any]:
    return {"name": name, "timestamp": at, "score": score, "severity": "critical", "evidence": "range_record",
            "reason": f"actual 99 of {name} is above the highest value seen in up to 30 days"}  # fmt: skip


def scored(*rows: dict[str, Any]) -> pd.DataFrame:
    warning = {
        "name": "quiet",
        "timestamp": pd.Timestamp("2026-11-20", tz="UTC"),
        "score": 0.55,
        "severity": "warning",
        "evidence": "forecast_likelihood",
        "reason": "a warning is never sent",
    }
    return pd.DataFrame([warning, *rows])


def test_critical_anomalies_are_sent_once_per_episode(ledger: AlertLedger, receiver: Receiver) -> None:
    alerts = AlertWebhookResource(url=receiver.url, backoff_s=0.01)
    t0 = pd.Timestamp.now(tz="UTC").floor("5min") - 3 * HOUR

    def tick(*rows: dict[str, Any], now: pd.Timestamp | None = None) -> int:
        frame = scored(*rows)
        at = max(frame["timestamp"])
        outcome = alert_critical_anomalies(ledger, frame, f"key-{at:%H%M}", "anomalies-index", alerts.send_text,
                                           now if now is not None else at + STEP, alerts.anomaly_max_age)  # fmt: skip
        return len(outcome.sent)

    assert tick() == 0 and receiver.posts == []  # nothing critical: nothing sent
    no_server = AlertLedger(None, "never-read")  # type: ignore[arg-type]  # any request would raise
    assert alert_critical_anomalies(no_server, scored(), "k", "idx", alerts.send_text, t0, None).events == 0
    assert tick(critical("a", t0)) == 1
    assert tick(critical("a", t0)) == 0  # a rerun of the same tick
    assert tick(critical("a", t0 + STEP), critical("b", t0 + STEP)) == 1  # a continues, b starts
    assert tick(critical("a", t0 + 13 * STEP)) == 0  # 12 slots of quiet: under an hour, the same episode
    assert tick(critical("a", t0 + 26 * STEP)) == 1  # 13 slots (65 min) of quiet: a new episode
    # A backfill of the past records what it finds, sends nothing; the same episode met live is sent once.
    assert tick(critical("c", t0), now=t0 + 2 * HOUR) == 0
    assert tick(critical("c", t0 + STEP), now=t0 + 2 * STEP) == 1
    texts = receiver.texts()
    assert len(texts) == 4 and len(receiver.posts) == 4
    assert texts[0].startswith("Critical anomaly (tick ") and f"a at {t0:%Y-%m-%d %H:%M} UTC, score 1.00" in texts[0]
    assert "above the highest value" in texts[0] and "quiet" not in "".join(texts)
    assert "b at" in texts[1] and "a at" not in texts[1]
    assert f"c at {t0 + STEP:%Y-%m-%d %H:%M} UTC" in texts[3]
    refresh_index(ledger.client, ledger.index)
    claims = ledger.client.count(index=ledger.index, query={"term": {"record": "claim"}})["count"]
    events = ledger.client.count(index=ledger.index, query={"term": {"record": "event"}})["count"]
    assert (claims, events) == (4, 7)


def test_a_message_that_could_not_be_sent_is_sent_by_the_retry(ledger: AlertLedger, receiver: Receiver) -> None:
    alerts = AlertWebhookResource(url=receiver.url, attempts=2, backoff_s=0.01)
    at = pd.Timestamp.now(tz="UTC").floor("5min")

    def tick() -> int:
        frame = scored(critical("a", at))
        return len(alert_critical_anomalies(ledger, frame, "k", "idx", alerts.send_text, at, None).sent)

    receiver.statuses = [500, 500]
    with pytest.raises(AlertDeliveryError):
        tick()
    assert tick() == 1  # the failed attempt released its claim
    assert tick() == 0
    assert len(receiver.posts) == 3 and len(receiver.texts()) == 1


class AnswerLost:
    """A client whose first claim request reaches the server but whose answer is lost (a connection reset)."""

    def __init__(self, client: Any) -> None:
        self.client, self.lost = client, False

    def __getattr__(self, name: str) -> Any:
        return getattr(self.client, name)

    def bulk(self, **kwargs: Any) -> Any:
        response = self.client.bulk(**kwargs)
        claims = isinstance(kwargs.get("operations"), list) and "create" in kwargs["operations"][0]
        if claims and not self.lost:
            self.lost = True
            raise ElasticsearchConnectionError("connection reset by peer")
        return response


def test_a_claim_resent_after_its_answer_was_lost_is_still_ours(ledger: AlertLedger, receiver: Receiver) -> None:
    """The resent create answers 409 for the claim the first attempt made: the token says it is this call's."""
    lossy = AlertLedger(AnswerLost(ledger.client), ledger.index)  # type: ignore[arg-type]
    at = pd.Timestamp.now(tz="UTC").floor("5min")
    outcome = alert_once(lossy, [Event("anomaly", "a", at, "line")], lambda new: post_text(receiver.url, "x"), at)
    assert lossy.client.lost and len(outcome.sent) == 1 and receiver.texts() == ["x"]
    again = alert_once(ledger, [Event("anomaly", "a", at, "line")], lambda new: post_text(receiver.url, "x"), at)
    assert len(again.sent) == 0 and len(receiver.posts) == 1


def test_failures_of_the_same_job_and_step_are_one_episode(ledger: AlertLedger, receiver: Receiver) -> None:
    alerts = AlertWebhookResource(url=receiver.url, backoff_s=0.01)
    t0 = pd.Timestamp("2026-11-20T10:00", tz="UTC")

    def fails(at: pd.Timestamp, **steps: str) -> int:
        run = FailedRun("tick_job", f"run-{at:%H%M}", f"{at:%Y-%m-%d-%H:%M}", at, steps, "Steps failed")
        return len(alert_failed_run(ledger, run, alerts.send_text, at + STEP).sent)

    assert fails(t0, forecasts="dagster.Failure: No champion version") == 1
    assert fails(t0, forecasts="dagster.Failure: No champion version") == 0  # the same partition rerun
    assert fails(t0 + STEP, forecasts="No champion", anomaly_report="ES down") == 1  # only the new step is news
    assert fails(t0 + 2 * STEP + HOUR) == 1  # failed outside any step: its own subject, job:run
    assert fails(t0 + 3 * STEP + 2 * HOUR, forecasts="No champion") == 1  # two hours on: a new episode
    texts = receiver.texts()
    assert texts[0].splitlines() == [
        f"tick_job failed for partition {t0:%Y-%m-%d-%H:%M} (run run-1000):",
        "- step forecasts: No champion version",
    ]
    assert texts[1].splitlines()[1:] == ["- step anomaly_report: ES down"]
    assert texts[2].splitlines()[1:] == ["- step run: Steps failed"] and len(texts) == 4


# ---------------------------------------------------------------------------------------------------
# Through Dagster: ticks with a critical anomaly, and failed runs seen by the sensor.


@pytest.fixture(scope="module")
def deployment(alerts_es: ElasticsearchResource, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    """4 names x 1.2 days ending at ``end``, in the module's indices; the first name stays in 20..40 and jumps to
    99 at the last slot (a new 30-day record: score 1, critical)."""
    end = pd.Timestamp.now(tz="UTC").floor("h") - pd.Timedelta(days=1)
    sim = simulate(SimulationSpec(n_names=4, days=1.2, end=end, seed=3, missing_rate=0.0, duplicate_rate=0.0,
                                  late_rate=0.0, bad_value_rate=0.0, anomalies_per_name=0.0))  # fmt: skip
    documents = [dict(document) for _id, document in sim.documents()]
    first = min(d["name"] for d in documents)
    own = [d for d in documents if d["name"] == first]
    low, high = min(d["value"] for d in own), max(d["value"] for d in own)
    for d in own:
        d["value"] = 99.0 if pd.Timestamp(d["timestamp"]) == end - STEP else 20 + 20 * (d["value"] - low) / (high - low)
    assert sum(pd.Timestamp(d["timestamp"]) == end - STEP for d in own) == 1
    bulk_write(alerts_es.get_client(), alerts_es.indices.metrics, [(f"doc-{i}", d) for i, d in enumerate(documents)])
    folder = tmp_path_factory.mktemp("alerts-deployment")
    resources = {
        "elasticsearch": alerts_es,
        "mlflow": MlflowResource(tracking_uri=f"sqlite:///{folder / 'unused.db'}"),
        "io_manager": FilesystemIOManager(base_dir=str(folder / "storage")),
    }
    return {"es": alerts_es, "end": end, "name": first, "resources": resources}


def run_text(instance: DagsterInstance, run_id: str) -> str:
    """Every message and metadata value a run recorded, as text."""
    return "\n".join(str(record) for record in instance.all_logs(run_id))


def test_a_tick_sends_its_critical_anomaly_once_and_a_rerun_or_backfill_never_again(
    deployment: dict[str, Any], receiver: Receiver, monkeypatch: pytest.MonkeyPatch
) -> None:
    use_stub_model(monkeypatch, StubModel())  # no training, no TensorFlow
    end, key, resources = deployment["end"], partition_key_ending_at(deployment["end"]), deployment["resources"]
    instance = DagsterInstance.ephemeral()

    def tick(alerts: AlertWebhookResource) -> tuple[str, dict[str, Any]]:
        """The run's id and the anomaly report's metadata."""
        result = materialize(
            [*ALL_ASSETS, *ALL_CHECKS],
            selection=TICK_ASSETS,
            partition_key=key,
            resources={**resources, "alerts": alerts},
            instance=instance,
            run_config=QUIET,
        )
        [report] = [e for e in result.get_asset_materialization_events() if e.asset_key.path == ["anomaly_report"]]
        return result.run_id, {k: v.value for k, v in report.materialization.metadata.items()}

    _, off = tick(AlertWebhookResource())  # no webhook: nothing sent, no error, and the metadata says so
    assert off["alerts"] == "off: TAUXCHARGE_ALERT_WEBHOOK_URL is not set"
    assert off["critical"] == 1 and receiver.posts == []

    monkeypatch.setenv(URL_VARIABLE, receiver.url)
    alerts = AlertWebhookResource(url=EnvVar(URL_VARIABLE), anomaly_max_age_minutes=None, backoff_s=0.01)
    run_id, on = tick(alerts)
    assert on["alerts_sent"] == 1
    [text] = receiver.texts()
    assert text.startswith(f"Critical anomaly (tick {key}): {deployment['name']} at {end - STEP:%Y-%m-%d %H:%M} UTC")
    assert "score 1.00 (range_record)" in text and "above the highest value seen in up to 30 days" in text
    assert TOKEN not in run_text(instance, run_id)

    # A backfill over the partition and the one before it (as `python -m tauxcharge_assets backfill` runs it).
    materialize_ticks([partition_key_ending_at(end - STEP), key], {**resources, "alerts": alerts}, instance)
    assert len(receiver.posts) == 1
    client, alerts_index = deployment["es"].get_client(), deployment["es"].indices.alerts
    refresh_index(client, alerts_index)
    claims = {"bool": {"filter": [{"term": {"record": "claim"}}, {"term": {"kind": "anomaly"}}]}}
    assert client.count(index=alerts_index, query=claims)["count"] == 1
    anomalies = client.search(index=deployment["es"].indices.anomalies, query={"term": {"severity": "critical"}})
    assert anomalies["hits"]["total"]["value"] == 1


def test_a_failed_gate_is_sent_once_by_the_sensor_and_a_rerun_failing_the_same_way_is_not(
    deployment: dict[str, Any], receiver: Receiver, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Two hours after the data ends the freshness gate fails: tick_job fails on that check step."""
    key = partition_key_ending_at(deployment["end"] + 2 * HOUR)
    monkeypatch.setenv(URL_VARIABLE, receiver.url)
    alerts = AlertWebhookResource(url=EnvVar(URL_VARIABLE), backoff_s=0.01)
    resources = {**deployment["resources"], "alerts": alerts}
    job = Definitions(assets=ALL_ASSETS, asset_checks=ALL_CHECKS, jobs=[tick_job], resources=resources).resolve_job_def(
        "tick_job"
    )
    instance = DagsterInstance.ephemeral()

    def failed_tick(alerts: AlertWebhookResource) -> tuple[str, str]:
        result = job.execute_in_process(partition_key=key, instance=instance, run_config=QUIET, raise_on_error=False)
        assert not result.success
        context = build_run_status_sensor_context(
            sensor_name="run_failure_alerts",
            dagster_event=result.get_run_failure_event(),
            dagster_instance=instance,
            dagster_run=result.dagster_run,
            resources={"elasticsearch": deployment["es"], "alerts": alerts},
        ).for_run_failure()
        return result.run_id, run_failure_alerts(context).skip_message

    _, off = failed_tick(AlertWebhookResource())  # no webhook: nothing sent, no error
    assert off == "alerting is off: TAUXCHARGE_ALERT_WEBHOOK_URL is not set" and receiver.posts == []
    _, first = failed_tick(alerts)
    [text] = receiver.texts()
    lines = text.splitlines()
    assert lines[0].startswith(f"tick_job failed for partition {key} (run ")
    assert lines[1:] == [
        "- step raw_es_extract_raw_es_extract_is_fresh: blocking check raw_es_extract_is_fresh of raw_es_extract "
        f"failed (lag_minutes=125, max_lag_minutes=15, newest_timestamp={deployment['end'] - STEP})"
    ]
    assert "1 failed step(s) alerted" in first
    run_id, second = failed_tick(alerts)
    assert "0 failed step(s) alerted, 1 already alerted" in second and len(receiver.posts) == 1
    assert TOKEN not in run_text(instance, run_id)
