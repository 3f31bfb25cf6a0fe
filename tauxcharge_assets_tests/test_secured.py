"""Secured clusters (issue 12): credentials, certificates and the least-privilege role, end to end.

The integ-test server has no security module, so a TLS front (``tls_proxy.py``, a throwaway CA made
with ``openssl``) stands before the real server at 127.0.0.1: it demands a random password or a random
API key and enforces the role README's "Secured clusters" documents (parsed from it). A training and
whole ticks run through it with the resource configured from the environment as Dagster would; then
the secrets are searched for in the event logs, failure messages, MLflow and the data folder.
"""

from __future__ import annotations

import fnmatch
import ipaddress
import json
import logging
import os
import socket
import subprocess
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pandas as pd
import pytest
from dagster import DagsterInstance, EnvVar, FilesystemIOManager, materialize, serialize_value

from tauxcharge_assets.cli.runner import QUIET
from tauxcharge_assets.data.simulator import SimulationSpec, simulate
from tauxcharge_assets.definitions import ALL_ASSETS, ALL_CHECKS
from tauxcharge_assets.defs.model.jobs import MODEL_ASSETS
from tauxcharge_assets.defs.partitions import partition_key_ending_at
from tauxcharge_assets.defs.resources import (
    AlertWebhookResource,
    ElasticsearchResource,
    MlflowResource,
    elasticsearch_from_env,
)
from tauxcharge_assets.defs.serving.jobs import TICK_ASSETS
from tauxcharge_assets.elastic.bulk import bulk_write
from tauxcharge_assets.elastic.client import ElasticsearchAccessError, Security
from tauxcharge_assets.elastic.indices import IndexNames
from tauxcharge_assets.elastic.queries import count_documents
from tauxcharge_assets_tests.test_cli import assert_one_line_failure, run_cli
from tauxcharge_assets_tests.test_pipeline import TRAINING
from tauxcharge_assets_tests.tls_proxy import Certificates, Gate, SecuredProxy, make_certificates

ROOT = Path(__file__).resolve().parents[1]
STEP = pd.Timedelta(minutes=5)
END = pd.Timestamp.now(tz="UTC").floor("h") - pd.Timedelta(days=1)
NAMES = 4
USERNAME = "tauxcharge-writer"
ENV = ("TAUXCHARGE_ES_USERNAME", "TAUXCHARGE_ES_PASSWORD", "TAUXCHARGE_ES_API_KEY")


def key(slots_before_end: int) -> str:
    return partition_key_ending_at(END - slots_before_end * STEP)


# ---------------------------------------------------------------------------------------------------
# The documented role, enforced by the proxy.


def documented_role(prefix: str = "tauxcharge") -> dict[str, Any]:
    """The role JSON of README's "Secured clusters", for indices named ``<prefix>-...``."""
    text = (ROOT / "README.md").read_text()
    section = text[text.index("## Secured clusters") :]
    block = section[section.index("```json") + len("```json") :]
    return json.loads(block[: block.index("```")].replace('"tauxcharge-', f'"{prefix}-'))


def needed_privileges(method: str, path: str, body: bytes | None) -> list[tuple[str | None, str]]:
    """(index, or None for the cluster, privilege) pairs a request needs on a secured cluster.

    An API missing here is refused: code that starts calling a new API fails these tests until the
    README's role (and this table) say what it needs.
    """
    parts = path.strip("/").split("/")
    if parts == ["_cluster", "health"]:
        return [(None, "monitor")]
    if parts[0] == "_index_template" and method == "PUT":
        return [(None, "manage_index_templates")]
    if parts[0] in ("_search", "_pit"):  # a point in time: the server checks `read` on its indices
        return [("*", "read")]
    if parts[0] == "_bulk":  # the indices are in the action lines (elasticsearch.helpers.bulk)
        actions = [json.loads(line) for line in (body or b"").splitlines() if line.startswith(b'{"')]
        metas = [meta for action in actions for meta in action.values() if isinstance(meta, dict)]
        indices = {meta["_index"] for meta in metas if isinstance(meta.get("_index"), str)}
        return [(index, "write") for index in sorted(indices)] or [("?", "unknown")]
    index = parts[0]
    if len(parts) == 1:
        by_method = {
            "HEAD": "view_index_metadata",
            "GET": "view_index_metadata",
            "PUT": "create_index",
            "DELETE": "delete_index",
        }
        return [(index, by_method.get(method, "unknown"))]
    endpoint = parts[1]
    if endpoint == "_doc":
        return [(index, "read" if method == "GET" else "write")]
    by_endpoint = {
        "_mapping": "indices:admin/mapping/put",
        "_pit": "read",
        "_count": "read",
        "_search": "read",
        "_bulk": "write",
        "_create": "write",
        "_refresh": "maintenance",
    }
    return [(index, by_endpoint.get(endpoint, "unknown"))]


