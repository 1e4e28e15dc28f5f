"""The BN branches of a dual-BN encoder (`solo_ncp.models.dual_bn`), in a module without torch:
the console script's options name them before anything imports torch."""
BRANCHES = ("clean", "adv")
DEFAULT_BN = "adv"
"""Branch used to evaluate dual-BN encoders, as ACL and DeACL do (sources in `solo_ncp.eval`)."""
