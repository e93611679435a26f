#!/usr/bin/env bash
# Issue #9's GPU runs through the device tool, one stage per call (each fits its 10-minute limit):
#
#   run: OPTASCAN_SOURCE_COMMIT=<sha> bash bench/gpu_issue9.sh checks   (carry: gpu-wheels; + kernel sweeps)
#   run: OPTASCAN_SOURCE_COMMIT=<sha> bash bench/gpu_issue9.sh qwen2.5-vl-3b      (or -7b, llava-1.5-7b)
#   (VISION=full: the model cards' vision towers, for a time to first token with a real tower's work in it)
#   run: OPTASCAN_SOURCE_COMMIT=<sha> bash bench/gpu_issue9.sh warmup   (cold warm-ups, fresh processes)
#
# Results land in $OUT; copy them to tests/gpu/results/ and bench/results/ with the device name and date.
# check_fast's JSON-schema part needs xgrammar, which the device lacks: download its wheels for Python 3.12
# into gpu-wheels/ (git-ignored) and carry that folder:
#   pip download xgrammar apache-tvm-ffi pydantic pydantic-core annotated-types typing-inspection --no-deps \
#     --python-version 3.12 --platform manylinux_2_28_x86_64 --platform manylinux2014_x86_64 \
#     --platform manylinux_2_17_x86_64 --only-binary=:all: -d gpu-wheels
set -u
stage=${1:?stage: checks or a size of bench/fast_decode.py}
out=${OUT:-/tmp/optascan-gpu}
mkdir -p "$out"
export PYTHONPATH=.:/tmp/site
nvidia-smi --query-gpu=name --format=csv,noheader
if [ "$stage" = checks ]; then
    if ls gpu-wheels/*.whl >/dev/null 2>&1; then
        pip install -q --no-deps --target /tmp/site gpu-wheels/*.whl >"$out/pip.log" 2>&1
    fi
    timeout 330 python3 tests/gpu/check_fast.py --out "$out/fast_checks.json" >"$out/check.log" 2>&1
    echo "check rc=$?"
    grep -E "PASS|FAIL|passed" "$out/check.log"
    [ "${SWEEPS:-1}" = 1 ] || exit 0
    timeout 120 python3 bench/attention_split.py --out "$out/attention_split.json" >"$out/attention.log" 2>&1
    echo "attention_split rc=$?"
    timeout 120 python3 bench/gemv_sweep.py --sizes qwen2.5-vl-3b,qwen2.5-vl-7b,llava-1.5-7b \
        --out "$out/gemv_sweep.json" >"$out/gemv.log" 2>&1
    echo "gemv_sweep rc=$?"
    exit 0
fi
if [ "$stage" = warmup ]; then  # cold warm-ups (empty compile and Triton caches) of the three sizes, fresh processes
    for size in qwen2.5-vl-3b qwen2.5-vl-7b llava-1.5-7b; do
        timeout 150 python3 bench/fast_warmup.py --size $size --vision full --settings default --decode-runs 1 \
            --out "$out/fast_warmup-$size.json" 2>&1 | grep -E "^default" | cut -c1-600
    done
    exit 0
fi
variants=fast,fast_cublas_projections,fast_sdpa_attention
[ "$stage" = qwen2.5-vl-3b ] && variants=$variants,fast_uncompiled,fast_eager_prefill
[ "$stage" = llava-1.5-7b ] && variants=fast,fast_eager_vision,fast_cublas_projections,fast_sdpa_attention
variants=${VARIANTS:-$variants}
timeout "${BENCH_TIMEOUT:-420}" python3 bench/fast_decode.py --device cuda --size "$stage" --runs 2 --variants "$variants" \
    --vision "${VISION:-tiny}" \
    --out "$out/fast_decode-$stage.json" >"$out/bench.log" 2>&1
echo "bench rc=$?"
python3 - "$out/fast_decode-$stage.json" <<'EOF'
import json, sys
report = json.load(open(sys.argv[1]))
for name, values in report["paths"].items():
    print(name, {k: round(v, 3) for k, v in values.items() if isinstance(v, float)})
print("agreement", report["greedy_agreement"])
EOF
for impl in $([ "${MATMUL:-1}" = 1 ] && echo linear triton); do
    timeout 45 python3 bench/matmul_ceiling.py --size "$stage" --impl $impl --out "$out/matmul-$impl-$stage.json" \
        >"$out/matmul-$impl.log" 2>&1
    echo "matmul $impl rc=$?"
done
[ "${PROFILE:-1}" = 1 ] && timeout 150 python3 bench/profile_fast_step.py --size "$stage" --variants fast \
    --out "$out/profile-$stage.json" >"$out/profile.log" 2>&1
echo "profile rc=$?"
