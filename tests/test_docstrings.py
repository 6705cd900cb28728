"""The public API is explicit and documented with examples that run.

Every module of the package defines `__all__`, and every class and function
it lists (and defines itself) has a docstring with a `>>>` example. The
examples themselves run as doctests (`--doctest-modules`, see setup.cfg).
"""

import importlib
import inspect
import pkgutil

import pytest

import mmfusion

MODULES = ["mmfusion"] + sorted(
    info.name for info in pkgutil.walk_packages(mmfusion.__path__, "mmfusion.")
)


def _public_objects():
    """`(module name, object name)` of every class and function in a module's
    `__all__` that the module defines itself (re-exports are checked where
    they are defined)."""
    found = []
    for name in MODULES:
        module = importlib.import_module(name)
        for attr in getattr(module, "__all__", ()):
            obj = getattr(module, attr, None)
            if (inspect.isclass(obj) or inspect.isfunction(obj)) and obj.__module__ == name:
                found.append((name, attr))
    return found


PUBLIC = _public_objects()


@pytest.mark.parametrize("module_name", MODULES)
def test_module_defines_all(module_name):
    module = importlib.import_module(module_name)
    assert hasattr(module, "__all__"), f"{module_name} has no __all__"
    missing = [name for name in module.__all__ if not hasattr(module, name)]
    assert not missing, f"{module_name}.__all__ lists names it does not have: {missing}"
    assert len(set(module.__all__)) == len(module.__all__), f"{module_name}.__all__ repeats names"


@pytest.mark.parametrize("module_name, name", PUBLIC, ids=[f"{m}.{n}" for m, n in PUBLIC])
def test_public_object_has_an_example(module_name, name):
    obj = getattr(importlib.import_module(module_name), name)
    assert ">>>" in (obj.__doc__ or ""), (
        f"{module_name}.{name} needs a docstring with a `>>>` example"
    )
