"""Tick assets that turn cleaned series into model inputs."""

from dagster import AssetExecutionContext, AssetIn, Output

from tauxcharge_assets.data.cleaning import CleanedSeries
from tauxcharge_assets.data.name_ids import assign_name_ids
from tauxcharge_assets.data.sequences import SequenceTensors, build_sequences
from tauxcharge_assets.defs.ranges import for_each_partition, one_or_range, tick_asset
from tauxcharge_assets.defs.resources import ElasticsearchResource, unavailable_as_failure


@tick_asset(
    group_name="features",
    kinds={"elasticsearch"},
    ins={"cleaned_series": AssetIn(dagster_type=one_or_range(CleanedSeries))},
)
def encoded_names(
    context: AssetExecutionContext, elasticsearch: ElasticsearchResource, cleaned_series: CleanedSeries
) -> Output:
    """Ids of this tick's names from the persistent mapping; names never seen before get new ids."""
    with unavailable_as_failure():
        client, index = elasticsearch.get_client(), elasticsearch.indices.names
        known: dict[str, int] = {}  # ids never move: a range asks the index only when a partition brings new names

        def encode(_key: str, _last: bool, cleaned: CleanedSeries) -> Output[dict[str, int]]:
            names = [str(name) for name in cleaned.names]
            if all(name in known for name in names):
                mapping, new = {name: known[name] for name in sorted(set(names))}, []
            else:
                mapping, new = assign_name_ids(client, index, names)
                known.update(mapping)
            if new:
                context.log.info(f"{len(new)} new names got ids, e.g. {new[:5]}")
            return Output(
                mapping,
                metadata={"names": len(mapping), "new_names": len(new), "max_id": max(mapping.values(), default=0)},
            )

        return for_each_partition(context, encode, cleaned_series, totals=("new_names",))


@tick_asset(
    group_name="features",
    kinds={"numpy"},
    ins={
        "cleaned_series": AssetIn(dagster_type=one_or_range(CleanedSeries)),
        "encoded_names": AssetIn(dagster_type=one_or_range(dict)),
    },
)
def sequence_tensors(
    context: AssetExecutionContext, cleaned_series: CleanedSeries, encoded_names: dict[str, int]
) -> Output:
    """The last 288 values (24 h) of every name, with a mask of the points that were missing."""
    return for_each_partition(context, lambda _key, _last, cleaned, ids: _sequences(cleaned, ids), cleaned_series,
                              encoded_names)  # fmt: skip


def _sequences(cleaned_series: CleanedSeries, encoded_names: dict[str, int]) -> Output[SequenceTensors]:
    sequences = build_sequences(cleaned_series, encoded_names)
    return Output(
        sequences,
        metadata={
            "names": len(sequences.names),
            "shape": str(tuple(sequences.values.shape)),
            "missing_share": float(1.0 - sequences.mask.mean()) if sequences.mask.size else 1.0,
            "names_without_any_value": len(sequences.skipped_names),
            "last_slot": sequences.timestamps[-1].isoformat(),
        },
    )
