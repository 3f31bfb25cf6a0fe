"""A persistent name <-> id mapping kept in Elasticsearch: new names get new ids, old ids never move.

Ids are handed out from a counter document updated with optimistic concurrency control
(``if_seq_no``/``if_primary_term``), so concurrent backfill runs never give one id to two names.
Id 0 is never assigned: the model uses it for names it has not seen in training.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterable

from elasticsearch import ConflictError, Elasticsearch, NotFoundError, helpers

from tauxcharge_assets.elastic.bulk import deterministic_id, refresh_index, scan_pit
from tauxcharge_assets.elastic.client import retrying

COUNTER_ID = "__next_name_id__"
UNKNOWN_NAME_ID = 0


def load_name_ids(client: Elasticsearch, index: str) -> dict[str, int]:
    hits = scan_pit(client, index, {"exists": {"field": "name"}}, source=["name", "name_id"])
    return {hit["_source"]["name"]: int(hit["_source"]["name_id"]) for hit in hits}


def _reserve_ids(client: Elasticsearch, index: str, count: int, attempts: int = 50) -> int:
    """Reserve ``count`` consecutive ids; returns the first. Compare-and-set on the counter.

    Each request is retried on transient errors. A compare-and-set whose answer was lost (the
    connection dropped after the server applied it) is retried, gets a conflict, and reserves the
    next range: some ids are skipped, none is ever given twice.
    """
    what = f"the name id counter in {index}"
    for _ in range(attempts):
        try:
            counter = retrying(lambda: client.get(index=index, id=COUNTER_ID), what=what, client=client)
        except NotFoundError:
            with contextlib.suppress(ConflictError):
                retrying(
                    lambda: client.create(index=index, id=COUNTER_ID, document={"next_id": 1}, refresh="wait_for"),
                    what=what,
                    client=client,
                )
            continue
        first = int(counter["_source"]["next_id"])
        try:
            retrying(
                lambda counter=counter, first=first: client.index(  # type: ignore[misc]
                    index=index,
                    id=COUNTER_ID,
                    document={"next_id": first + count},
                    if_seq_no=counter["_seq_no"],
                    if_primary_term=counter["_primary_term"],
                ),
                what=what,
                client=client,
            )
        except ConflictError:
            continue
        return first
    raise RuntimeError(f"Could not reserve name ids in {index} after {attempts} concurrent conflicts.")


def assign_name_ids(client: Elasticsearch, index: str, names: Iterable[str]) -> tuple[dict[str, int], list[str]]:
    """Ids of ``names``, giving new ids to the names never seen before; returns (mapping, new names)."""
    wanted = sorted(set(names))
    known = load_name_ids(client, index)
    new = [name for name in wanted if name not in known]
    if new:
        first = _reserve_ids(client, index, len(new))
        actions = [
            {
                "_op_type": "create",  # never overwrite: an id, once given, does not move
                "_index": index,
                "_id": deterministic_id("name", name),
                "_source": {"name": name, "name_id": first + offset},
            }
            for offset, name in enumerate(new)
        ]
        # "create" never overwrites, and a name already recorded answers 409 (ignored): resending is safe
        _, errors = retrying(
            lambda: helpers.bulk(client, actions, raise_on_error=False),
            what=f"a bulk write to {index}",
            client=client,
        )
        unexpected = [e for e in errors if next(iter(e.values())).get("status") != 409]
        if unexpected:
            raise RuntimeError(f"Could not record {len(unexpected)} new name ids in {index}: {unexpected[0]}")
        refresh_index(client, index)
        known = load_name_ids(client, index)
    return {name: known[name] for name in wanted}, new
