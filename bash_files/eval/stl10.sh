#!/usr/bin/env bash
# Linear evaluation on stl10 (paper Appendix A.3: its head, --head paper): SA, PGD-20 RA and AutoAttack AA.
# usage: bash_files/eval/stl10.sh CKPT [slf|alf] [OUT_DIR] [extra solo-ncp eval options]
ckpt=${1:?usage: bash_files/eval/stl10.sh CKPT [slf|alf] [OUT_DIR] [extra solo-ncp eval options]}
exec solo-ncp eval --ckpt "$ckpt" --dataset stl10 --mode "${2:-slf}" --head paper --out "${3:-runs/eval-stl10-${2:-slf}}" "${@:4}"
