#!/usr/bin/env bash
# Create or update the project's virtual environment with solo-learn 1.0.2 on a modern stack.
#
#   usage: scripts/setup_env.sh [VENV_DIR]        (default: .venv)
#
# One pip command resolves the whole runtime stack, so the resolver sees every pin at once:
#   torch 2.14.1            -> needs setuptools>=77.0.3
#   pytorch-lightning 1.9.5 -> lightning_fabric imports pkg_resources (gone in setuptools 81)
#                              and uses np.Inf (gone in numpy 2)
# robustbench (a test dependency: the export's oracle) pins timm 1.0.9, which solo-learn runs on.
# solo-learn 1.0.2 and lightning-bolts 0.7.0 pin torch 1.9-era deps: installed with --no-deps.
# A stamp file makes re-runs a no-op until this script, setup.py or the version changes.
set -euo pipefail
here=$(cd "$(dirname "$0")/.." && pwd)
source "$here/scripts/venv_lib.sh"
venv=${1:-$here/.venv}
py=${PYTHON:-python3}
stamp="$venv/.solo-ncp-stamp"
want=$(cat "$here/scripts/setup_env.sh" "$here/scripts/venv_lib.sh" "$here/setup.py" "$here/solo_ncp/version.py" | sha256sum | cut -d' ' -f1)

install_fashion_mnist() {
    if [ -d /usr/share/datasets/fashion-mnist ]; then
        return
    fi
    if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
        echo "[setup] installing Debian's dataset-fashion-mnist (files under /usr/share/datasets/fashion-mnist)"
        apt-get update -qq && apt-get install -y -qq dataset-fashion-mnist >/dev/null
    else
        echo "[setup] skipping dataset-fashion-mnist: not root on Debian (demo falls back to scikit-learn digits)"
    fi
}

install_fashion_mnist
if [ -f "$stamp" ] && [ "$(cat "$stamp")" = "$want" ]; then
    exit 0
fi
[ -x "$venv/bin/python" ] || "$py" -m venv "$venv"
pip=("$venv/bin/python" -m pip install -q --disable-pip-version-check)
"${pip[@]}" torch==2.14.1 torchvision==0.29.1 pytorch-lightning==1.9.5 "numpy<2" \
    "setuptools>=77.0.3,<81" "torchmetrics<1" einops timm omegaconf scikit-learn matplotlib \
    scipy tqdm pyautoattack hydra-core wandb tensorboard "pytest>=7.3" pytest-xdist robustbench
"${pip[@]}" --no-deps solo-learn==1.0.2 lightning-bolts==0.7.0
install_checkout "$here" "${pip[@]}"
got=$(check_torch "$venv" setup)
echo "$want" > "$stamp"
echo "[setup] $venv ready (torch $got)"
