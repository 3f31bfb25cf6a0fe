from tauxcharge_assets.assets.features import encoded_names, sequence_tensors
from tauxcharge_assets.assets.ingest import cleaned_series, raw_es_extract
from tauxcharge_assets.assets.serving import anomaly_report, forecasts
from tauxcharge_assets.assets.training import trained_model

TICK_ASSETS = [raw_es_extract, cleaned_series, encoded_names, sequence_tensors, forecasts, anomaly_report]
ALL_ASSETS = [*TICK_ASSETS[:4], trained_model, *TICK_ASSETS[4:]]

__all__ = [
    "ALL_ASSETS",
    "TICK_ASSETS",
    "anomaly_report",
    "cleaned_series",
    "encoded_names",
    "forecasts",
    "raw_es_extract",
    "sequence_tensors",
    "trained_model",
]
