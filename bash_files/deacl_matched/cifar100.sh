#!/usr/bin/env bash
# Stage 2: the equal-budget ablation (DeACL's perturbation in NCP-ACL's recipe) on cifar100.
# Run from the repository root; extra key=value arguments override the config.
exec solo-ncp train --config zoo_configs/cifar100/deacl_matched.yaml "$@"
