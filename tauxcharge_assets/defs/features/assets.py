"""Tick assets that turn cleaned series into model inputs."""

from dagster import AssetExecutionContext, Output, asset

from tauxcharge_assets.data.cleaning import CleanedSeries
from tauxcharge_assets.data.name_ids import assign_name_ids
from tauxcharge_assets.data.sequences import SequenceTensors, build_sequences
from tauxcharge_assets.defs.partitions import tick_partitions
from tauxcharge_assets.defs.resources import TICK_RETRY_POLICY, ElasticsearchResource, unavailable_as_failure


@asset(retry_policy=TICK_RETRY_POLICY, partitions_def=tick_partitions, group_name="features", kinds={"elasticsearch"})
def encoded_names(
    context: AssetExecutionContext, elasticsearch: ElasticsearchResource, cleaned_series: CleanedSeries
) -> Output[dict[str, int]]:
    """Ids of this tick's names from the persistent mapping; names never seen before get new ids."""
    with unavailable_as_failure():
        mapping, new = assign_name_ids(elasticsearch.get_client(), elasticsearch.indices.names, cleaned_series.names)
        if new:
            context.log.info(f"{len(new)} new names got ids, e.g. {new[:5]}")
        return Output(
            mapping,
            metadata={"names": len(mapping), "new_names": len(new), "max_id": max(mapping.values(), default=0)},
        )


@asset(retry_policy=TICK_RETRY_POLICY, partitions_def=tick_partitions, group_name="features", kinds={"numpy"})
def sequence_tensors(cleaned_series: CleanedSeries, encoded_names: dict[str, int]) -> Output[SequenceTensors]:
    """The last 288 values (24 h) of every name, with a mask of the points that were missing."""
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
