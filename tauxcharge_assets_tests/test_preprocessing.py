"""``NameScaler`` as a scikit-learn transformer: same scales as before, same window fallback, sklearn's contract."""

from __future__ import annotations

import pickle

import numpy as np
import pandas as pd
import pytest
from sklearn.base import clone
from sklearn.exceptions import NotFittedError
from sklearn.pipeline import Pipeline
from sklearn.utils.validation import check_is_fitted

from tauxcharge_assets.data.simulator import SimulationSpec, simulate
from tauxcharge_assets.model.forecaster import NameScaler, one_step_scale, robust_floor, wide_frame


@pytest.fixture(scope="module")
def frame() -> pd.DataFrame:
    return simulate(SimulationSpec(n_names=5, days=3, seed=1)).values


def formula(values: np.ndarray) -> float:
    """The scale as it was computed before the transformer (per name, on that name's own array)."""
    values = np.asarray(values, dtype=np.float64)
    level = np.nanmedian(values) if np.isfinite(values).any() else 1.0
    return float(robust_floor(one_step_scale(values), np.array([level]))[0])


def test_not_fitted_is_refused(frame: pd.DataFrame) -> None:
    scaler = NameScaler()
    with pytest.raises(NotFittedError):
        check_is_fitted(scaler)
    with pytest.raises(NotFittedError):
        scaler.transform(frame)
    with pytest.raises(NotFittedError):
        scaler.for_windows(["a"], np.ones((1, 4)), np.ones((1, 4)))


def test_scales_equal_the_formula_exactly(frame: pd.DataFrame) -> None:
    scaler = NameScaler().fit(frame)
    check_is_fitted(scaler)
    assert scaler.scales_ == {str(name): formula(frame[name].to_numpy()) for name in frame.columns}
    assert list(scaler.get_feature_names_out()) == [str(name) for name in frame.columns]


def test_padding_of_shorter_series_leaves_their_scales_unchanged(frame: pd.DataFrame) -> None:
    ragged = {str(name): frame[name].to_numpy(np.float32)[: 200 + 97 * i] for i, name in enumerate(frame.columns)}
    ragged[str(frame.columns[0])][-5:] = np.nan  # a series that itself ends in a gap
    assert NameScaler().fit(wide_frame(ragged)).scales_ == {name: formula(v) for name, v in ragged.items()}


def test_transform_divides_each_column_and_inverse_transform_round_trips(frame: pd.DataFrame) -> None:
    scaler = NameScaler()
    scaled = scaler.fit_transform(frame)
    name = frame.columns[2]
    np.testing.assert_allclose(scaled[name], frame[name] / scaler.scales_[str(name)])
    pd.testing.assert_frame_equal(scaler.inverse_transform(scaled), frame, check_dtype=False, rtol=1e-12)


def test_unseen_names_take_their_window_scale_in_windows_and_are_refused_by_transform(frame: pd.DataFrame) -> None:
    scaler = NameScaler().fit(frame)
    known = str(frame.columns[0])
    window = np.tile(np.array([10.0, 13.0, 11.0], np.float32), 96)[None, :]
    mask = np.ones((2, window.shape[1]), np.float32)
    scales = scaler.for_windows([known, "never-seen"], np.vstack([window, window]), mask)
    assert scales.dtype == np.float32
    assert scales[0] == np.float32(scaler.scales_[known])
    assert scales[1] == robust_floor(one_step_scale(window), np.nanmedian(window, axis=1))[0]
    with pytest.raises(ValueError, match="not seen in fit"):
        scaler.transform(frame.rename(columns={frame.columns[1]: "never-seen"}))


def test_clone_gives_an_unfitted_copy_and_a_pipeline_can_hold_it(frame: pd.DataFrame) -> None:
    fitted = NameScaler().fit(frame)
    copy = clone(fitted)
    assert copy.get_params() == {}
    with pytest.raises(NotFittedError):
        check_is_fitted(copy)
    pd.testing.assert_frame_equal(Pipeline([("scale", clone(copy))]).fit_transform(frame), fitted.transform(frame))


def test_from_scales_and_pickles_give_the_same_fitted_scaler(frame: pd.DataFrame) -> None:
    fitted = NameScaler().fit(frame)
    stored = NameScaler.from_scales({name: scale for name, scale in fitted.scales_.items()})
    check_is_fitted(stored)
    assert stored.scales_ == fitted.scales_
    assert list(stored.get_feature_names_out()) == list(fitted.get_feature_names_out())
    assert pickle.loads(pickle.dumps(fitted)).scales_ == fitted.scales_


def test_a_scaler_pickled_before_it_was_a_transformer_still_loads() -> None:
    """Detector models saved earlier pickled a dataclass whose only state was ``scales``."""
    old = NameScaler.__new__(NameScaler)
    old.__dict__["scales"] = {"a": 2.0}
    loaded = pickle.loads(pickle.dumps(old))
    check_is_fitted(loaded)
    assert loaded.scales_ == {"a": 2.0} and "scales" not in vars(loaded)
