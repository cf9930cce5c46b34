#!/usr/bin/env bash
# Reruns the GPU measurements benchmarks/RESULTS.md tracks, step by step, on a CUDA
# machine, from the repository root:
#
#   bash benchmarks/gpu_refresh.sh OUT_DIR STEP [STEP ...]
#
# Steps (each writes OUT_DIR/STEP.txt and prints its tail; each runs under its own time
# limit, so that a machine reached through commands of limited length can run them
# over several calls):
#
#   setup       install the project (no dependencies) and any wheels carried in WHEELS
#               (default .whl: omegaconf, antlr4-python3-runtime and pyfaidx, which the
#               GPU machine's image lacks) into /tmp/site, for the steps that follow
#   anchor      start building mamba_ssm + causal_conv1d in the background
#               (benchmarks/build_anchor.sh; needs ANCHOR_SDIST; ANCHOR_WHEELS: a folder
#               whose wheels are installed instead of built, and where built ones are kept:
#               with ANCHOR_PART_SIZE=15M they are kept in parts small enough to bring back
#               and carry to later calls, which then skip the build's 9 minutes). Its log
#               is ANCHOR_LOG (default /tmp/anchor.log), outside OUT_DIR: a machine that
#               empties OUT_DIR between calls would take the log, and wheels kept there,
#               from a build still running (keep ANCHOR_WHEELS outside it too, and copy
#               the parts under OUT_DIR once built)
#   wait        wait for that build (up to 9 minutes); its log then goes to OUT_DIR/anchor.txt
#   tests       the GPU kernel tests but the scan's, torch.compile, the recompute path, the loss,
#               a training step that never waits on the GPU, bench_generate's profile
#   tests_scan  the selective-scan kernel tests at GPU shapes (the two lists together ran
#               over 500 s on an H200 in one process, mostly compiling kernel variants;
#               both steps run TEST_WORKERS pytest-xdist workers, default 8)
#   tuning      scan launch shapes (FWD_CONFIGS, BWD_CONFIGS override scan_tuning.py's lists,
#               TUNING_SHAPES its shapes): by default, at batch 1 and (4, 1536, 16384), a share
#               of the decays on the FMA pipe ('x', 'xy' in a split forward's first pass, 'e'
#               in the main pass, 'j', 'jk' in a split backward's first pass) and the forward
#               in time groups ('2x16x1G', '4x16x1g'), against the default launches
#               (SAVE_EVERY: the interval between the states the forward saves, default 64)
#   scan        bench_scan.py, ours against mamba_ssm
#   scanprofile ncu (counters, clocks left alone) of the scan's forward and backward kernels at
#               PROFILE_SHAPE (default 8,1536,2048,16), default launches: throughput by unit,
#               occupancy, warp states, and the memory tables and source counters (where L1
#               wavefronts and excessive sectors come from)
#   scanab      bench_scan.py with more rows of ours, each with other launch shapes, in the same
#               table as mamba_ssm (SCAN_LAUNCH, FWD/BWD pairs as bench_scan's --ours-launch
#               takes them; by default the forward's late loads, a split L's passes
#               overlapped in both kernels, and the two together; SCAN_PROFILE=K also ranks
#               the K costliest kernels of one forward + backward per row)
#   ops         bench_ops.py: causal_conv1d and rms_norm against the causal_conv1d package
#               and mamba_ssm's layer_norm_fn
#   conv        conv_tuning.py: the conv backward's launch shapes (CONV_CONTIGUOUS,
#               CONV_CHANNEL_LAST override its lists; CONV_AS_IN_BLOCK=1 times it as the
#               Mamba block's backward calls it)
#   train       bench_train.py, the Mamba-130M shape, with a profile of one step
#               (PROFILE_ROWS of its kernels, default 12)
#   long        bench_train.py's sequence-length sweep of the DNA-sized model, to 2^23
#               (LONG_EXPONENTS, LONG_VARIANTS narrow it)
#   generate    bench_generate.py at the workloads, 2k and 32k prompts included
#   decode      where a decode step's time goes: the SSM step kernel's launch shapes timed
#               inside the model (state_update_tuning.py --in-model) and one eager step's
#               kernels at batch 1 and 64
#               (bench_generate.py --profile), beside mamba_ssm's when installed
#   decodelinear decode_linear_tuning.py: x_proj and out_proj of the decode step on cuBLAS
#               or as Triton dependent launches, by batch, and out_proj's launch shapes
#   projconv    proj_conv_tuning.py: the decode step with in_proj and the conv step in one
#               kernel against the two-kernel step, and the fused kernel's launch shapes
#   decodeab    the decode step's untimed variants: in_proj + conv fused at 64 rows with the
#               conv step on the x tile read back, out_proj on Triton at 16 and 32 rows
#               (with the deferred norm as its epilogue), the batch-64 SSM step reading
#               all but its state before its wait
#
# Steps other than anchor/wait run without mamba_ssm if it is not installed (its rows
# are then skipped). Example: `ANCHOR_SDIST=sdists bash benchmarks/gpu_refresh.sh out anchor tests wait scan`.
set -uo pipefail
OUT=${1:?usage: bash benchmarks/gpu_refresh.sh OUT_DIR STEP [STEP ...]}
shift
mkdir -p "$OUT"
export PYTHONUNBUFFERED=1

