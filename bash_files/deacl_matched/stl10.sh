#!/usr/bin/env bash
# Stage 2: the equal-budget ablation (DeACL's perturbation in NCP-ACL's recipe) on stl10.
# Run from the repository root; extra key=value arguments override the config.
exec solo-ncp train --config zoo_configs/stl10/deacl_matched.yaml "$@"
