#!/usr/bin/env bash
# The GPU check, in one run on a CUDA machine (under 8 minutes on one H200): installs what is
# missing, runs the CUDA tests, then the convolution and scale benchmarks, and prints their
# tables: SphericalChebConv forward+backward on full-sky maps at nside 1024, 2048 and 4096, the
# COO recursion and PyG's ChebConv beside it, and a DeepSphere training step at nside 1024 on
# order-2 patches.
#
# Usage (from the repository root): bash benchmarks/gpu_check.sh
# On a machine without network, put the wheels it lacks in .whl/ first (healpy and its astropy;
# see docs/benchmarks.md): they are installed from there.
set -uo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
export PYTHONUNBUFFERED=1
if ! $PY -c "import healpy" 2>/dev/null; then
    if ls .whl/*.whl >/dev/null 2>&1; then
        $PY -m pip install -q --no-index --no-deps --no-compile --target /tmp/site .whl/*.whl
        export PYTHONPATH=/tmp/site${PYTHONPATH:+:$PYTHONPATH}
    else
        $PY -m pip install -q healpy
    fi
fi
export PYTHONPATH=$PWD${PYTHONPATH:+:$PYTHONPATH}
$PY -c "import torch, torch_geometric, healpy; assert torch.cuda.is_available(), 'no CUDA device'
print('torch', torch.__version__, '| PyG', torch_geometric.__version__, '| healpy', healpy.__version__,
      '|', torch.cuda.get_device_name(), f'{torch.cuda.get_device_properties(0).total_memory / 2**30:.0f} GiB')" || exit 1

echo "== CUDA tests"
timeout 60 $PY -m pytest -q -p no:cacheprovider -o addopts="" tests/test_cuda.py \
    tests/nn/conv/test_chebyshev_operator.py -k "cuda or CUDA"

echo "== Scale on the GPU (fresh process per row; graphs built on the CPU)"
timeout 120 $PY benchmarks/bench_scale.py --device cuda --nsides 1024 --what conv coo chebconv train \
    --repeats 5 --timeout 40
timeout 100 $PY benchmarks/bench_scale.py --device cuda --nsides 2048 --what conv --repeats 3 \
    --timeout 95
timeout 170 $PY benchmarks/bench_scale.py --device cuda --nsides 4096 --what conv --repeats 2 \
    --timeout 165
