#!/usr/bin/env bash
# Download into .whl/ the wheels the lent GPU machine lacks, for benchmarks/gpu_session.sh.
#
#   bash benchmarks/gpu_wheels.sh        (here, before the first device call; needs pip's index)
#
# That machine (/work/.library/device/KINDS.md) runs Python 3.12 with torch, Triton, transformers,
# huggingface_hub, tokenizers, safetensors, accelerate, imageio, Pillow, scipy and tqdm, but not
# diffusers, kornia, trimesh, PyMCubes, xatlas, fast-simplification or inflect. Each is fetched at
# the version installed in this environment (the one the tests ran with), with the dependencies
# the machine lacks as well (pip's --no-deps fetches none): every requirement of a package in
# NAMES is in NAMES, in DEVICE_HAS (the machine's own packages that they need) or in NOT_IMPORTED
# (tests/test_gpu_session.py checks it against this environment's metadata). Its own
# transformers (5.17), huggingface_hub (1.33) and tokenizers stay: the CUDA checks' test files
# passed on the CPU with exactly those three in front of this environment's other packages
# (benchmarks/RESULTS.md). typing_extensions travels although the machine has one: typeguard
# needs 4.14 or later, and the machine's version is not on record.
# .whl/ is git-ignored; name it in the device call's carry.
set -eu
cd "$(dirname "$0")/.."
NAMES="diffusers kornia kornia_rs trimesh PyMCubes xatlas fast_simplification inflect
jaraco.functools typeguard typing_extensions more_itertools"
# packaging: kornia 0.8.2 (the newest on Python 3.10) needs it; the machine has it for transformers.
# shellcheck disable=SC2034  # read by tests/test_gpu_session.py
DEVICE_HAS="torch numpy scipy Pillow filelock huggingface_hub regex requests safetensors packaging"
# Required in metadata, never imported there: diffusers imports importlib_metadata on Python < 3.8.
# shellcheck disable=SC2034  # read by tests/test_gpu_session.py
NOT_IMPORTED="importlib_metadata"
specs=$(python3 - $NAMES <<'PY'
import sys
from importlib.metadata import version

print(" ".join(f"{name}=={version(name)}" for name in sys.argv[1:]))
PY
)
rm -rf .whl
# pip matches each manylinux tag exactly: name the ones these packages are built for.
platforms=""
for tag in manylinux_2_28 manylinux_2_27 manylinux_2_24 manylinux_2_17 manylinux2014 manylinux1; do
    platforms="$platforms --platform ${tag}_x86_64"
done
# shellcheck disable=SC2086  # the lists are meant to split into arguments
python3 -m pip download --quiet --no-deps --only-binary=:all: --python-version 3.12 \
    --implementation cp $platforms -d .whl $specs
ls -l .whl
du -sh .whl
