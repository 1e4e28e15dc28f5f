"""solo-learn methods contributed by solo-ncp, and their registration into solo-learn."""
import warnings
from typing import Dict, Type


def _quiet_solo_import():
    """Imports solo.methods, hiding the deprecation chatter of its 2021-era dependencies."""
    with warnings.catch_warnings():
        # lightning-bolts re-adds "once" filters ahead of any "ignore": mute the display instead
        warnings.showwarning = lambda *args, **kwargs: None
        import solo.methods

    return solo.methods


def solo_ncp_methods() -> Dict[str, Type]:
    """The method classes solo-ncp adds, by their registry name."""
    _quiet_solo_import()
    from solo_ncp.methods.ncp import NCP, DeACL

    return {"ncp": NCP, "deacl": DeACL}


def register_methods() -> Dict[str, Type]:
    """Adds solo-ncp's methods to `solo.methods.METHODS`; returns what it added."""
    methods = solo_ncp_methods()
    _quiet_solo_import().METHODS.update(methods)
    return methods
