"""solo-ncp: NCP-ACL (Neighboring-Cluster Pursuit Adversarial Contrastive Learning) for solo-learn.

Importing the package imports neither torch nor solo-learn nor Lightning, so the `solo-ncp` console
script starts at once. It registers solo-ncp's methods into `solo.methods.METHODS`, so solo-learn's
own launchers can build them by name, as soon as solo-learn's `solo.methods` is imported (at once
if it already is; solo_ncp/_registration.py); registering checks the installed host and raises
HostError naming the install lines when there is none. `register_methods()` registers explicitly.
"""
from solo_ncp._host import HostError
from solo_ncp._registration import register_with_solo_learn
from solo_ncp.version import __version__

register_with_solo_learn()

__all__ = ["HostError", "__version__", "register_methods"]


def __getattr__(name: str):
    """`register_methods`, imported on first use: importing solo_ncp.methods imports solo-learn."""
    if name == "register_methods":
        from solo_ncp.methods import register_methods

        return register_methods
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
