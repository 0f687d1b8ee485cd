"""The linalg package: its submodules are modules, its re-exports are the solvers."""

import importlib
import inspect
import pkgutil

import critpoint as cp
import critpoint.linalg


def test_no_attribute_shadows_a_submodule():
    names = [m.name for m in pkgutil.iter_modules(critpoint.linalg.__path__)]
    assert {"lanczos", "slq", "trace", "_tridiag", "_operator"} <= set(names)
    for name in names:
        module = importlib.import_module(f"critpoint.linalg.{name}")
        assert getattr(critpoint.linalg, name) is module, name
        assert name not in critpoint.linalg.__all__


def test_the_trace_module_and_the_trace_function():
    import critpoint.linalg.trace as trace_module

    assert inspect.ismodule(trace_module)
    assert cp.trace is trace_module.trace
    assert inspect.isfunction(cp.trace)
    assert cp.eigsh is critpoint.linalg.eigsh
    assert cp.spectral_density is critpoint.linalg.spectral_density
