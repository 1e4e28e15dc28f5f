#!/usr/bin/env bash
# Create or update a second virtual environment with solo-learn's GitHub main on Lightning 2,
# the host of existing solo-learn users (README: "Existing solo-learn users").
#
#   usage: SOLO_LEARN_MAIN=<wheel path or pip URL> scripts/setup_env_main.sh [VENV_DIR]
#          (default VENV_DIR: .venv-solo-main)
#
# SOLO_LEARN_MAIN is what pip installs as solo-learn, e.g.
#   "solo-learn @ git+https://github.com/vturrisi/solo-learn@9187ea3"   (needs GitHub)
#   ../shared/wheels/solo_learn-1.0.6-py3-none-any.whl                  (that commit as a wheel)
# solo-learn main's setup.py imports pkg_resources and its requirements pin nothing we can use
# as is: it goes in with --no-deps --no-build-isolation after one pip command that resolves the
# whole runtime stack (torch 2.14.1 needs setuptools>=77.0.3; pkg_resources is gone in 81).
# A stamp file makes re-runs a no-op until this script, setup.py, the version or SOLO_LEARN_MAIN changes.
set -euo pipefail
here=$(cd "$(dirname "$0")/.." && pwd)
source "$here/scripts/venv_lib.sh"
venv=${1:-$here/.venv-solo-main}
py=${PYTHON:-python3}
source=${SOLO_LEARN_MAIN:-}
if [ -z "$source" ]; then
    echo "[setup-main] ERROR: set SOLO_LEARN_MAIN to a solo-learn main wheel or to" \
         "\"solo-learn @ git+https://github.com/vturrisi/solo-learn@9187ea3\"" >&2
    exit 2
fi
case "$source" in
    *.whl)
        if [ ! -f "$source" ]; then
            echo "[setup-main] ERROR: SOLO_LEARN_MAIN=$source: no such wheel" >&2
            exit 2
        fi
        source=$(cd "$(dirname "$source")" && pwd)/$(basename "$source") ;;
esac
stamp="$venv/.solo-ncp-stamp"
want=$( (cat "$here/scripts/setup_env_main.sh" "$here/scripts/venv_lib.sh" "$here/setup.py" "$here/solo_ncp/version.py"; echo "$source") | sha256sum | cut -d' ' -f1)
if [ -f "$stamp" ] && [ "$(cat "$stamp")" = "$want" ]; then
    exit 0
fi
[ -x "$venv/bin/python" ] || "$py" -m venv "$venv"
pip=("$venv/bin/python" -m pip install -q --disable-pip-version-check)
"${pip[@]}" torch==2.14.1 torchvision==0.29.1 lightning==2.1.2 "torchmetrics>=0.6,<0.12" \
    "setuptools>=77.0.3,<81" hydra-core omegaconf einops timm scipy scikit-learn tqdm \
    matplotlib pyautoattack wandb tensorboard "pytest>=7.3" pytest-xdist robustbench
"${pip[@]}" --no-deps --no-build-isolation "$source"
install_checkout "$here" "${pip[@]}"
got=$(check_torch "$venv" setup-main)
"$venv/bin/python" -c "import solo.methods, lightning.pytorch" || {
    echo "[setup-main] ERROR: solo-learn main does not import in $venv (see above)" >&2
    exit 1
}
echo "$want" > "$stamp"
echo "[setup-main] $venv ready (torch $got, solo-learn from $SOLO_LEARN_MAIN)"