def role_allows(role: dict[str, Any]) -> Any:
    def granted(index: str | None, privilege: str) -> bool:
        if index is None:
            return privilege in role["cluster"]
        return any(
            privilege in entry["privileges"]
            and (index == "*" or any(fnmatch.fnmatchcase(index, name) for name in entry["names"]))
            for entry in role["indices"]
        )

    def allows(method: str, path: str, body: bytes | None) -> bool:
        return all(granted(index, privilege) for index, privilege in needed_privileges(method, path, body))

    return allows


def test_the_documented_role_covers_every_index_the_project_uses() -> None:
    role = documented_role()
    names = IndexNames()
    indices = {getattr(names, kind) for kind in dir(names) if not kind.startswith("_") and kind != "prefix"}
    indices = {index for index in indices if isinstance(index, str)}
    # A daily index family (the quarantine) is covered by its pattern, checked on one day's index.
    written = {index: [index, names.daily(index, pd.Timestamp("2026-12-02"))] for index in indices}
    covered = {
        index
        for index, concrete in written.items()
        for entry in role["indices"]
        if any(fnmatch.fnmatchcase(name, pattern) for name in concrete for pattern in entry["names"])
    }
    assert covered == indices  # a new index (e.g. a quarantine) must be added to README's role
    [metrics] = [entry for entry in role["indices"] if names.metrics in entry["names"]]
    assert set(metrics["privileges"]) == {"read", "view_index_metadata"}  # the metrics are only read


# ---------------------------------------------------------------------------------------------------
# The secured front, a training through it, and the module's runs.


@dataclass
class Secured:
    proxy: SecuredProxy
    certificates: Certificates
    gate: Gate
    plain: ElasticsearchResource  # straight to the server, for the tests' own reads
    mlflow: MlflowResource
    instance: DagsterInstance
    home: Path
    password: str
    api_key: str
    training: Any

    def resource(self, **settings: Any) -> ElasticsearchResource:
        """Through the proxy; credentials from the environment (EnvVar) unless given."""
        defaults: dict[str, Any] = {
            "url": self.proxy.url,
            "index_prefix": self.plain.index_prefix,
            "username": EnvVar("TAUXCHARGE_ES_USERNAME"),
            "password": EnvVar("TAUXCHARGE_ES_PASSWORD"),
            "ca_certs": str(self.certificates.ca),
        }
        return ElasticsearchResource(**{**defaults, **settings})

    def materialize(
        self, selection: list, es: ElasticsearchResource, run_config: dict | None = None, **kwargs: Any
    ) -> Any:
        return materialize(
            [*ALL_ASSETS, *ALL_CHECKS],
            selection=selection,
            resources={
                "elasticsearch": es,
                "mlflow": self.mlflow,
                "alerts": AlertWebhookResource(),
                "io_manager": FilesystemIOManager(base_dir=str(self.home / "storage")),
            },
            instance=self.instance,
            run_config=run_config or QUIET,
            raise_on_error=False,
            **kwargs,
        )

    def forecasts_of(self, partition_key: str) -> int:
        client = self.plain.get_client()
        return count_documents(client, self.plain.indices.forecasts, {"term": {"partition_key": partition_key}})


