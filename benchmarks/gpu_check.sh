#!/usr/bin/env bash
# solo-ncp's GPU checks in one pass, for a CUDA machine with the stack installed (or, offline, the
# wheels of ../shared/tools/offline-wheels.sh in .whl/). Each step has its own time limit, logs
# to $OUT/<step>.log (default gpu-check/) and prints its last lines; a failed step does not stop
# the others.
#
#   benchmarks/gpu_check.sh [STEP ...]      (`tests` needs pytest-xdist and pytest-timeout)
#
# On an offline GPU machine lent to a session, prepare here and carry both folders there:
#   ../shared/tools/offline-wheels.sh .whl --with-autoattack
#   python3 -m pip download --no-deps --no-binary=:all: -d .whl libKMCUDA==6.2.3   # kmcuda's sdist
#   mkdir -p datasets && cp -r /usr/share/datasets/fashion-mnist datasets/
#   (device) benchmarks/gpu_check.sh          carry: .whl datasets; timeout 600 s
#
# With no STEP, the steps the README still lacks a GPU figure or log for run, in order, within 10
# minutes (a device call's limit); keep their logs (copy $OUT to benchmarks/logs/<date>-<gpu>/):
#   kmcuda       scripts/build_kmcuda.sh for this GPU (sdist from .whl/ when there), then the
#                kmcuda test of tests/test_cuda.py with its whole traceback, then torch against
#                kmcuda k-means at 50,000 x 512 planted vectors, K = 70 and 300, 3 seeds: time, objective
#   proxy-speed  benchmarks/proxy_fmnist.py --speed, one seed: ncp and deacl in plain fp32 and with
#                bf16 + channels_last + cudnn.benchmark, same stage 1 (cut off after SPEED_LIMIT
#                seconds, default what is left of 570 s since the start; running the script again on
#                the same machine continues it: `benchmarks/gpu_check.sh proxy-speed`)
# The steps measured on the H200 on 2026-12-04 (README "Stage-2 throughput", "What a reproduction
# costs"), by name, within 10 minutes together: `benchmarks/gpu_check.sh combos profile cost compile`
#   combos       stage2_throughput.py --combos of bf16, channels_last and cudnn.benchmark (batch 256)
#   profile      stage2_throughput.py --profile with those three on: the 5-step PGD's share of the
#                step and torch.profiler's top kernels
#   cost         reproduction_cost.py: every part of one seed at CIFAR-10's shape, timed
#   compile      the same as combos with torch.compile off and on, the other switches on
# Other steps, by name:
#   throughput   the fp32 / bf16 table with the 50,000-image clustering, and the proxy's setting
#   proxy        benchmarks/proxy_fmnist.py on the GPU, one seed (over 10 minutes: AutoAttack)
#   tests        the whole suite with CUDA visible, 120 s per test at most
set -uo pipefail
out=${OUT:-gpu-check}
mkdir -p "$out"
export PYTHONUNBUFFERED=1
steps=${*:-kmcuda proxy-speed}
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

wants() { [[ " $steps " == *" $1 "* ]]; }
step() {  # step NAME SECONDS COMMAND...
    local name=$1 limit=$2 start=$SECONDS
    shift 2
    timeout "$limit" "$@" >"$out/$name.log" 2>&1
    echo "=== $name: rc $? in $((SECONDS - start)) s"
    grep -v -i "warn\|^  " "$out/$name.log" | tail -n "${TAIL:-12}"
}
throughput() {  # throughput NAME SECONDS ARGS...: stage2_throughput.py on the GPU, 10 timed steps
    local name=$1 limit=$2
    shift 2
    TAIL=24 step "$name" "$limit" python3 benchmarks/stage2_throughput.py --device cuda \
        --steps 10 --warmup 3 "$@"
}

wants combos && throughput combos 90 --batch-size 256 --method ncp \
    --combos bf16 channels_last cudnn_benchmark
wants profile && throughput profile 60 --batch-size 256 --method ncp deacl --profile \
    --fixed bf16 channels_last cudnn_benchmark
wants cost && TAIL=16 step cost 230 python3 benchmarks/reproduction_cost.py --device cuda \
    --select-k-limit 40
wants compile && throughput compile 150 --batch-size 256 --method ncp --combos compile \
    --fixed bf16 channels_last cudnn_benchmark
if wants kmcuda; then
    sdist=$(ls .whl/libKMCUDA-*.tar.gz 2>/dev/null | head -1)
    step kmcuda-build 100 scripts/build_kmcuda.sh "$sdist" --target /tmp/site
    TAIL=80 step kmcuda-test 60 python3 -m pytest -v -p no:randomly --tb=long -k kmcuda \
        tests/test_cuda.py
    throughput kmcuda-speed 90 --clustering-only --planted --cluster-n 50000 --cluster-k 70 300 \
        --cluster-seeds 3 --repeats 3
fi
if wants proxy-speed; then
    left=$((570 - SECONDS > 30 ? 570 - SECONDS : 30))
    step proxy-speed "${SPEED_LIMIT:-$left}" python3 benchmarks/proxy_fmnist.py --seeds 0 \
        --out runs/proxy-speed --speed precision=bf16-mixed +method_kwargs.channels_last=true \
        +method_kwargs.cudnn_benchmark=true
    sed -n '/^## Fashion-MNIST proxy/,$p' "$out/proxy-speed.log"
fi
if wants throughput; then
    throughput throughput 120 --batch-size 256 --precision fp32 bf16 --cluster-n 50000 --repeats 3
    throughput throughput-proxy-setting 60 --batch-size 128 --image-size 28 --stem imagenet \
        --cluster-n 3000
fi
if wants proxy; then
    step proxy "${PROXY_LIMIT:-900}" python3 benchmarks/proxy_fmnist.py --seeds 0 --out runs/proxy-gpu
    sed -n '/^## Fashion-MNIST proxy/,$p' "$out/proxy.log"
fi
wants tests && OMP_NUM_THREADS=2 step tests 400 python3 -m pytest -q -p no:randomly -n 6 \
    --timeout 120 tests
exit 0
