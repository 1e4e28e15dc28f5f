"""solo-ncp: NCP-ACL (Neighboring-Cluster Pursuit Adversarial Contrastive Learning) for solo-learn.

Importing the package checks the installed solo-learn and registers solo-ncp's methods into
`solo.methods.METHODS`, so solo-learn's own launchers can build them by name. The `solo-ncp`
console script alone imports it without a host: `solo-ncp --version` then prints the host's error
after the version, and every command stops with that error as its one `error:` line.
"""
import sys
from pathlib import Path

from solo_ncp._host import HostError, current_host
from solo_ncp.version import __version__

CONSOLE_SCRIPT = "solo-ncp"

try:
    current_host()
except HostError:
    if Path(sys.argv[0] if sys.argv else "").stem != CONSOLE_SCRIPT:
        raise
else:
    from solo_ncp.methods import register_methods  # needs the host

    register_methods()

__all__ = ["HostError", "__version__", "register_methods"]
