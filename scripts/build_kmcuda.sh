#!/usr/bin/env bash
# Builds and installs libKMCUDA 6.2.3 (src-d/kmcuda: solo-ncp's optional GPU k-means backend) for
# this machine's GPU, from its PyPI sdist, on current toolchains.
#
#   usage: scripts/build_kmcuda.sh [SDIST] [pip install options, e.g. --target /tmp/site]
#          SDIST defaults to downloading libKMCUDA==6.2.3 from PyPI.
#
# The sdist predates CMake 4 and CUDA 13; this script builds a patched copy (the sdist is left as
# it is): CMake >= 4 refuses its `cmake_minimum_required(VERSION 3.2)` unless
# CMAKE_POLICY_VERSION_MINIMUM=3.5 is set (which also keeps the FindCUDA and FindPythonLibs
# modules it uses); it compiles its C++ with -std=c++11 -Werror, while CUDA 13's headers need
# C++17 and newer compilers warn where 2018's did not (so: -std=c++17, no -Werror); its python.cc
# writes `else if PyTuple_Check(x)`, which compiles only while that macro expands to a
# parenthesised expression (not with Python 3.12's headers), so the parentheses are added. CUDA_ARCH is
# read from nvidia-smi (e.g. 90 for H100/H200): kmcuda skips a GPU built for another one.
set -euo pipefail
sdist=${1:-}
[ $# -gt 0 ] && shift
nvcc=$(command -v nvcc || echo /usr/local/cuda/bin/nvcc)
[ -x "$nvcc" ] || { echo "build_kmcuda: nvcc not found: install the CUDA toolkit" >&2; exit 2; }
export CUDA_TOOLKIT_ROOT_DIR=${CUDA_TOOLKIT_ROOT_DIR:-$(dirname "$(dirname "$(readlink -f "$nvcc")")")}
export CUDA_ARCH=${CUDA_ARCH:-$(nvidia-smi --query-gpu=compute_cap --format=csv,noheader | head -1 | tr -d .)}
export CMAKE_POLICY_VERSION_MINIMUM=3.5
work=$(mktemp -d); trap 'rm -rf "$work"' EXIT
if [ -z "$sdist" ]; then
    python3 -m pip download -q --no-deps --no-binary=:all: -d "$work" libKMCUDA==6.2.3
    sdist=$(ls "$work"/libKMCUDA-*.tar.gz)
fi
tar -xzf "$sdist" -C "$work"
src=$(ls -d "$work"/libKMCUDA-*/)
sed -i -e 's/ -Werror//' -e 's/-std=c++11/-std=c++17/' "$src/CMakeLists.txt"
sed -i 's/} else if PyTuple_Check(init_obj) {/} else if (PyTuple_Check(init_obj)) {/' "$src/python.cc"
echo "build_kmcuda: CUDA_ARCH=$CUDA_ARCH CUDA_TOOLKIT_ROOT_DIR=$CUDA_TOOLKIT_ROOT_DIR"
python3 -m pip install --no-build-isolation --no-deps --no-index "$@" "$src"
