"""solo-learn methods contributed by solo-ncp, and their registration into solo-learn.

The classes come from the adapter of the installed host (`solo_ncp._host`): `ncp.py` for
solo-learn 1.0.2, `ncp_main.py` for solo-learn main; both wrap the same `stage2_hooks`."""
from typing import Dict, Type

from solo_ncp._host import current_host, import_solo


def solo_ncp_methods() -> Dict[str, Type]:
    """The method classes solo-ncp adds, by their registry name."""
    import_solo()
    if current_host().is_main:
        from solo_ncp.methods.ncp_main import NCP, DeACL
    else:
        from solo_ncp.methods.ncp import NCP, DeACL

    return {"ncp": NCP, "deacl": DeACL}


def register_methods() -> Dict[str, Type]:
    """Adds solo-ncp's methods to `solo.methods.METHODS`; returns what it added."""
    methods = solo_ncp_methods()
    import_solo().METHODS.update(methods)
    return methods