@pytest.fixture(scope="module")
def secured(es_url: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Secured]:
    home = tmp_path_factory.mktemp("secured")
    prefix = f"test-sec-{uuid.uuid4().hex[:8]}"
    password, api_key = f"pw{uuid.uuid4().hex}", f"key{uuid.uuid4().hex}"
    plain = ElasticsearchResource(url=es_url, index_prefix=prefix)
    client = plain.get_client()
    sim = simulate(SimulationSpec(n_names=NAMES, days=3, end=END, seed=31))
    bulk_write(client, plain.indices.metrics, sim.documents())
    certificates = make_certificates(home / "tls")
    gate = Gate(USERNAME, password, api_key, authorize=role_allows(documented_role(prefix)))
    mlflow = MlflowResource(
        tracking_uri=f"sqlite:///{home / 'mlflow.db'}",
        artifact_location=(home / "mlartifacts").as_uri(),
        registered_model_name=f"secured-{uuid.uuid4().hex[:6]}",
    )
    with pytest.MonkeyPatch.context() as patch, SecuredProxy(es_url, certificates, gate) as proxy:
        patch.setenv("TAUXCHARGE_ES_USERNAME", USERNAME)
        patch.setenv("TAUXCHARGE_ES_PASSWORD", password)
        patch.setenv("TAUXCHARGE_ES_API_KEY", api_key)
        state = Secured(
            proxy, certificates, gate, plain, mlflow, DagsterInstance.ephemeral(), home, password, api_key, None
        )
        config = {**TRAINING, "train_until": (END - 12 * STEP).isoformat()}
        state.training = state.materialize(
            MODEL_ASSETS, state.resource(), {**QUIET, "ops": {"trained_model": {"config": config}}}
        )
        failed = [e for e in state.training.get_step_failure_events() if e.step_key == "trained_model"]
        assert not failed, _failure_of(state.training)  # e.g. a request the documented role does not allow
        handle = state.training.output_for_node("trained_model")
        if mlflow.champion_version() != handle.version:  # a toy model may lose to naive: operator override
            mlflow.promote(handle.version)
        yield state
    client.indices.delete(index=f"{prefix}-*", allow_no_indices=True)


def _refused(gate: Gate, since: int) -> list[tuple[str, str, int]]:
    """The requests refused since ``since``, but the metrics' mapping update (the role only reads them)."""
    return [
        (method, path, status)
        for method, path, status in gate.requests[since:]
        if status in (401, 403) and not (method == "PUT" and path.endswith("-metrics/_mapping"))
    ]


def test_a_training_and_a_tick_pass_with_user_password_and_ca_bundle_from_the_environment(
    secured: Secured, monkeypatch: pytest.MonkeyPatch
) -> None:
    # the training read its history through the proxy, with the documented role (its gate may keep no champion)
    assert secured.training.asset_materializations_for_node("trained_model")
    monkeypatch.setenv("TAUXCHARGE_ES_URL", secured.proxy.url)
    monkeypatch.setenv("TAUXCHARGE_ES_CA_CERTS", str(secured.certificates.ca))
    monkeypatch.setenv("TAUXCHARGE_INDEX_PREFIX", secured.plain.index_prefix)
    monkeypatch.delenv("TAUXCHARGE_ES_API_KEY")
    es = elasticsearch_from_env()
    assert isinstance(es.password, EnvVar) and es.password.env_var_name == "TAUXCHARGE_ES_PASSWORD"
    assert isinstance(es.username, EnvVar) and es.ca_certs == str(secured.certificates.ca) and es.verify_certs
    since = len(secured.gate.requests)
    result = secured.materialize(TICK_ASSETS, es, partition_key=key(4))
    assert result.success
    assert secured.forecasts_of(key(4)) == NAMES * 12  # every name, 12 horizons, written through TLS
    assert not _refused(secured.gate, since)  # the documented role was enough
    assert any(path.endswith("-forecasts/_bulk") for _, path, _ in secured.gate.requests[since:])


def test_a_tick_passes_with_an_api_key(secured: Secured) -> None:
    es = secured.resource(username=None, password=None, api_key=EnvVar("TAUXCHARGE_ES_API_KEY"))
    since = len(secured.gate.requests)
    result = secured.materialize(TICK_ASSETS, es, partition_key=key(3))
    assert result.success
    assert secured.forecasts_of(key(3)) == NAMES * 12
    assert not _refused(secured.gate, since)


