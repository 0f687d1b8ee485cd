"""One progress helper: a notebook-friendly bar, a callback, or nothing.

Every long computation takes ``progress=``: ``False``/``None`` (silent),
``True`` (a ``tqdm.auto`` bar: a widget in notebooks, text on standard error
elsewhere) or a callable ``progress(done, total)``. The total is the work
*planned*; a solver that finishes early closes its bar at what it did.
"""

from __future__ import annotations

from collections.abc import Callable
from types import TracebackType
from typing import Any

from critpoint.errors import InputError

__all__ = ["Progress", "ProgressArg", "check_progress"]

ProgressArg = bool | Callable[[int, int], object] | None


def check_progress(progress: object, name: str = "progress") -> None:
    """Refuse anything but ``True``, ``False``, ``None`` or a callable."""
    if not (progress is None or isinstance(progress, bool) or callable(progress)):
        msg = (
            f"{name} must be True, False, None or a callable {name}(done, total), "
            f"got {type(progress).__name__}"
        )
        raise InputError(msg)


class Progress:
    """Report ``done`` of ``total`` units to a bar, a callback or nobody.

    Parameters
    ----------
    progress : bool, callable or None
        See the module docstring.
    total : int
        Units of work planned.
    desc : str
        Label of the bar.
    unit : str
        Name of a unit (``"HVP"``, ``"step"``, ``"loss"``).

    Examples
    --------
    >>> seen = []
    >>> with Progress(lambda d, t: seen.append((d, t)), 3, "demo") as bar:
    ...     bar.update(2)
    ...     bar.advance()
    >>> seen
    [(2, 3), (3, 3)]
    """

    def __init__(
        self, progress: ProgressArg, total: int, desc: str, unit: str = "HVP"
    ) -> None:
        check_progress(progress)
        self.total = int(total)
        self.done = 0
        self._callback: Callable[[int, int], object] | None = None
        self._bar: Any = None
        if callable(progress):
            self._callback = progress
        elif progress:
            from tqdm.auto import tqdm

            self._bar = tqdm(total=self.total, desc=desc, unit=unit, leave=False)

    def update(self, done: int) -> None:
        """Record that ``done`` units (a running count) are finished."""
        done = int(done)
        if self._bar is not None and done != self.done:
            self._bar.update(done - self.done)
        self.done = done
        if self._callback is not None:
            self._callback(done, self.total)

    def advance(self, units: int = 1) -> None:
        """Record ``units`` more finished units."""
        self.update(self.done + units)

    def set_total(self, total: int) -> None:
        """Change the planned work (a solver that learns it needs more or less)."""
        self.total = int(total)
        if self._bar is not None:
            self._bar.total = self.total
            self._bar.refresh()

    def close(self) -> None:
        """Close the bar, if any."""
        if self._bar is not None:
            self._bar.close()
            self._bar = None

    def __enter__(self) -> Progress:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()
