#!/usr/bin/env bash
# Stage 2: DeACL as published (lambda 2, one BN, joint batch) on fashionmnist from the stage-1 checkpoint named in the config.
# Run from the repository root; extra key=value arguments override the config.
exec solo-ncp train --config zoo_configs/fashionmnist/deacl.yaml "$@"