run() {  # run NAME LIMIT_S COMMAND...
    local name=$1 limit=$2
    shift 2
    echo "== $name: $*"
    timeout "$limit" "$@" > "$OUT/$name.txt" 2>&1
    local rc=$?
    grep -E "FAILED|ERROR" "$OUT/$name.txt" | head -n 20
    tail -n 40 "$OUT/$name.txt"
    echo "== $name: exit $rc"
}

for step in "$@"; do
    case $step in
        setup)
            wheels=("${WHEELS:-.whl}"/*.whl)
            if [ -e "${wheels[0]}" ]; then
                python3 -m pip install -q --no-index --no-deps --no-compile --target /tmp/site "${wheels[@]}" || exit 1
                export PYTHONPATH=/tmp/site${PYTHONPATH:+:$PYTHONPATH}
            fi
            python3 -m pip install -q --no-index --no-deps --no-build-isolation -e . > "$OUT/setup.txt" 2>&1 \
                || { cat "$OUT/setup.txt"; exit 1; }
            nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv,noheader
            echo "== setup: ok" ;;
        anchor)
            : "${ANCHOR_SDIST:?anchor: set ANCHOR_SDIST to the folder of the two source distributions}"
            MAX_JOBS=${MAX_JOBS:-14} setsid nohup bash benchmarks/build_anchor.sh "$ANCHOR_SDIST" 90 ${ANCHOR_WHEELS:-} \
                > "${ANCHOR_LOG:-/tmp/anchor.log}" 2>&1 < /dev/null &
            echo "== anchor: building in the background, log in ${ANCHOR_LOG:-/tmp/anchor.log}" ;;
        wait)
            log=${ANCHOR_LOG:-/tmp/anchor.log}
            for _ in $(seq 1 108); do
                grep -q "anchor ok" "$log" 2> /dev/null && break
                grep -qi "error" "$log" 2> /dev/null && break
                sleep 5
            done
            cp "$log" "$OUT/anchor.txt" 2> /dev/null || echo "== wait: no build log at $log"
            tail -n 5 "$OUT/anchor.txt" 2> /dev/null ;;
        tests)
            # -v: each test's name and outcome as it ends, so a run cut off by the limit
            # still says which tests failed. The scan's own file is the step tests_scan.
            run tests 560 python3 -m pytest -v -p no:cacheprovider -n "${TEST_WORKERS:-8}" tests/kernels/test_cross_entropy.py \
                tests/test_lm_loss.py tests/kernels/test_kernel_op.py tests/kernels/test_rmsnorm.py \
                tests/kernels/test_triton_math.py tests/kernels/test_causal_conv1d.py \
                tests/kernels/test_causal_conv1d_update.py tests/kernels/test_selective_state_update.py \
                tests/kernels/test_proj_conv_update.py tests/kernels/test_dependent_launch.py tests/kernels/test_decode_linear.py \
                tests/test_generation.py tests/test_compile.py tests/test_recompute.py tests/test_chunked_training.py \
                tests/test_graphed_step.py tests/test_graphed_task_step.py tests/test_host_checks.py \
                tests/test_bench_generate.py ;;
        tests_scan)
            run tests_scan 560 python3 -m pytest -v -p no:cacheprovider -n "${TEST_WORKERS:-8}" \
                tests/kernels/test_selective_scan_triton.py ;;
        tuning)
            # shellcheck disable=SC2086  # TUNING_SHAPES: space-separated, one argument each
            run tuning 420 python3 benchmarks/scan_tuning.py \
                --shapes ${TUNING_SHAPES:-1,1536,131072,16 4,1536,16384,16} \
                --configs "${FWD_CONFIGS:-auto,autox,autoxy,autoe,autoxe,2x16x1G,4x16x1g}" \
                --bwd-configs "${BWD_CONFIGS:-auto,autoj,autojk}" --save-every "${SAVE_EVERY:-64}" ;;
        scan)
            run scan 300 python3 benchmarks/bench_scan.py --impls ours,mamba_ssm ;;
        scanprofile)
            for kernel in fwd bwd; do
                run "ncu_$kernel" 200 ncu --clock-control none -k "regex:^_${kernel}_kernel" -c 1 \
                    --section SpeedOfLight --section ComputeWorkloadAnalysis --section Occupancy \
                    --section SchedulerStats --section WarpStateStats --section MemoryWorkloadAnalysis_Tables \
                    --section SourceCounters --print-details all \
                    python3 benchmarks/scan_tuning.py --shapes "${PROFILE_SHAPE:-8,1536,2048,16}" --configs auto \
                    --bwd-configs auto --untimed 1
            done ;;
        scanab)
            run scanab 450 python3 benchmarks/bench_scan.py --impls ours,mamba_ssm \
                --ours-launch "${SCAN_LAUNCH:-autof/,autov/autov,autofv/autov}" --profile "${SCAN_PROFILE:-0}" ;;
        ops)
            run ops 300 python3 benchmarks/bench_ops.py ;;
        conv)
            run conv 300 python3 benchmarks/conv_tuning.py ${CONV_CONTIGUOUS:+--contiguous "$CONV_CONTIGUOUS"} \
                ${CONV_CHANNEL_LAST:+--channel-last "$CONV_CHANNEL_LAST"} ${CONV_AS_IN_BLOCK:+--as-in-the-block} ;;
        train)
            run train 560 python3 benchmarks/bench_train.py --sections lm --profile "${PROFILE_ROWS:-12}" --warmup 2 --steps 6 ;;
        long)
            run long 560 python3 benchmarks/bench_train.py --sections long \
                --long-exponents "${LONG_EXPONENTS:-20,21,22,23}" --long-variants "${LONG_VARIANTS:-plain,recompute,checkpoint,chunked}" ;;
        generate)
            run generate 560 python3 benchmarks/bench_generate.py \
                --workloads 1x128x1024,16x128x1024,64x128x1024,64x2048x256,1x8192x256,1x32768x256 --repeats 1 ;;
        decode)
            run state_tuning 300 python3 benchmarks/state_update_tuning.py --in-model
            run decode_profile 300 python3 benchmarks/bench_generate.py --impls ours,ours_lowp,mamba_ssm \
                --workloads 1x128x64,64x128x64 --repeats 1 --profile 14 ;;
        decodelinear)
            run decodelinear 300 python3 benchmarks/decode_linear_tuning.py ;;
        projconv)
            run projconv 300 python3 benchmarks/proj_conv_tuning.py ;;
        decodeab)
            run decodeab_reload 150 python3 benchmarks/proj_conv_tuning.py --batches 64 --replays 100 \
                --shapes 64x16x256x4x3x1,64x32x256x8x3x1,64x16x256x8x3x1
            run decodeab_outproj 200 python3 benchmarks/decode_linear_tuning.py --batches 16,32 --products out_proj --replays 100
            run decodeab_early_params 150 python3 benchmarks/state_update_tuning.py --early-params-ab --batches 64 ;;
        *)
            echo "unknown step '$step': choose from setup anchor wait tests tests_scan tuning scan scanprofile scanab ops conv train long generate decode decodelinear projconv decodeab" >&2
            exit 2 ;;
    esac
done
