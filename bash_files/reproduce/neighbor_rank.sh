#!/usr/bin/env bash
# The paper's Table 5 (Appendix B.2): NCP toward the n-th nearest cluster, n = 2 (`ncp`, the
# paper's), 3, 4 and 5 (`ncp-n3` ...), SLF with the paper's head, 5 seeds. report reads each row's n
# from its checkpoint.
#   bash bash_files/reproduce/neighbor_rank.sh DATASET [key=value ...]   DATASET: cifar10, cifar100, stl10
# By default its rows join the main table's folder (runs/reproduce-DATASET, that of DATASET.sh),
# sharing each seed's stage 1, select-k and `ncp`; OUT=... runs them elsewhere. Run the same line
# again after an interruption.
set -euo pipefail
dataset=${1:?usage: neighbor_rank.sh DATASET [key=value ...] (cifar10, cifar100 or stl10)}
shift
exec solo-ncp reproduce --dataset "$dataset" --seeds 0,1,2,3,4 \
    --methods ncp,ncp-n3=ncp,ncp-n4=ncp,ncp-n5=ncp --eval slf --out "${OUT:-runs/reproduce-$dataset}" \
    ncp-n3:method_kwargs.neighbor_rank=3 ncp-n4:method_kwargs.neighbor_rank=4 \
    ncp-n5:method_kwargs.neighbor_rank=5 "$@"
