"""One progress helper: a notebook-friendly bar, a callback, or nothing.

Every long computation takes ``progress=``: ``False``/``None`` (silent),
``True`` (a ``tqdm.auto`` bar: a widget in notebooks, text on standard error
elsewhere) or a callable ``progress(done, total)``. The total is the work
*planned*, never a budget: a solver that learns it needs more or less says
so (:meth:`Progress.set_total`), one that finishes early closes its bar at
what it did. Work made of parts (the phases of a diagnosis) shows as one
count: :meth:`Progress.part` gives each part a callback of its own.
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
        self._closed = False
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
        total = int(total)
        if total == self.total:
            return
        self.total = total
        if self._bar is not None:
            self._bar.total = self.total
            self._bar.refresh()

    def finish(self, done: int | None = None) -> None:
        """The work is over at ``done`` units (default: the count reached): the total too."""
        done = self.done if done is None else int(done)
        self.set_total(done)
        self.update(done)

    def note(self, text: str) -> None:
        """Show a short text beside the bar (the training loss, the time planned).

        Callbacks see counts only; the text is for the bar.
        """
        if self._bar is not None:
            self._bar.set_postfix_str(text, refresh=True)

    def describe(self, desc: str) -> None:
        """Change the bar's label (the phase a multi-phase computation is in)."""
        if self._bar is not None:
            self._bar.set_description_str(desc, refresh=True)

    def part(self, after: int = 0) -> Callable[[int, int], None]:
        """A callback ``(done, total)`` for one part of the work, shown in this count.

        The part starts at the count reached now; its own plan ``total`` and
        the ``after`` units planned for the parts that follow it make this
        bar's total, so a part that revises its plan revises the whole.

        Parameters
        ----------
        after : int
            Units planned after this part.

        Examples
        --------
        >>> seen = []
        >>> bar = Progress(lambda d, t: seen.append((d, t)), 10, "two parts")
        >>> first = bar.part(after=4)
        >>> first(3, 8)  # the first part planned 8, not 6
        >>> seen[-1]
        (3, 12)
        """
        offset = self.done

        def report(done: int, total: int) -> None:
            self.set_total(offset + int(total) + int(after))
            self.update(offset + int(done))

        return report

    def close(self) -> None:
        """Close the bar, if any, at what was done: work that ended early ends the plan.

        A callback sees ``(done, done)`` then, unless that was its last report.
        """
        if not self._closed:
            self._closed = True
            if self.done != self.total:
                self.finish()
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
