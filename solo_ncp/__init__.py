"""solo-ncp: NCP-ACL (Neighboring-Cluster Pursuit Adversarial Contrastive Learning) for solo-learn.

Importing the package checks the installed solo-learn and registers solo-ncp's methods into
`solo.methods.METHODS`, so solo-learn's own launchers can build them by name.
"""
from solo_ncp._host import HostError, current_host

__version__ = "0.1.0"

current_host()

from solo_ncp.methods import register_methods  # noqa: E402  (needs the host check first)

register_methods()

__all__ = ["HostError", "__version__", "register_methods"]
