#!/usr/bin/env bash
# Stage 2: the equal-budget ablation (DeACL's perturbation in NCP-ACL's recipe) on fashionmnist.
# Run from the repository root; extra key=value arguments override the config.
exec solo-ncp train --config zoo_configs/fashionmnist/deacl_matched.yaml "$@"