def _failure_of(result: Any) -> str:
    failure = result.get_step_failure_events()[0]
    data = failure.step_failure_data
    return data.user_failure_data.description if data.user_failure_data else data.error.message


def test_a_wrong_password_fails_at_once_in_one_line_and_is_not_retried(
    secured: Secured, monkeypatch: pytest.MonkeyPatch
) -> None:
    wrong = f"wrong{uuid.uuid4().hex}"
    monkeypatch.setenv("TAUXCHARGE_TEST_WRONG_PASSWORD", wrong)
    es = secured.resource(password=EnvVar("TAUXCHARGE_TEST_WRONG_PASSWORD"))
    since = len(secured.gate.requests)
    started = time.monotonic()
    result = secured.materialize(["raw_es_extract"], es, partition_key=key(2))
    elapsed = time.monotonic() - started
    assert not result.success
    assert not [e for e in result.all_events if e.event_type_value == "STEP_UP_FOR_RETRY"]
    assert elapsed < 15  # neither connect's 5 health checks nor the RetryPolicy's 3 retries
    assert _refused(secured.gate, since) == [("GET", "/_cluster/health", 401)]  # asked once
    message = _failure_of(result)
    assert "401" in message and "TAUXCHARGE_ES_PASSWORD" in message and secured.proxy.url in message
    assert "\n" not in message and wrong not in message


def test_credentials_revoked_during_a_run_fail_the_request_at_once(secured: Secured) -> None:
    es = secured.resource(username=USERNAME, password=secured.password)
    client = es.get_client()
    since = len(secured.gate.requests)
    secured.gate.password = "rotated"
    try:
        started = time.monotonic()
        with pytest.raises(ElasticsearchAccessError, match="401"):
            count_documents(client, es.indices.forecasts)
        assert time.monotonic() - started < 5  # not retried for the 60 s deadline of a transient fault
    finally:
        secured.gate.password = secured.password
    assert len(_refused(secured.gate, since)) == 1


def test_a_write_the_role_does_not_grant_is_refused_in_one_line(secured: Secured) -> None:
    client = secured.resource().get_client()
    since = len(secured.gate.requests)
    with pytest.raises(ElasticsearchAccessError) as raised:
        bulk_write(client, secured.plain.indices.metrics, [("x", {"name": "x", "value": 1.0})])
    message = str(raised.value)
    assert "403" in message and "Secured clusters" in message and "\n" not in message
    assert [status for _, _, status in _refused(secured.gate, since)] == [403]  # once, not retried


def test_without_the_ca_bundle_the_certificate_is_refused_in_one_line(secured: Secured) -> None:
    started = time.monotonic()
    result = secured.materialize(["raw_es_extract"], secured.resource(ca_certs=None), partition_key=key(2))
    assert not result.success and time.monotonic() - started < 15
    assert not [e for e in result.all_events if e.event_type_value == "STEP_UP_FOR_RETRY"]
    message = _failure_of(result)
    assert "certificate" in message and "TAUXCHARGE_ES_CA_CERTS" in message and "\n" not in message


def test_the_command_line_reports_a_wrong_password_in_one_line(
    secured: Secured, monkeypatch: pytest.MonkeyPatch
) -> None:
    wrong = f"wrong{uuid.uuid4().hex}"
    env = {
        "TAUXCHARGE_ES_URL": secured.proxy.url,
        "TAUXCHARGE_ES_USERNAME": USERNAME,
        "TAUXCHARGE_ES_PASSWORD": wrong,
        "TAUXCHARGE_ES_CA_CERTS": str(secured.certificates.ca),
    }
    monkeypatch.delenv("TAUXCHARGE_ES_API_KEY")  # the fixture's key: the command would refuse both
    result = run_cli("simulate", "--names", "1", "--days", "0.1", env=env)
    line = assert_one_line_failure(result, 1, secured.proxy.url, "401", "TAUXCHARGE_ES_PASSWORD")
    assert wrong not in result.stdout + result.stderr and line.count("error:") == 1


