#!/usr/bin/env bash
# The paper's Table 4 (Appendix B.1): NCP's perturbation strategies, (i) away from the sample's own
# cluster (`ncp-i`), (ii) toward the neighbouring one (`ncp-ii`) and (iii) both (`ncp`, the paper's),
# SLF with the paper's head, 5 seeds. report reads each row's strategy from its checkpoint.
#   bash bash_files/reproduce/strategies.sh DATASET [key=value ...]      DATASET: cifar10, cifar100, stl10
# By default its rows join the main table's folder (runs/reproduce-DATASET, that of DATASET.sh),
# sharing each seed's stage 1, select-k and `ncp`; OUT=... runs them elsewhere. Run the same line
# again after an interruption.
set -euo pipefail
dataset=${1:?usage: strategies.sh DATASET [key=value ...] (cifar10, cifar100 or stl10)}
if [[ $dataset == *=* || $dataset == -* ]]; then
    echo "error: the first argument is the dataset, not $dataset; usage: strategies.sh DATASET [key=value ...] (cifar10, cifar100 or stl10)" >&2
    exit 2
fi
shift
exec solo-ncp reproduce --dataset "$dataset" --seeds 0,1,2,3,4 --methods ncp,ncp-i=ncp,ncp-ii=ncp \
    --eval slf --out "${OUT:-runs/reproduce-$dataset}" \
    ncp-i:method_kwargs.strategy=i ncp-ii:method_kwargs.strategy=ii "$@"
