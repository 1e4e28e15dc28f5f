"""`import solo_ncp` registers solo-ncp's methods into solo-learn's `solo.methods.METHODS` without
importing solo-learn itself (seconds of Lightning that the console script does not need): at once
if `solo.methods` is already imported, else right after its first import. Registering is importing
`solo_ncp.methods`, which imports solo-learn and checks the host (HostError)."""
import importlib
import importlib.abc
import importlib.util
import sys

WATCHED = "solo.methods"
REGISTRAR = "solo_ncp.methods"
"""Importing it registers (the last line of solo_ncp/methods/__init__.py)."""


class _ThenRegister(importlib.abc.Loader):
    """Runs `WATCHED`'s own loader, gives the module that loader back, then registers."""

    def __init__(self, loader: importlib.abc.Loader):
        self.loader = loader

    def create_module(self, spec):
        return self.loader.create_module(spec)

    def exec_module(self, module):
        self.loader.exec_module(module)
        module.__loader__ = module.__spec__.loader = self.loader
        importlib.import_module(REGISTRAR)


class RegisterOnImport(importlib.abc.MetaPathFinder):
    """First on `sys.meta_path` until `WATCHED` is found: finds it through the other finders and
    chains `_ThenRegister` to its loader; every other name goes on to them untouched."""

    def find_spec(self, name, path, target=None):
        if name != WATCHED:
            return None
        sys.meta_path.remove(self)
        spec = importlib.util.find_spec(name)
        if spec is not None and spec.loader is not None:
            spec.loader = _ThenRegister(spec.loader)
        return spec


def register_with_solo_learn() -> None:
    """Registers now if solo-learn's `WATCHED` is imported, else once it is (idempotent)."""
    if WATCHED in sys.modules:
        importlib.import_module(REGISTRAR)
    elif not any(isinstance(finder, RegisterOnImport) for finder in sys.meta_path):
        sys.meta_path.insert(0, RegisterOnImport())
