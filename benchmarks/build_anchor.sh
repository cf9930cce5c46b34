#!/usr/bin/env bash
# Builds the official kernels the benchmarks compare against (mamba_ssm and causal_conv1d,
# the "anchor") from their source distributions, for one GPU architecture, without a
# network. Run from the repository root on the GPU machine:
#
#   bash benchmarks/build_anchor.sh SDIST_DIR [ARCH]        (ARCH default 90: H100/H200)
#
# SDIST_DIR holds mamba_ssm-2.3.2.post1.tar.gz and causal_conv1d-1.7.0.tar.gz, fetched on a
# machine with a network (from a virtual environment holding torch, wheel and setuptools):
#
#   MAMBA_SKIP_CUDA_BUILD=TRUE CAUSAL_CONV1D_SKIP_CUDA_BUILD=TRUE pip download --no-deps \
#       --no-binary :all: --no-build-isolation -d SDIST_DIR mamba-ssm==2.3.2.post1 causal-conv1d==1.7.0
#
# Their setup.py files compile every architecture from sm_75 to sm_121; only ARCH is kept
# (benchmarks/trim_gencode.py). Still several minutes on 16 cores (MAX_JOBS, default 16):
# causal_conv1d alone took 8 minutes on an H200 machine with tests running beside it.
# Both packages are pip-installed into the running python3; the last line says "anchor ok".
set -euo pipefail
REPO=$(pwd)
SDIST=$(cd "${1:?usage: bash benchmarks/build_anchor.sh SDIST_DIR [ARCH]}" && pwd)
ARCH=${2:-90}
export MAX_JOBS=${MAX_JOBS:-16}
WORK=$(mktemp -d)
cd "$WORK"
tar xzf "$SDIST"/causal_conv1d-*.tar.gz
tar xzf "$SDIST"/mamba_ssm-*.tar.gz
python3 "$REPO"/benchmarks/trim_gencode.py "$ARCH" causal_conv1d-*/setup.py mamba_ssm-*/setup.py
start=$SECONDS
(cd causal_conv1d-* && CAUSAL_CONV1D_FORCE_BUILD=TRUE python3 -m pip install -q --no-build-isolation --no-deps --no-index .)
echo "causal_conv1d built in $((SECONDS - start)) s"
(cd mamba_ssm-* && MAMBA_FORCE_BUILD=TRUE python3 -m pip install -q --no-build-isolation --no-deps --no-index .)
echo "mamba_ssm built in $((SECONDS - start)) s"
cd /
# torch first: the extensions link against its libraries.
python3 -c "import torch, causal_conv1d_cuda, selective_scan_cuda; from mamba_ssm.ops.selective_scan_interface import selective_scan_fn; print('anchor ok')"
rm -rf "$WORK"
