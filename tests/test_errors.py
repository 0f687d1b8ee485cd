"""critpoint.errors: one exception family, each error also its standard kind."""

import pytest

import critpoint as cp
from critpoint import errors


def test_every_error_is_a_critpoint_error_and_exported():
    for name in errors.__all__:
        cls = getattr(errors, name)
        assert issubclass(cls, cp.CritpointError)
        assert getattr(cp, name) is cls
    assert issubclass(cp.InputError, ValueError)
    assert issubclass(cp.NonFiniteError, FloatingPointError)
    assert issubclass(cp.DenseTooLargeError, MemoryError)
    assert issubclass(cp.UnsafeCheckpointError, cp.CheckpointError)
    assert issubclass(errors.OutputError, OSError)


def test_convergence_error_carries_the_partial_result():
    with pytest.raises(cp.ConvergenceError, match="did not converge") as info:
        raise cp.ConvergenceError("eigsh did not converge", partial={"k": 3})
    assert info.value.partial == {"k": 3}
