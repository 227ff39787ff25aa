"""Modules imported on first use: ``hp = lazy("healpy")`` costs nothing until ``hp.pix2vec``.

healpy imports astropy and matplotlib, and scipy's submodules take their own time: a module
that needs them only inside its functions holds a :class:`lazy` proxy at module level, so that
``import pyg_sphere.nn`` does not pay for them (``tests/test_import_cost.py``).
"""

import importlib
from types import ModuleType


class lazy:
    """A stand-in for the module `name`, imported on the first attribute access."""

    __slots__ = ("_name", "_module")

    def __init__(self, name: str):
        self._name = name
        self._module = None

    def _load(self) -> ModuleType:
        if self._module is None:  # the import system's lock makes concurrent first uses safe
            self._module = importlib.import_module(self._name)
        return self._module

    def __getattr__(self, attr: str):
        return getattr(self._load(), attr)

    def __dir__(self):
        return dir(self._load())

    def __repr__(self) -> str:
        state = "imported" if self._module is not None else "not imported yet"
        return f"<lazy module {self._name!r} ({state})>"
