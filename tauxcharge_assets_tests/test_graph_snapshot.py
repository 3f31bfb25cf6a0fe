"""The asset graph as committed: a change of keys, dependencies, partitions, checks or jobs fails here
until the snapshot is regenerated on purpose (``UPDATE_SNAPSHOTS=1 pytest -k graph_snapshot``), so an
accidental change shows up in review as a diff of ``snapshots/asset_graph.json``."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

SNAPSHOT = Path(__file__).parent / "snapshots" / "asset_graph.json"


def graph_description() -> dict[str, Any]:
    from tauxcharge_assets.definitions import defs

    graph = defs.resolve_asset_graph()
    assets = {}
    for key in sorted(graph.get_all_asset_keys(), key=lambda k: k.to_user_string()):
        node = graph.get(key)
        partitions = node.partitions_def
        assets[key.to_user_string()] = {
            "deps": sorted(parent.to_user_string() for parent in node.parent_keys),
            "group": node.group_name,
            "partitions": None
            if partitions is None
            else getattr(partitions, "cron_schedule", type(partitions).__name__),
            "kinds": sorted(node.kinds),
            "checks": sorted(check.name for check in graph.asset_check_keys if check.asset_key == key),
        }
    checks = {
        key.name: {"asset": key.asset_key.to_user_string(), "blocking": _blocking(defs, key)}
        for key in sorted(graph.asset_check_keys, key=lambda k: k.name)
    }
    jobs = {}
    for job in sorted(defs.jobs or [], key=lambda j: j.name):
        resolved = defs.resolve_job_def(job.name)
        jobs[job.name] = {
            "assets": sorted(key.to_user_string() for key in resolved.asset_layer.selected_asset_keys),
            "partitioned": resolved.partitions_def is not None,
            "executor": resolved.executor_def.name,
        }
    return {
        "assets": assets,
        "checks": checks,
        "jobs": jobs,
        "schedules": {s.name: s.cron_schedule for s in defs.schedules or []},
        "sensors": sorted(s.name for s in defs.sensors or []),
    }


def _blocking(defs: Any, check_key: Any) -> bool:
    for checks_def in defs.asset_checks or []:
        for spec in checks_def.check_specs:
            if spec.key == check_key:
                return bool(spec.blocking)
    raise AssertionError(f"no spec for {check_key}")


def test_graph_snapshot_matches_the_committed_one() -> None:
    current = graph_description()
    if os.environ.get("UPDATE_SNAPSHOTS"):
        SNAPSHOT.write_text(json.dumps(current, indent=1, sort_keys=True) + "\n")
    committed = json.loads(SNAPSHOT.read_text())
    assert current == committed, (
        "The asset graph changed. If on purpose, regenerate with UPDATE_SNAPSHOTS=1 pytest -k graph_snapshot "
        "and commit snapshots/asset_graph.json."
    )
