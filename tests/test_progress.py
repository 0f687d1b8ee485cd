"""critpoint._progress: one helper for bars and callbacks."""

import pytest

from critpoint._progress import Progress, check_progress
from critpoint.errors import InputError


def test_callback_sees_running_counts_and_the_planned_total():
    seen = []
    with Progress(lambda d, t: seen.append((d, t)), 10, "work") as bar:
        bar.update(3)
        bar.advance(2)
        bar.set_total(6)
        bar.advance()
    assert seen == [(3, 10), (5, 10), (6, 6)]


def test_bar_counts_to_what_was_done(capsys):
    bar = Progress(True, 4, "work", unit="step")
    bar.update(2)
    bar.update(4)
    assert bar._bar.n == 4
    bar.close()
    bar.close()  # closing twice is harmless


def test_silent_and_refused():
    for quiet in (False, None):
        with Progress(quiet, 3, "work") as bar:
            bar.advance()
            assert bar.done == 1
    with pytest.raises(
        InputError, match="progress must be True, False, None or a callable"
    ):
        check_progress("yes")
