#!/usr/bin/env bash
# Linear evaluation on fashionmnist (paper Appendix A.3: its head, --head paper): SA, PGD-20 RA and AutoAttack AA.
# usage: bash_files/eval/fashionmnist.sh CKPT [slf|alf] [OUT_DIR] [extra solo-ncp eval options]
ckpt=${1:?usage: bash_files/eval/fashionmnist.sh CKPT [slf|alf] [OUT_DIR] [extra solo-ncp eval options]}
exec solo-ncp eval --ckpt "$ckpt" --dataset fashionmnist --mode "${2:-slf}" --head paper --out "${3:-runs/eval-fashionmnist-${2:-slf}}" "${@:4}"
