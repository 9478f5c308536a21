#!/usr/bin/env bash
# Fetch, on a machine with pip and PyPI, the wheels the GPU device machine lacks for tests/test_cuda.py,
# bench/gpu_memory_speed.py and bench/reference_downscale.py into .whl/ (CPython 3.12, manylinux x86_64, as the
# device README's recipe), then list them with their sizes. bench/gpu_session.sh installs them there.
#
#     bench/device_wheels.sh                  # ltx-core (.venv's version) + what it needs that the device lacks
#     bench/device_wheels.sh 'somepkg==1.2'   # ... plus more requirements
#
# The device image has torch 2.11 + CUDA, transformers 5.17, einops, safetensors, numpy, scipy, accelerate,
# torchaudio, tqdm, pytest, triton (.library/device/KINDS.md, 'Python packages already there', read 2026-11-17):
# a requirement of ltx-core that is on that list is not fetched. .whl/ travels only when a run names it in carry,
# and counts towards the 64 MiB the working tree may weigh. The paths these tests and benches import never import
# `av` (checked: avcontrol_core.media is the only module that does, and they do not reach it).
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-.venv/bin/python}
[ -x "$PY" ] || PY=python3

exclude=$(git rev-parse --git-path info/exclude)
mkdir -p "$(dirname "$exclude")"
grep -qxF '/.whl/' "$exclude" 2>/dev/null || echo '/.whl/' >>"$exclude"

ltx=$("$PY" -m pip show ltx-core 2>/dev/null | sed -n 's/^Version: //p')
rm -rf .whl
mkdir .whl

"$PY" - "ltx-core==${ltx:-1.0.0}" "$@" <<'EOF'
import re, subprocess, sys, zipfile
from email.parser import Parser
from pathlib import Path

from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

# the device image's packages (KINDS.md, 'Python packages already there')
DEVICE_HAS = {canonicalize_name(n) for n in """
absl-py accelerate aiofiles aiohappyeyeballs aiohttp aiosignal annotated-doc anyio attrs botorch build certifi
charset-normalizer chex click cloudpickle cmake colorama contourpy coverage cuda-bindings cuda-core cuda-pathfinder
cuda-toolkit cupy-cuda13x cycler cython diffrax e3nn einops equinox etils execnet filelock flatbuffers flax fonttools
formulaic frozenlist fsspec gpytorch grpcio h11 h5py hf-xet httpcore httpx humanize hypothesis idna imageio iniconfig
interface-meta jax jax-cuda13-pjrt jax-cuda13-plugin jaxlib jaxtyping jinja2 joblib kiwisolver lazy-loader lightning
lightning-utilities linear-operator lineax llvmlite lxml markdown markdown-it-py markupsafe matplotlib mdurl meson
ml-dtypes mpi4py mpmath msgpack multidict multipledispatch mypy-extensions nanobind narwhals networkx ninja numba
numba-cuda numpy numpyro nvidia-cublas nvidia-cuda-cupti nvidia-cuda-nvrtc nvidia-cuda-runtime nvidia-cudnn-cu13
nvidia-cufft nvidia-cufile nvidia-curand nvidia-cusolver nvidia-cusparse nvidia-cusparselt-cu13 nvidia-ml-py
nvidia-nccl-cu13 nvidia-nvjitlink nvidia-nvshmem-cu13 nvidia-nvtx onnx onnx-ir onnxruntime onnxscript
opencv-python-headless optax opt-einsum opt-einsum-fx optimistix orbax-checkpoint packaging pandas pathspec patsy peft
pillow pip pluggy portalocker prometheus-client propcache protobuf psutil pyarrow pybind11 py-cpuinfo pygments
pyparsing pyproject-hooks pyre-extensions pytest pytest-benchmark pytest-cov pytest-mock pytest-timeout pytest-xdist
python-dateutil pytorch-lightning pyyaml regex requests rich sacrebleu safetensors scikit-build-core scikit-image
scikit-learn scipy seaborn sentencepiece sentence-transformers setuptools shellingham simplejson six sortedcontainers
statsmodels sympy tabulate tensorboard tensorboard-data-server tensorstore threadpoolctl tifffile tiktoken timm
tokenizers toolz torch torchaudio torchdiffeq torch-geometric torchmetrics torchvision tqdm transformers treescope
triton typer typing-extensions typing-inspect urllib3 uvloop wadler-lindig werkzeug wheel wrapt xarray xxhash yarl
zipp""".split()}
ENV = {"python_version": "3.12", "python_full_version": "3.12.3", "implementation_name": "cpython",
       "platform_python_implementation": "CPython", "sys_platform": "linux", "platform_system": "Linux",
       "platform_machine": "x86_64", "os_name": "posix", "extra": ""}
PLATFORMS = [f"manylinux_2_{n}_x86_64" for n in (39, 35, 34, 31, 28, 27, 24, 17)] + ["manylinux2014_x86_64",
                                                                                      "manylinux1_x86_64"]
WHL = Path(".whl")


def download(requirement: str) -> Path:
    before = set(WHL.iterdir())
    cmd = [sys.executable, "-m", "pip", "download", "-q", "--no-deps", "--only-binary=:all:", "--python-version",
           "3.12", "--implementation", "cp", *[a for p in PLATFORMS for a in ("--platform", p)], "-d", str(WHL),
           requirement]
    subprocess.run(cmd, check=True)
    (new,) = set(WHL.iterdir()) - before
    return new


def requires(wheel: Path) -> list[Requirement]:
    with zipfile.ZipFile(wheel) as z:
        meta = next(n for n in z.namelist() if re.fullmatch(r"[^/]+\.dist-info/METADATA", n))
        message = Parser().parsestr(z.read(meta).decode())
    reqs = [Requirement(r) for r in message.get_all("Requires-Dist") or []]
    return [r for r in reqs if r.marker is None or r.marker.evaluate(ENV)]  # extras' requirements drop out here


queue, seen = list(sys.argv[1:]), set()
while queue:
    req = Requirement(queue.pop(0))
    name = canonicalize_name(req.name)
    if name in seen:
        continue
    seen.add(name)
    wheel = download(str(req).split(";")[0])
    needs = requires(wheel)
    print(f"{wheel.name}: Requires-Dist {', '.join(str(r) for r in needs) or '-'}")
    for r in needs:
        if canonicalize_name(r.name) in DEVICE_HAS:
            print(f"    {r.name}: on the device image")
        else:
            queue.append(str(r))
EOF

echo
ls -l .whl
whl=$(du -cb .whl/*.whl | tail -1 | cut -f1)
tracked=$(git ls-files -z | xargs -0 du -cb 2>/dev/null | tail -1 | cut -f1)
untracked=$(git ls-files -z -o --exclude-standard | xargs -0 -r du -cb 2>/dev/null | tail -1 | cut -f1)
echo "wheels $((whl / 1024)) KiB; tracked files $((tracked / 1024)) KiB;" \
     "untracked, not ignored $((${untracked:-0} / 1024)) KiB; together $(((whl + tracked + ${untracked:-0}) / 1024)) KiB of the 64 MiB a device run may carry"
if [ $((whl + tracked + ${untracked:-0})) -gt $((48 * 1024 * 1024)) ]; then
    echo "warning: over 48 MiB: a device run may not carry all of it" >&2
fi
