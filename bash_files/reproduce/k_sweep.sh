#!/usr/bin/env bash
# The paper's Fig. 3: NCP with a fixed K per run (`ncp-k<K>`) beside `ncp` with the silhouette's K
# (select-k, hatched in the figure), SLF with the paper's head, 5 seeds; report draws
# report_fig3_DATASET_paper.png and its table. K values: KS="10 20 50" overrides the default per dataset.
#   bash bash_files/reproduce/k_sweep.sh DATASET [key=value ...]         DATASET: cifar10, cifar100, stl10
# By default its runs join the main table's folder (runs/reproduce-DATASET, that of DATASET.sh),
# sharing each seed's stage 1, select-k and `ncp`; OUT=... runs them elsewhere. Run the same line
# again after an interruption (with the same KS).
set -euo pipefail
dataset=${1:?usage: k_sweep.sh DATASET [key=value ...] (cifar10, cifar100 or stl10)}
if [[ $dataset == *=* || $dataset == -* ]]; then
    echo "error: the first argument is the dataset, not $dataset; usage: k_sweep.sh DATASET [key=value ...] (cifar10, cifar100 or stl10)" >&2
    exit 2
fi
shift
case $dataset in
    cifar10) default="10 20 50 100 200" ;;
    *) default="10 50 100 200 300" ;;
esac
methods=ncp overrides=()
for k in ${KS:-$default}; do
    if [[ ,$methods, == *",ncp-k$k=ncp,"* ]]; then
        echo "error: KS holds $k twice: give each K once" >&2
        exit 2
    fi
    methods+=",ncp-k$k=ncp"
    overrides+=("ncp-k$k:method_kwargs.k=$k")
done
exec solo-ncp reproduce --dataset "$dataset" --seeds 0,1,2,3,4 --methods "$methods" --eval slf \
    --out "${OUT:-runs/reproduce-$dataset}" "${overrides[@]}" "$@"