def test_a_pinned_fingerprint_replaces_the_ca_bundle_and_a_wrong_one_is_refused(secured: Secured) -> None:
    pinned = secured.resource(ca_certs=None, ssl_assert_fingerprint=secured.certificates.sha256_fingerprint)
    assert count_documents(pinned.get_client(), pinned.indices.metrics) > 0
    wrong = secured.resource(ca_certs=None, ssl_assert_fingerprint="00" * 32, connect_attempts=5)
    started = time.monotonic()
    with pytest.raises(ElasticsearchAccessError, match="TAUXCHARGE_ES_SSL_ASSERT_FINGERPRINT"):
        wrong.get_client()
    assert time.monotonic() - started < 5


def test_verify_certs_off_works_with_a_warning(secured: Secured, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TAUXCHARGE_ES_URL", secured.proxy.url)
    monkeypatch.setenv("TAUXCHARGE_ES_VERIFY_CERTS", "false")
    monkeypatch.setenv("TAUXCHARGE_INDEX_PREFIX", secured.plain.index_prefix)
    monkeypatch.delenv("TAUXCHARGE_ES_API_KEY")
    es = elasticsearch_from_env()
    assert es.verify_certs is False and es.ca_certs is None
    with pytest.warns(Warning, match="verify_certs=False is insecure"):  # elastic_transport.SecurityWarning
        client = es.get_client()
    assert count_documents(client, es.indices.metrics) > 0


def test_an_api_key_and_a_password_together_are_refused_before_connecting() -> None:
    with pytest.raises(ElasticsearchAccessError, match="set only one of the two"):
        Security(api_key="k", username="u", password="p")
    with pytest.raises(ElasticsearchAccessError, match="TAUXCHARGE_ES_PASSWORD"):
        Security(username="u")
    both = ElasticsearchResource(url="https://127.0.0.1:1", api_key="k", username="u", password="p")
    with pytest.raises(ElasticsearchAccessError, match="set only one of the two"):
        both.get_client()
    assert "hunter2" not in repr(Security(username="u", password="hunter2"))


# ---------------------------------------------------------------------------------------------------
# The secrets appear nowhere.


def test_the_password_and_the_api_key_appear_in_no_log_metadata_failure_mlflow_or_file(
    secured: Secured,
    capfd: pytest.CaptureFixture[str],
    caplog: pytest.LogCaptureFixture,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    import mlflow

    wrong = f"wrong{uuid.uuid4().hex}"
    monkeypatch.setenv("TAUXCHARGE_TEST_WRONG_PASSWORD", wrong)
    refused = secured.resource(password=EnvVar("TAUXCHARGE_TEST_WRONG_PASSWORD"))
    verbose = {"loggers": {"console": {"config": {"log_level": "DEBUG"}}}}
    with caplog.at_level(logging.DEBUG):
        assert secured.materialize(TICK_ASSETS, secured.resource(), verbose, partition_key=key(1)).success
        api = secured.resource(username=None, password=None, api_key=EnvVar("TAUXCHARGE_ES_API_KEY"))
        assert secured.materialize(TICK_ASSETS, api, verbose, partition_key=key(0)).success
        assert not secured.materialize(["raw_es_extract"], refused, verbose, partition_key=key(0)).success
    secrets = [secured.password, secured.api_key, wrong]
    output = capfd.readouterr()
    texts = {"stdout": output.out, "stderr": output.err, "python logs": caplog.text}
    assert "raw_es_extract" in output.err  # the DEBUG console logs were captured
    leaks = [where for where, text in texts.items() for secret in secrets if secret in text]
    runs = secured.instance.get_runs()
    assert len(runs) >= 4  # the training, two ticks and a failure (and the other tests' runs)
    for run in runs:
        records = secured.instance.all_logs(run.run_id)
        leaks += [f"run {run.run_id}" for secret in secrets if secret in serialize_value(run)]
        leaks += [f"{run.run_id}: {r.user_message[:60]}" for r in records for s in secrets if s in serialize_value(r)]
    client = mlflow.MlflowClient(tracking_uri=secured.mlflow.tracking_uri)
    training_runs = client.search_runs([e.experiment_id for e in client.search_experiments()])
    assert training_runs
    for run in training_runs:
        recorded = json.dumps({**run.data.params, **run.data.tags, **run.data.metrics})
        leaks += [f"mlflow run {run.info.run_id}" for secret in secrets if secret in recorded]
    for version in client.search_model_versions(f"name = '{secured.mlflow.registered_model_name}'"):
        leaks += [f"version {version.version}" for secret in secrets if secret in json.dumps(version.tags)]
    for folder in (secured.home, Path(os.environ["TAUXCHARGE_HOME"])):  # MLflow store, IO manager, data folder
        for path in folder.rglob("*"):
            if path.is_file():
                data = path.read_bytes()
                leaks += [str(path) for secret in secrets if secret.encode() in data]
    assert not leaks


# ---------------------------------------------------------------------------------------------------
# The servers the project starts listen on 127.0.0.1.


def bound_host(port: int) -> str | None:
    """The address a TCP listener on ``port`` is bound to, from /proc/net/tcp (IPv4) and tcp6, or None."""
    for table, width in (("/proc/net/tcp", 8), ("/proc/net/tcp6", 32)):
        for line in Path(table).read_text().splitlines()[1:]:
            local, state = line.split()[1], line.split()[3]
            address, hex_port = local.split(":")
            if state == "0A" and int(hex_port, 16) == port:  # 0A: LISTEN
                raw = bytes.fromhex(address)
                if width == 8:
                    return socket.inet_ntop(socket.AF_INET, raw[::-1])
                six = ipaddress.IPv6Address(b"".join(raw[i : i + 4][::-1] for i in range(0, 16, 4)))
                return str(six.ipv4_mapped or six)  # a JVM binds 127.0.0.1 as ::ffff:127.0.0.1
    return None


def test_bound_host_tells_a_listener_on_every_interface() -> None:
    with socket.socket() as everywhere:
        everywhere.bind(("0.0.0.0", 0))  # every interface: the case this check must catch
        everywhere.listen()
        assert bound_host(everywhere.getsockname()[1]) == "0.0.0.0"
    with socket.socket(socket.AF_INET6) as everywhere:
        everywhere.bind(("::", 0))
        everywhere.listen()
        assert bound_host(everywhere.getsockname()[1]) == "::"


def test_the_local_elasticsearch_listens_on_127_0_0_1_only(es_url: str) -> None:
    port = int(es_url.rsplit(":", 1)[1].strip("/"))
    assert bound_host(port) == "127.0.0.1"  # HTTP
    assert bound_host(port + 100) == "127.0.0.1"  # transport (server.py: http.port + 100)


def test_dagster_dev_serves_the_ui_on_127_0_0_1_unless_told_otherwise(tmp_path: Path) -> None:
    """The script, copied beside a stand-in ``dagster`` that prints its arguments."""
    (tmp_path / "scripts").mkdir()
    script = tmp_path / "scripts" / "dagster_dev.sh"
    script.write_text((ROOT / "scripts" / "dagster_dev.sh").read_text())
    stand_in = tmp_path / ".venv" / "bin" / "dagster"
    stand_in.parent.mkdir(parents=True)
    stand_in.write_text('#!/bin/sh\necho "$@"\n')
    stand_in.chmod(0o755)
    env = {"PATH": os.environ["PATH"], "TAUXCHARGE_ES_URL": "http://127.0.0.1:1", "DAGSTER_HOME": str(tmp_path / "dh")}

    def arguments(**extra: str) -> list[str]:
        done = subprocess.run(["bash", str(script)], env={**env, **extra}, capture_output=True, text=True, timeout=30)
        assert done.returncode == 0, done.stderr
        return done.stdout.split()

    default = arguments()
    assert default[:2] == ["dev", "-w"] and default[default.index("--host") + 1] == "127.0.0.1"
    told = arguments(TAUXCHARGE_DAGSTER_HOST="0.0.0.0")
    assert told[told.index("--host") + 1] == "0.0.0.0"
