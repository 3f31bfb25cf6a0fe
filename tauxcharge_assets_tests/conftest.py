"""Fixtures: a real Elasticsearch for the whole session, and isolated indices and MLflow per test."""

from __future__ import annotations

import os
import tempfile
import uuid
import warnings
from collections.abc import Iterator
from pathlib import Path

import pytest

# Everything the tests write goes to a throwaway data folder, never the developer's one.
os.environ["TAUXCHARGE_HOME"] = tempfile.mkdtemp(prefix="tauxcharge-tests-")
os.environ.pop("MLFLOW_TRACKING_URI", None)
os.environ.pop("TAUXCHARGE_ALERT_WEBHOOK_URL", None)  # tests never alert a real receiver

from dagster import BetaWarning, PreviewWarning

from tauxcharge_assets.defs.resources import ElasticsearchResource, MlflowResource
from tauxcharge_assets.elastic import server as es_server

warnings.filterwarnings("ignore", category=PreviewWarning)
warnings.filterwarnings("ignore", category=BetaWarning)

TEST_PORT = 9250


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Every test that needs the server (directly or through another fixture) is marked ``integration``:
    ``pytest -m "not integration"`` runs the pure tests alone, without starting Elasticsearch."""
    for item in items:
        if "es_url" in getattr(item, "fixturenames", ()):
            item.add_marker(pytest.mark.integration)


@pytest.fixture(scope="session")
def es_url() -> Iterator[str]:
    """``TAUXCHARGE_ES_URL`` when set; otherwise the project's local server, started for the session."""
    configured = os.environ.get("TAUXCHARGE_ES_URL")
    if configured:
        yield configured
        return
    local = es_server.LocalServer(port=TEST_PORT)
    already_running = es_server.cluster_health(local.url) is not None
    url = es_server.start(local)
    yield url
    if not already_running:
        es_server.stop(local)


@pytest.fixture
def es_resource(es_url: str) -> Iterator[ElasticsearchResource]:
    """A resource with its own index prefix; its indices are deleted afterwards."""
    prefix = f"test-{uuid.uuid4().hex[:10]}"
    resource = ElasticsearchResource(url=es_url, api_key=os.environ.get("TAUXCHARGE_ES_API_KEY"), index_prefix=prefix)
    yield resource
    resource.get_client().indices.delete(index=f"{prefix}-*", allow_no_indices=True)


@pytest.fixture(scope="session")
def mlflow_resource(tmp_path_factory: pytest.TempPathFactory) -> MlflowResource:
    folder: Path = tmp_path_factory.mktemp("mlflow")
    return MlflowResource(
        tracking_uri=f"sqlite:///{folder / 'mlflow.db'}",
        artifact_location=(folder / "artifacts").as_uri(),
        registered_model_name=f"test-model-{uuid.uuid4().hex[:6]}",
    )
