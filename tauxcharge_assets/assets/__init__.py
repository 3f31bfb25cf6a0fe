from tauxcharge_assets.assets.features import encoded_names, sequence_tensors
from tauxcharge_assets.assets.ingest import cleaned_series, raw_es_extract
from tauxcharge_assets.assets.serving import anomaly_report, forecasts
from tauxcharge_assets.assets.training import champion_model, trained_model
from tauxcharge_assets.assets.tuning import hyperparameter_search

TICK_ASSETS = [raw_es_extract, cleaned_series, encoded_names, sequence_tensors, forecasts, anomaly_report]
MODEL_ASSETS = [trained_model, champion_model]
ALL_ASSETS = [*TICK_ASSETS[:4], *MODEL_ASSETS, *TICK_ASSETS[4:], hyperparameter_search]

__all__ = [
    "ALL_ASSETS",
    "MODEL_ASSETS",
    "TICK_ASSETS",
    "anomaly_report",
    "champion_model",
    "cleaned_series",
    "encoded_names",
    "forecasts",
    "hyperparameter_search",
    "raw_es_extract",
    "sequence_tensors",
    "trained_model",
]
