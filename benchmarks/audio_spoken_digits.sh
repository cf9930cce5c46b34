#!/usr/bin/env bash
# The default audio run, timed part by part: train configs/audio/spoken_digits.yaml (the
# multi-scale Mamba U-Net on 1 s spoken-digit clips at 16 kHz), generate 64 unconditional
# 1 s samples in step mode, train the digit classifier and score the samples (IS, mIS,
# AM, FID). Run from the repository root on a GPU machine:
#
#   bash benchmarks/audio_spoken_digits.sh [OUT [KEEP]]      (default OUT: runs/audio_gpu)
#
# OUT receives the runs (checkpoints included); KEEP, if given, a small copy of what to
# report: the logs and timings, both evaluations, the training curves and 4 samples.
#
# Needs data/spoken_digits, built with espeak-ng by
#   seqmamba data spoken-digits data/spoken_digits --takes 2
# on a machine that has it (about 18 MB of FLAC; copy the folder over). Python packages
# the machine lacks (soundfile, torchaudio, matplotlib, omegaconf and what they need) are
# installed from the wheels in $WHEELS (default data/audio_wheels), without a network.
# Everything prints to the terminal and to OUT/*.log; samples go to OUT/spoken_digits/samples.
# Measured on one H200 (2026-12-03, benchmarks/RESULTS.md), on a fresh machine: 4 min 35 s
# in all; training 124 s (Triton compiling included), generation 90 s (16,000 eager steps
# of the 1.8M-parameter network at 3.8 ms a step for the batch of 64), classifier 36 s,
# scoring 16 s, installing the wheels and the project about 9 s.
# Extra key=value arguments: LM_ARGS (config overrides of the waveform model, for its
# training and generation), GEN_ARGS (generation options), CLF_ARGS (classifier overrides).
set -euo pipefail
OUT=${1:-runs/audio_gpu}
WHEELS=${WHEELS:-data/audio_wheels}
PY=${PYTHON:-python3}
export PYTHONUNBUFFERED=1
mkdir -p "$OUT"

# Wheels (by file-name prefix) of the modules this machine cannot import.
missing=$(WHEELS="$WHEELS" $PY - <<'PY'
import glob, importlib.util, os
wheels = {"soundfile": "soundfile", "_cffi_backend": "cffi", "pycparser": "pycparser", "torchaudio": "torchaudio",
          "matplotlib": "matplotlib", "contourpy": "contourpy", "cycler": "cycler", "fontTools": "fonttools",
          "kiwisolver": "kiwisolver", "PIL": "pillow", "pyparsing": "pyparsing", "dateutil": "python_dateutil",
          "packaging": "packaging", "omegaconf": "omegaconf", "antlr4": "antlr4_python3_runtime",
          "pyfaidx": "pyfaidx"}
found = [glob.glob(os.path.join(os.environ["WHEELS"], f"{prefix}-*.whl"))
         for module, prefix in wheels.items() if importlib.util.find_spec(module) is None]
print(" ".join(sorted(path for paths in found for path in paths)))
PY
)
if [ -n "$missing" ]; then
  echo "installing carried wheels: $missing"
  $PY -m pip install -q --no-index --no-deps --target /tmp/audio_site $missing
  export PYTHONPATH=/tmp/audio_site${PYTHONPATH:+:$PYTHONPATH}
fi
$PY -c "import seqmamba.tasks.audio" 2>/dev/null || $PY -m pip install -q --no-index --no-deps --no-build-isolation -e .
[ -d data/spoken_digits/train ] || { echo "data/spoken_digits is missing: build it with 'seqmamba data spoken-digits data/spoken_digits --takes 2'"; exit 1; }
nvidia-smi --query-gpu=name,memory.total --format=csv,noheader 2>/dev/null | tee "$OUT/gpu.txt" || true

timed() {  # timed NAME COMMAND...: run, log, and print the wall time
  local name=$1; shift
  local start=$SECONDS
  echo "=== $name: $*"
  "$@" 2>&1 | tee "$OUT/$name.log"
  echo "=== $name: $((SECONDS - start)) s" | tee -a "$OUT/times.txt"
}
run() { $PY -m seqmamba.cli "$@"; }

read -r -a lm <<< "${LM_ARGS:-}"
read -r -a gen <<< "${GEN_ARGS:-}"
read -r -a clf <<< "${CLF_ARGS:-}"
timed train_lm run train configs/audio/spoken_digits.yaml trainer.output_dir="$OUT" trainer.progress_bar=false "${lm[@]}"
timed generate run generate configs/audio/spoken_digits.yaml trainer.output_dir="$OUT" "${lm[@]}" ckpt=last prompt= \
  num_samples=64 max_new_tokens=16000 seed=0 output_dir="$OUT/spoken_digits/samples" "${gen[@]}"
timed train_classifier run train configs/audio/digit_classifier.yaml trainer.output_dir="$OUT" \
  trainer.progress_bar=false trainer.evaluate=false "${clf[@]}"
timed score run evaluate configs/audio/digit_classifier.yaml trainer.output_dir="$OUT" "${clf[@]}" ckpt=last \
  task.score_dir="$OUT/spoken_digits/samples"
cat "$OUT/times.txt"
if [ -n "${2:-}" ]; then
  KEEP=$2
  mkdir -p "$KEEP/samples"
  cp "$OUT"/*.log "$OUT"/times.txt "$KEEP"/
  cp "$OUT"/gpu.txt "$KEEP"/ 2>/dev/null || true
  cp "$OUT"/spoken_digits/eval.txt "$KEEP"/lm_eval.txt
  cp "$OUT"/spoken_digits/logs/csv/version_0/metrics.csv "$KEEP"/lm_metrics.csv
  cp "$OUT"/digit_classifier/logs/csv/version_0/metrics.csv "$KEEP"/classifier_metrics.csv
  cp "$OUT"/spoken_digits/samples/sample_00[0-3].* "$KEEP"/samples/
fi
