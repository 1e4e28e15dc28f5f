"""solo-ncp: NCP-ACL (Neighboring-Cluster Pursuit Adversarial Contrastive Learning) for solo-learn.

Importing the package imports neither torch nor solo-learn nor Lightning, so the `solo-ncp` console
script starts at once. It registers solo-ncp's methods into `solo.methods.METHODS`, so solo-learn's
own launchers can build them by name, as soon as solo-learn's `solo.methods` is imported (at once
if it already is; solo_ncp/_registration.py); registering checks the installed host and raises
HostError naming the install lines when there is none. `register_methods()` (imported on first
use) registers explicitly.
"""
from solo_ncp._host import HostError, current_host
from solo_ncp._lazy import lazy_exports
from solo_ncp._registration import register_with_solo_learn
from solo_ncp.version import __version__

register_with_solo_learn()

__getattr__, _on_first_use = lazy_exports(__name__, {"solo_ncp.methods": ("register_methods",)})
__all__ = ["HostError", "__version__", "current_host", *_on_first_use]
