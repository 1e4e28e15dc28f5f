#!/usr/bin/env bash
# The paper's Table 5 (Appendix B.2): NCP toward the n-th nearest cluster, n = 2 (`ncp`, the
# paper's), 3, 4 and 5 (`ncp-n3` ...), SLF with the paper's head, 5 seeds. report reads each row's n
# from its checkpoint. Ranks: RANKS="3 4" overrides the default "3 4 5".
#   bash bash_files/reproduce/neighbor_rank.sh DATASET [key=value ...]   DATASET: cifar10, cifar100, stl10
# By default its rows join the main table's folder (runs/reproduce-DATASET, that of DATASET.sh),
# sharing each seed's stage 1, select-k and `ncp`; OUT=... runs them elsewhere. Run the same line
# again after an interruption (with the same RANKS).
set -euo pipefail
dataset=${1:?usage: neighbor_rank.sh DATASET [key=value ...] (cifar10, cifar100 or stl10)}
if [[ $dataset == *=* || $dataset == -* ]]; then
    echo "error: the first argument is the dataset, not $dataset; usage: neighbor_rank.sh DATASET [key=value ...] (cifar10, cifar100 or stl10)" >&2
    exit 2
fi
shift
methods=ncp overrides=()
for n in ${RANKS:-3 4 5}; do
    if [[ $n == 2 ]]; then
        echo "error: RANKS holds 2, the paper's own n: its row is \`ncp\`, which this table runs already; give the other ranks (RANKS=\"3 4 5\")" >&2
        exit 2
    elif [[ ,$methods, == *",ncp-n$n=ncp,"* ]]; then
        echo "error: RANKS holds $n twice: give each rank once" >&2
        exit 2
    fi
    methods+=",ncp-n$n=ncp"
    overrides+=("ncp-n$n:method_kwargs.neighbor_rank=$n")
done
exec solo-ncp reproduce --dataset "$dataset" --seeds 0,1,2,3,4 --methods "$methods" --eval slf \
    --out "${OUT:-runs/reproduce-$dataset}" "${overrides[@]}" "$@"
