#!/usr/bin/env bash
# Builds the official kernels the benchmarks compare against (mamba_ssm and causal_conv1d,
# the "anchor") from their source distributions, for one GPU architecture, without a
# network. Run from the repository root on the GPU machine:
#
#   bash benchmarks/build_anchor.sh SDIST_DIR [ARCH] [WHEEL_DIR]   (ARCH default 90: H100/H200)
#
# With WHEEL_DIR the built wheels are kept there, and a later run installs a package from
# its wheel there instead of building it (seconds instead of minutes; a wheel over a size
# limit may be kept as parts named WHEEL.partNN, joined back here). ANCHOR_PART_SIZE (a size
# as split(1) reads it, e.g. 15M) cuts each kept wheel larger than that into such parts at
# the end, for a GPU machine that returns only files up to a size: bring the parts back
# and carry them as WHEEL_DIR to later calls.
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
#
# The wheels can be built ahead on a machine without a GPU, which saves those minutes of
# GPU time: ANCHOR_BUILD_ONLY=1 builds them into WHEEL_DIR and stops (no install). That
# machine needs the CUDA toolkit of the GPU machine's torch (13.0 for torch 2.11+cu130;
# set CUDA_HOME to it, as nvcc on PATH may sit outside it) and a python3 of the GPU
# machine's version (3.12 there) with that torch importable (its CUDA libraries on
# LD_LIBRARY_PATH will do). Each built wheel's libraries are stripped of debug sections
# (benchmarks/strip_wheel.py), so that both fit in what a GPU call carries: on 2 cores,
# 265 s and 359 s; 22 and 37 MB. Carry WHEEL_DIR and pass it here on the GPU machine.
set -euo pipefail
REPO=$(pwd)
SDIST=$(cd "${1:?usage: bash benchmarks/build_anchor.sh SDIST_DIR [ARCH]}" && pwd)
ARCH=${2:-90}
WHEELS=${3:-}
if [ -n "${ANCHOR_BUILD_ONLY:-}" ] && [ -z "$WHEELS" ]; then
    echo "build_anchor: ANCHOR_BUILD_ONLY needs WHEEL_DIR (the third argument) to keep the wheels in" >&2
    exit 2
fi
export MAX_JOBS=${MAX_JOBS:-16}
check() {
    # torch first: the extensions link against its libraries.
    (cd / && python3 -c "import torch, causal_conv1d_cuda, selective_scan_cuda; from mamba_ssm.ops.selective_scan_interface import selective_scan_fn; print('anchor ok')")
}
WORK=$(mktemp -d)
OUTDIR=$WORK/wheels
if [ -n "$WHEELS" ]; then
    mkdir -p "$WHEELS"
    OUTDIR=$(cd "$WHEELS" && pwd)
    for first in "$OUTDIR"/*.whl.part00; do
        [ -e "$first" ] || continue
        whl=${first%.part00}
        [ -e "$whl" ] || cat "$whl".part* > "$whl"
    done
fi
cd "$WORK"
start=$SECONDS
# Each package is built unless WHEEL_DIR already holds its wheel.
build() {  # build NAME FORCE_VAR (NAME: the sdist's and the wheel's name prefix)
    if ls "$OUTDIR"/"$1"-*.whl > /dev/null 2>&1; then
        echo "$1: wheel found, not rebuilt"
        return
    fi
    tar xzf "$SDIST"/"$1"-*.tar.gz
    python3 "$REPO"/benchmarks/trim_gencode.py "$ARCH" "$1"-*/setup.py
    (cd "$1"-* && env "$2"=TRUE python3 -m pip wheel -q --no-build-isolation --no-deps --no-index -w "$OUTDIR" .)
    python3 "$REPO"/benchmarks/strip_wheel.py "$OUTDIR"/"$1"-*.whl
    echo "$1 built in $((SECONDS - start)) s"
}
build causal_conv1d CAUSAL_CONV1D_FORCE_BUILD
build mamba_ssm MAMBA_FORCE_BUILD
keep_in_parts() {  # each kept wheel over ANCHOR_PART_SIZE as WHEEL.part00, .part01, ...
    [ -n "${ANCHOR_PART_SIZE:-}" ] && [ -n "$WHEELS" ] || return 0
    local whl
    for whl in "$OUTDIR"/*.whl; do
        rm -f "$whl".part*
        split -b "$ANCHOR_PART_SIZE" -d -a 2 "$whl" "$whl".part
        if [ -e "$whl".part01 ]; then rm "$whl"; else rm "$whl".part00; fi
    done
}
if [ -n "${ANCHOR_BUILD_ONLY:-}" ]; then
    keep_in_parts
    ls -l "$OUTDIR"
    rm -rf "$WORK"
    exit 0
fi
python3 -m pip install -q --no-deps --no-index "$OUTDIR"/causal_conv1d-*.whl "$OUTDIR"/mamba_ssm-*.whl
keep_in_parts
cd /
check
rm -rf "$WORK"
