"""The trained network's forward pass in numpy, so a tick never imports TensorFlow.

A 5-minute tick runs the network once, on one batch. Importing TensorFlow and Keras for that costs a
fresh run process ~4 s and ~540 MiB (measured), more than the inference itself (0.3 s at 10,000
names). The network is small (``model.build_model``: an LSTM over 24 hourly patches, a name
embedding, two ReLU layers, a linear head, monotone quantiles), so each registered version also
stores its weights as ``network_weights.npz`` and the forecasts run them here. Training, the
backtests and ``detect`` keep Keras. ``tauxcharge_assets_tests/test_model.py`` checks that both
give the same quantiles.
"""

from __future__ import annotations

import io
from collections.abc import Mapping
from typing import Any

import numpy as np

LSTM_KEYS = ("lstm/kernel", "lstm/recurrent_kernel", "lstm/bias")
DENSE_LAYERS = 3  # two hidden ReLU layers, then the linear head (horizon x 3 outputs)


def weights_of(network: Any) -> dict[str, np.ndarray]:
    """The Keras network's weights under stable keys (layer names such as ``dense_1`` are not stable)."""
    import keras

    lstm = network.get_layer("lstm")
    embedding = network.get_layer("name_embedding")
    dense = [layer for layer in network.layers if isinstance(layer, keras.layers.Dense)]
    if len(dense) != DENSE_LAYERS:
        raise ValueError(f"expected {DENSE_LAYERS} Dense layers in {network.name}, found {len(dense)}")
    kernel, recurrent, bias = (np.asarray(w) for w in lstm.get_weights())
    weights = {
        "lstm/kernel": kernel,
        "lstm/recurrent_kernel": recurrent,
        "lstm/bias": bias,
        "embedding": np.asarray(embedding.get_weights()[0]),
    }
    for i, layer in enumerate(dense):
        weights[f"dense{i}/kernel"], weights[f"dense{i}/bias"] = (np.asarray(w) for w in layer.get_weights())
    return weights


def to_npz(weights: Mapping[str, np.ndarray]) -> bytes:
    buffer = io.BytesIO()
    np.savez(buffer, **weights)
    return buffer.getvalue()


def _softplus(x: np.ndarray) -> np.ndarray:
    return np.logaddexp(0.0, x).astype(x.dtype)


class NumpyNetwork:
    """``predict_on_batch`` of ``model.build_model``'s network, from its weights; float32 like Keras."""

    def __init__(self, weights: Mapping[str, np.ndarray]) -> None:
        missing = [key for key in (*LSTM_KEYS, "embedding") if key not in weights]
        if missing:
            raise ValueError(f"network weights lack {missing}: register the model again with this version")
        self.weights = {key: np.asarray(value, dtype=np.float32) for key, value in weights.items()}
        self.vocabulary_size = int(self.weights["embedding"].shape[0])
        self.units = int(self.weights["lstm/recurrent_kernel"].shape[0])

    @classmethod
    def from_npz(cls, data: bytes) -> NumpyNetwork:
        with np.load(io.BytesIO(data)) as stored:
            return cls({key: stored[key] for key in stored.files})

    def _lstm(self, sequence: np.ndarray) -> np.ndarray:
        """Keras' LSTM (gates i, f, c, o; sigmoid and tanh), returning the last hidden state.

        The gate columns are reordered to (i, f, o | c) once, so each step takes one sigmoid over the
        three sigmoid gates and one tanh, computed in place (a step allocates nothing at 10,000 names).
        """
        u = self.units
        order = np.r_[0 : 2 * u, 3 * u : 4 * u, 2 * u : 3 * u]
        kernel, recurrent, bias = (self.weights[key][..., order] for key in LSTM_KEYS)
        projected = sequence @ kernel + bias  # every step's input projection at once: (n, steps, 4u)
        hidden = np.zeros((len(sequence), u), np.float32)
        cell = np.zeros_like(hidden)
        z = np.empty((len(sequence), 4 * u), np.float32)
        scratch = np.empty_like(hidden)
        for t in range(sequence.shape[1]):
            np.matmul(hidden, recurrent, out=z)
            z += projected[:, t]
            gates = z[:, : 3 * u]
            np.multiply(gates, 0.5, out=gates)  # sigmoid(x) = (tanh(x / 2) + 1) / 2
            np.tanh(gates, out=gates)
            gates += 1.0
            gates *= 0.5
            candidate = z[:, 3 * u :]
            np.tanh(candidate, out=candidate)
            cell *= z[:, u : 2 * u]  # forget gate
            np.multiply(z[:, :u], candidate, out=scratch)  # input gate x candidate
            cell += scratch
            np.tanh(cell, out=scratch)
            np.multiply(z[:, 2 * u : 3 * u], scratch, out=hidden)  # output gate x tanh(cell)
        return hidden

    def predict_on_batch(self, inputs: Mapping[str, np.ndarray]) -> np.ndarray:
        """(n, horizon, 3) quantiles in the network's scaled units, for ``model.make_inputs``' arrays."""
        ids = np.asarray(inputs["name_id"], dtype=np.int64)
        features = [
            self._lstm(np.asarray(inputs["sequence"], dtype=np.float32)),
            self.weights["embedding"][ids],
            *(np.asarray(inputs[key], dtype=np.float32) for key in ("recent", "seasonal", "calendar")),
        ]
        hidden = np.concatenate(features, axis=1)
        for i in range(DENSE_LAYERS):
            hidden = hidden @ self.weights[f"dense{i}/kernel"] + self.weights[f"dense{i}/bias"]
            if i < DENSE_LAYERS - 1:
                hidden = np.maximum(hidden, 0.0)
        raw = hidden.reshape(len(ids), -1, 3)
        median = raw[..., 1]
        return np.stack([median - _softplus(raw[..., 0]), median, median + _softplus(raw[..., 2])], axis=-1)
