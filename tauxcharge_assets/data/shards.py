"""Name shards: the names split into ``count`` disjoint parts, so one tick can be ``count`` runs on as many workers.

A name belongs to shard ``crc32(name) % count``: stable across processes, machines and Python versions
(Python's own ``hash`` of a str is salted per process), independent of when a name first appeared, and
balanced (2,496 to 2,507 names per shard of 10,000 simulated ones). Documents without a usable name go to
shard 0, so every document is some shard's. One model and one names index serve every shard.

Each shard keeps its own tick state (rolling window, kept forecasts, detector checkpoints) and reads its
own documents: Elasticsearch filters on the shard's names known to the names index (``prefilter``: the
other shards' known names are never sent), and ``take`` drops the other shards' new names from what
comes back. ``count == 1`` is the unsharded tick, byte for byte. A ``terms`` list of every known name
holds up to Elasticsearch's 65,536 terms per query: past that, see BENCHMARKS.md's plan for 1,000,000
names (the shard written on each document at ingestion).
"""

from __future__ import annotations

import zlib
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd

from tauxcharge_assets.data.documents import DocumentBatch


@dataclass(frozen=True)
class Shard:
    index: int = 0
    count: int = 1

    def __post_init__(self) -> None:
        if self.count < 1 or not 0 <= self.index < self.count:
            raise ValueError(
                f"name shard {self.index} of {self.count}: the count must be at least 1 and the index in "
                f"0..{max(self.count - 1, 0)}"
            )

    @property
    def sharded(self) -> bool:
        return self.count > 1

    @property
    def suffix(self) -> str:
        """What keys this shard's own state apart ("" unsharded: the unsharded state keeps its old keys)."""
        return f"@shard-{self.index}-of-{self.count}" if self.sharded else ""

    @property
    def label(self) -> str:
        return f"{self.index}/{self.count}"

    def owns(self, names: np.ndarray | list[object]) -> np.ndarray:
        """Which of ``names`` (str, or None/"" for a document without a name) belong to this shard."""
        names = np.asarray(names, dtype=object)
        if not self.sharded:
            return np.ones(len(names), dtype=bool)
        codes, uniques = pd.factorize(pd.Series(names, dtype=object), use_na_sentinel=True)
        owned = np.array([shard_of(name, self.count) == self.index for name in uniques], dtype=bool)
        result = np.full(len(names), self.index == 0, dtype=bool)  # no name (None): shard 0
        named = codes >= 0
        result[named] = owned[codes[named]]  # one hash per distinct name: 2.9M documents of 10,000 names
        return result

    def prefilter(self, known_names: Iterable[str]) -> dict[str, Any] | None:
        """A query clause that lets Elasticsearch skip the other shards' known names: this shard's known names,
        or any name not known yet (new names, documents without one; ``take`` then keeps this shard's).
        None unsharded. ``known_names``: the names index's, read each tick."""
        if not self.sharded:
            return None
        known = sorted(set(known_names))
        own = [name for name in known if shard_of(name, self.count) == self.index]
        unknown = {"bool": {"must_not": {"terms": {"name": known}}}} if known else {"match_all": {}}
        return {"bool": {"should": [{"terms": {"name": own}}, unknown], "minimum_should_match": 1}}

    def take(self, batch: DocumentBatch) -> DocumentBatch:
        """The documents of ``batch`` that belong to this shard."""
        return batch if not self.sharded else batch.take(self.owns(batch.name))


def shard_of(name: str, count: int) -> int:
    """The shard of a name (``None``/"" -> 0)."""
    return zlib.crc32(name.encode("utf-8")) % count if name else 0


UNSHARDED = Shard()  # every name: the default of what carries a shard (pickles from before shards load as it)
