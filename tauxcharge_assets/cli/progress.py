"""Progress of the long steps: a bar with a rate and an ETA on a terminal, one summary line elsewhere.

Bars go to stderr (stdout keeps the command's results) and only when stderr is a terminal, unless
``--progress always``: a CI log or a test's captured output would otherwise fill with carriage
returns. Without bars, each long step still ends with one line saying what it did and how fast.
tqdm is imported only when a step starts, so ``--help`` stays fast.
"""

from __future__ import annotations

import sys
import time
from collections.abc import Iterable, Iterator
from types import TracebackType
from typing import Any, Literal, TypeVar

Mode = Literal["auto", "always", "never"]
MODES: tuple[Mode, ...] = ("auto", "always", "never")

_mode: Mode = "auto"

T = TypeVar("T")


def configure(mode: Mode) -> None:
    """``auto``: bars when stderr is a terminal; ``always``: bars anyway; ``never``: summary lines only."""
    global _mode
    _mode = mode


def bars_enabled() -> bool:
    if _mode == "always":
        return True
    if _mode == "never":
        return False
    return sys.stderr.isatty()


def note(message: str) -> None:
    """A status line on stderr, beside the bars (stdout is for results)."""
    print(message, file=sys.stderr, flush=True)


def _duration(seconds: float) -> str:
    if seconds < 90:
        return f"{seconds:.1f} s"
    minutes, secs = divmod(round(seconds), 60)
    return f"{minutes} min {secs:02d} s" if minutes < 60 else f"{minutes // 60} h {minutes % 60:02d} min"


class Step:
    """One long step: ``with Step("Writing documents", total=n, unit="doc") as step: step.update(k)``.

    ``total=None`` and no ``unit`` make a timed step (one call, nothing to count): it prints its line
    when it ends. A step that fails prints nothing: the error line says what happened.
    """

    def __init__(self, description: str, total: int | None = None, unit: str | None = None) -> None:
        self.description = description
        self.total = total
        self.unit = unit
        self.done = 0
        self.postfix: dict[str, str] = {}
        self._bar: Any = None
        self._started = 0.0

    def __enter__(self) -> Step:
        self._started = time.monotonic()
        if self.unit is not None and bars_enabled():
            from tqdm import tqdm

            self._bar = tqdm(
                total=self.total,
                desc=self.description,
                unit=f" {self.unit}",
                unit_scale=self.unit not in ("epoch", "file", "partition"),
                file=sys.stderr,
                dynamic_ncols=True,
                leave=True,
            )
        elif self.unit is None and bars_enabled():
            note(f"{self.description} ...")
        return self

    def update(self, n: int = 1) -> None:
        self.done += n
        if self._bar is not None:
            self._bar.update(n)

    def set_postfix(self, **values: object) -> None:
        """Figures shown beside the bar and in the summary line, e.g. the loss of the last epoch."""
        self.postfix = {
            key: f"{value:.4g}" if isinstance(value, float) else str(value) for key, value in values.items()
        }
        if self._bar is not None:
            self._bar.set_postfix(self.postfix, refresh=False)

    def wrap(self, items: Iterable[T]) -> Iterator[T]:
        """``items``, counted as they are consumed (e.g. documents pulled by a bulk writer)."""
        for item in items:
            yield item
            self.update()

    def summary(self) -> str:
        elapsed = time.monotonic() - self._started
        line = f"{self.description}: "
        if self.unit is not None:
            line += f"{self.done:,} {self.unit}{'' if self.done == 1 else 's'} in {_duration(elapsed)}"
            if self.done and elapsed > 0:
                rate = self.done / elapsed
                line += f" ({rate:,.0f} {self.unit}/s)" if rate >= 1 else f" ({elapsed / self.done:.1f} s/{self.unit})"
        else:
            line += f"done in {_duration(elapsed)}"
        if self.postfix:
            line += ", " + ", ".join(f"{key} {value}" for key, value in self.postfix.items())
        return line

    def __exit__(
        self, kind: type[BaseException] | None, error: BaseException | None, traceback: TracebackType | None
    ) -> None:
        if self._bar is not None:
            if kind is None and self.total is not None and self.done != self.total:
                self._bar.total = self.done  # early stopping, or an estimated total: end on a full bar
                self._bar.refresh()
            self._bar.close()  # the closed bar stays on screen with its count, time and rate
        elif kind is None:
            note(self.summary())


def epoch_callback(step: Step) -> Any:
    """A Keras callback advancing ``step`` once per epoch, with the losses beside it (imports Keras)."""
    import keras

    class EpochProgress(keras.callbacks.Callback):
        def on_epoch_end(self, epoch: int, logs: dict[str, float] | None = None) -> None:
            logs = logs or {}
            step.set_postfix(**{key: float(logs[key]) for key in ("loss", "val_loss") if key in logs})
            step.update()

    return EpochProgress()
