"""The NAB loader on the real realAWSCloudwatch files in ../shared (read in place, never copied)."""

import pandas as pd
import pytest

from tauxcharge_assets.data import nab


def test_reads_every_file_and_its_labelled_windows() -> None:
    series = nab.read_directory(nab.DEFAULT_NAB_DIR)
    windows = nab.read_anomaly_windows(nab.DEFAULT_NAB_DIR)
    assert len(series) == 17
    cpu = series["ec2_cpu_utilization_24ae8d"]
    assert cpu["timestamp"].dt.tz is not None and cpu["value"].notna().all()
    assert set(windows) == set(series)
    first_start, first_end = windows["ec2_cpu_utilization_24ae8d"][0]
    assert first_start < first_end and cpu["timestamp"].min() <= first_start
    ids = [doc_id for doc_id, _ in nab.documents({"x": cpu.head(3)})]
    assert len(set(ids)) == 3


def test_a_file_in_another_layout_is_refused(tmp_path) -> None:
    bad = tmp_path / "bad.csv"
    pd.DataFrame({"time": [1], "v": [2]}).to_csv(bad, index=False)
    with pytest.raises(ValueError, match="expected the columns timestamp,value"):
        nab.read_series(bad)
