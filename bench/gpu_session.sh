#!/usr/bin/env bash
# The whole GPU session in one device run (the repo root is the working directory there, $OUT comes back):
#
#     run(command="bash bench/gpu_session.sh", carry=[".whl"], timeout_s=600)
#
# after `bench/device_wheels.sh` here has put ltx-core's wheel in .whl/. Installs .whl/*.whl into /tmp/site (the
# device README's recipe), prints the GPU and the stack, then, each step under `timeout` and all of it within
# $BUDGET seconds (default 560, under the run's 600):
#   pytest tests/test_cuda.py                        block swap / OOM / fp8 / fp8_scaled / attention / compile
#   bench/gpu_memory_speed.py                        issue 5's table: 19B, 768x512x121 + audio, official / ours /
#                                                    swap 24 GB / fp8 compute (fp8_scaled, _scaled_mm) / fp8 /
#                                                    fp8+swap 12 GB: s/step, peak GB, TFLOP/s
#   bench/reference_downscale.py at 19B widths       issue 3's k=1/2/4 and weighted-reference step times:
#                                                    32 x 128 heads, bf16, 768x512x121 and 512x512x49; 24 layers
#                                                    (17.5 GiB), which keeps each run inside its 100 s (per-step
#                                                    ratios do not depend on depth; LAYERS=48 for the whole stack)
# Logs: $OUT/{summary,env,pytest,gpu_memory_speed,reference_768x512x121,reference_512x512x49}.log.
#
#     bash bench/gpu_session.sh --check               # here, on a CPU: the same steps at tiny sizes (flags, logs)
set -uo pipefail
cd "$(dirname "$0")/.."
export PYTHONUNBUFFERED=1
OUT=${OUT:-/tmp/avc-gpu-session}
PY=${PY:-python3}
BUDGET=${BUDGET:-560}
CHECK=$([ "${1:-}" = --check ] && echo 1 || echo 0)
mkdir -p "$OUT"
: >"$OUT/summary.log"

say() { echo "== $*" | tee -a "$OUT/summary.log"; }

# step NAME CAP_SECONDS COMMAND...: runs COMMAND under timeout min(CAP, what the budget has left), output tee'd to
# $OUT/NAME.log; SIGINT first (pytest and Python print where they were), SIGKILL 15 s later
step() {
    local name=$1 cap=$2 left start rc
    shift 2
    left=$((BUDGET - SECONDS))
    [ "$left" -lt "$cap" ] && cap=$left
    if [ "$cap" -lt 20 ]; then
        say "$name: skipped, ${left}s of the budget left"
        return
    fi
    say "$name (timeout ${cap}s): $*"
    start=$SECONDS
    timeout --signal=INT --kill-after=15 "$cap" "$@" 2>&1 | tee "$OUT/$name.log"
    rc=${PIPESTATUS[0]}
    say "$name: exit $rc after $((SECONDS - start))s$([ "$rc" = 124 ] && echo ' (timed out)')"
}

if compgen -G ".whl/*.whl" >/dev/null; then
    "$PY" -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl \
        && export PYTHONPATH=/tmp/site${PYTHONPATH:+:$PYTHONPATH} || { say "wheel install failed"; exit 1; }
fi

{
    nvidia-smi || echo "no nvidia-smi"
    "$PY" - <<'EOF'
import importlib.metadata as md, sys, torch
print("python", sys.version.split()[0], "| torch", torch.__version__, "| cuda", torch.version.cuda,
      "|", ", ".join(f"{p} {md.version(p)}" for p in ("ltx-core", "transformers", "triton", "safetensors", "einops")
                     if p in {d.metadata["Name"].lower() for d in md.distributions()}))
if torch.cuda.is_available():
    p = torch.cuda.get_device_properties(0)
    print(f"{p.name}: {p.total_memory / 2**30:.1f} GiB, {p.multi_processor_count} SMs, capability {p.major}.{p.minor}")
    # pinned host memory for one 19B bf16 block as BlockSwap packs it (0.72 GiB): what the host allocator reserves
    t = torch.empty(int(0.72 * 2**30), dtype=torch.uint8, pin_memory=True)
    stats = getattr(torch.cuda, "host_memory_stats", lambda: {})()
    print("pinned 0.72 GiB request:", {k: f"{v / 2**30:.2f} GiB" for k, v in stats.items()
                                       if "bytes" in k and k.endswith("current")} or "no host_memory_stats")
import ltx_core
from avcontrol_core import kernels
print("ltx_core from", ltx_core.__file__)
dev = torch.device("cuda" if torch.cuda.is_available() else "cpu")
print("attention available:", kernels.available_attention(dev), "auto ->", kernels.resolve_attention("auto", dev)[0])
EOF
} 2>&1 | tee "$OUT/env.log"

if [ "$CHECK" = 0 ] && ! "$PY" -c "import torch, sys; sys.exit(not torch.cuda.is_available())"; then
    say "no CUDA device: stopping (bash bench/gpu_session.sh --check runs the tiny version on a CPU)"
    exit 2
fi

layers=${LAYERS:-24}
if [ "$CHECK" = 1 ]; then
    speed=(--tiny --steps 2)
    ref=(--layers 2 --heads 4 --head-dim 16 --dtype bf16 --rounds 1)
    sizes=("128 128 17" "128 128 9")
else
    speed=()
    ref=(--layers "$layers" --heads 32 --head-dim 128 --dtype bf16 --rounds 5)
    sizes=("768 512 121" "512 512 49")
fi

step pytest 200 "$PY" -m pytest -q -rsxXf --durations=12 tests/test_cuda.py
step gpu_memory_speed 240 "$PY" bench/gpu_memory_speed.py "${speed[@]}"
for size in "${sizes[@]}"; do
    read -r w h f <<<"$size"
    step "reference_${w}x${h}x${f}" 100 "$PY" bench/reference_downscale.py "${ref[@]}" \
        --width "$w" --height "$h" --frames "$f"
done
say "done in ${SECONDS}s"
