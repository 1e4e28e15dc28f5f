#!/usr/bin/env bash
# solo-ncp's GPU checks in one pass, for a CUDA machine with the stack installed (or, offline, the
# wheels of ../shared/tools/offline-wheels.sh in .whl/). Each step has its own time limit, logs
# to $OUT/<step>.log (default gpu-check/) and prints its last lines; a failed step does not stop
# the others.
#
#   benchmarks/gpu_check.sh          (needs pytest-xdist and pytest-timeout beside pytest)
#
# 1. kmcuda: scripts/build_kmcuda.sh for this GPU (sdist from .whl/ when there)
# 2. cuda-tests: tests/test_cuda.py, serially, each test limited to 120 s (kmcuda's test too)
# 3. throughput: benchmarks/stage2_throughput.py on the GPU, alone (the paper's CIFAR setting,
#    batch 256, fp32 and bf16; and the proxy's 28 px ImageNet-stem setting), 50,000 images clustered
# 4. proxy: benchmarks/proxy_fmnist.py on the GPU (one seed, PROXY_LIMIT seconds), in the
#    background while 5 runs; AutoAttack's FAB-T and Square make it take over 10 minutes even there
# 5. tests: the whole suite with CUDA visible (every command on the GPU), 120 s per test at most
set -uo pipefail
out=${OUT:-gpu-check}
mkdir -p "$out"
export PYTHONUNBUFFERED=1
if ls .whl/*.whl >/dev/null 2>&1; then
    python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade \
        --target /tmp/site .whl/*.whl || exit 1
    export PYTHONPATH=/tmp/site:$PWD
fi
if [ ! -d /usr/share/datasets/fashion-mnist ] && [ -d datasets/fashion-mnist ]; then
    mkdir -p /usr/share/datasets && cp -r datasets/fashion-mnist /usr/share/datasets/
fi
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader
python3 -c "import torch, solo_ncp; print('torch', torch.__version__, 'host', solo_ncp.current_host())"

step() {  # step NAME SECONDS COMMAND...
    local name=$1 limit=$2 start=$SECONDS
    shift 2
    timeout "$limit" "$@" >"$out/$name.log" 2>&1
    echo "=== $name: rc $? in $((SECONDS - start)) s"
    grep -v -i "warn\|^  " "$out/$name.log" | tail -n "${TAIL:-12}"
}

sdist=$(ls .whl/libKMCUDA-*.tar.gz 2>/dev/null | head -1)
step kmcuda-build 150 scripts/build_kmcuda.sh $sdist --target /tmp/site
step cuda-tests 300 python3 -m pytest -v -p no:randomly --timeout 120 tests/test_cuda.py
TAIL=16 step throughput 120 python3 benchmarks/stage2_throughput.py --device cuda \
    --batch-size 256 --precision fp32 bf16 --steps 10 --warmup 3 --cluster-n 50000 --repeats 3
step throughput-proxy-setting 60 python3 benchmarks/stage2_throughput.py --device cuda \
    --batch-size 128 --image-size 28 --stem imagenet --steps 10 --warmup 3 --cluster-n 3000
proxy_start=$SECONDS
timeout "${PROXY_LIMIT:-900}" python3 benchmarks/proxy_fmnist.py --out /tmp/proxy-gpu \
    >"$out/proxy.log" 2>&1 &
proxy=$!
OMP_NUM_THREADS=2 step tests 400 python3 -m pytest -q -p no:randomly -n 6 --timeout 120 tests
wait $proxy
echo "=== proxy: rc $? in $((SECONDS - proxy_start)) s"
sed -n '/^## Fashion-MNIST proxy/,$p' "$out/proxy.log"
