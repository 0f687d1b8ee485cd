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


def test_parts_make_one_count_whose_total_each_part_revises():
    seen = []
    with Progress(lambda d, t: seen.append((d, t)), 10, "two parts") as bar:
        first = bar.part(after=4)
        first(3, 8)  # the first part plans 8 (the whole: 8 + 4), not 6
        first(5, 5)  # and finishes at 5
        second = bar.part()
        second(2, 4)
        bar.finish(8)  # the second stopped early, at 3 of its 4
    assert seen == [(3, 12), (5, 9), (7, 9), (8, 8)]


def test_bar_label_and_note(capsys):
    bar = Progress(True, 4, "work")
    bar.describe("work: phase 2")
    bar.note("loss 0.5")
    assert bar._bar.desc.startswith("work: phase 2")
    assert "loss 0.5" in bar._bar.postfix
    bar.finish(3)
    assert (bar._bar.n, bar._bar.total) == (3, 3)
    bar.close()
    silent = Progress(None, 2, "work")
    silent.describe("nothing shown")
    silent.note("nothing shown")
    silent.finish()
    assert (silent.done, silent.total) == (0, 0)


def test_work_that_ends_early_closes_the_plan_at_what_was_done():
    seen = []
    with Progress(lambda d, t: seen.append((d, t)), 10, "work") as bar:
        bar.update(4)
    bar.close()  # twice: nothing more
    assert seen == [(4, 10), (4, 4)]
    seen.clear()
    with Progress(lambda d, t: seen.append((d, t)), 2, "work") as bar:
        bar.update(2)
    assert seen == [(2, 2)]  # already at the plan: no second report
