"""Package re-exports imported on first use (PEP 562), so that importing one light module of a
package (the console script's options: `solo_ncp.eval.protocol`, `solo_ncp.models.branches`) does
not import torch through the package's `__init__`."""
import importlib
import sys
from typing import Any, Callable, Dict, List, Sequence, Tuple


def lazy_exports(package: str, exports: Dict[str, Sequence[str]]) -> Tuple[Callable[[str], Any], List[str]]:
    """(`__getattr__`, `__all__`) for `package`: `exports` maps a module to the names the package
    re-exports from it; each is imported on first access and then kept on the package."""
    module_of = {name: module for module, names in exports.items() for name in names}

    def __getattr__(name: str) -> Any:
        if name not in module_of:
            raise AttributeError(f"module {package!r} has no attribute {name!r}")
        value = getattr(importlib.import_module(module_of[name]), name)
        setattr(sys.modules[package], name, value)
        return value

    return __getattr__, sorted(module_of)
