#!/usr/bin/env bash
# The Fashion-MNIST proxy at CPU scale (3 seeds, ncp / deacl / deacl_matched / ncp with cluster_bn
# adv, SLF and ALF, the PoC, raw-pixel probes): benchmarks/proxy_fmnist.py, one `solo-ncp reproduce`
# call with the proxy's budget. Run from the repository root; options: --seeds, --no-alf, --quick,
# --out. Run the same line again after an interruption.
exec python benchmarks/proxy_fmnist.py "$@"
