"""Fixtures shared by the solver tests."""

from collections.abc import Callable

import pytest

import critpoint as cp


@pytest.fixture
def check_progress_types() -> Callable:
    """Check that ``run(progress)`` takes the library's progress types and refuses others."""

    def check(run: Callable) -> None:
        seen: list[tuple[int, int]] = []
        quiet = run(None)
        assert run(False).num_matvecs == quiet.num_matvecs
        run(True)  # a tqdm bar on stderr
        run(lambda done, total: seen.append((done, total)))
        assert seen
        assert all(0 < done <= total for done, total in seen)
        assert [d for d, _ in seen] == sorted(d for d, _ in seen)
        with pytest.raises(cp.InputError, match="progress must be True, False, None"):
            run("yes")

    return check
