#!/usr/bin/env bash
# The paper's Tables 2 and 3: SLF for every encoder, ALF for ncp and deacl on cifar10, 5 seeds: per
# seed stage 1 (SimCLR), select-k, the proof of concept, ncp and deacl (as published), each
# evaluation through both BN branches, AutoAttack on the whole test set, then report
# (runs/reproduce-cifar10/report/report.md). Run from the repository root, e.g. bash
# bash_files/reproduce/cifar10.sh data.train_path=/data/datasets. Extra key=value arguments override
# every training config (see solo-ncp reproduce --help). Run the same line again after an
# interruption: finished steps are skipped, the interrupted one resumes.
exec solo-ncp reproduce --dataset cifar10 --seeds 0,1,2,3,4 --methods ncp,deacl --eval slf --eval alf=ncp,deacl \
    --out "${OUT:-runs/reproduce-cifar10}" "$@"
