#!/usr/bin/env bash
# Stage 1 (SimCLR, paper Appendix A.2.1) on fashionmnist. Run from the repository root; extra key=value
# arguments override the config, e.g. data.train_path=/data/datasets.
exec solo-ncp pretrain --config zoo_configs/fashionmnist/simclr.yaml "$@"
