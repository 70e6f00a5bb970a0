#!/bin/bash
# Device calls for training the fill-mask model on the GPU's Vulkan driver (see "The fill-mask model" in the
# README; `scripts/gpu/prepare.sh train` stages what travels). The corpus is too big for one call's tree, so
# the first calls park its parts in /tmp/park on the warm machine:
#   bash scripts/gpu/train.sh park        carry [".trainN"], once per part, back to back
#   bash scripts/gpu/train.sh start       carry [".gl", ".train"]: checks the parts, starts from the shipped
#        model (models/, widened by assemble-mlm.py), evaluates it, profiles its first steps with cubecl's
#        profiler, times 30 steps of each CLI build (burn's kernels as shipped, and autotuned: `--features
#        autotune`), then sets the run's length (TRAIN_SECONDS, or to end before `finish` stops
#        waiting) for the faster build and leaves it running (setsid) when the call returns
#   bash scripts/gpu/train.sh finish      carry [], within the machine's idle time: waits for the run,
#        evaluates it, ships it (`ship-mlm`) in parts of 15 MiB to $OUT
# One run, the word embeddings trained (they beat frozen ones at equal tokens on 2026-11-23), alone on the
# GPU. RECIPE adds train-mlm flags.
set -u
W=/tmp/park
export XDG_RUNTIME_DIR=/tmp
ARGS="--batch-size ${BATCH:-256} --max-len 128 --lr ${LR:-4e-4} --seed ${SEED:-44} --backend ${BACKEND:-wgpu} \
  --train-word-embeddings ${RECIPE:-}"
builds="webbert webbert-autotune"

stamp() { while IFS= read -r line; do printf "%s %s\n" "$EPOCHREALTIME" "$line"; done; }
train() { # BUILD NAME EXTRA...
  local build=$1 name=$2; shift 2
  /tmp/bin/$build train-mlm --base /tmp/base --corpus $W/data/train.txt --out /tmp/runs/$name $ARGS "$@"
}

case "${1:?park|start|finish}" in
park)
  mkdir -p $W && cp .train[0-9]/* $W/ && ls -la $W
  ;;
start)
  T0=$(date +%s)
  [ "${BACKEND:-wgpu}" = wgpu ] && { for f in .gl/*.deb; do dpkg -x "$f" /; done; ldconfig; }
  export VK_DRIVER_FILES=/usr/local/nvidia/share/vulkan/icd.d/nvidia_icd.json
  mkdir -p $W && cp .train[0-9]/* $W/ 2>/dev/null
  (cd $W && sha256sum -c "$OLDPWD/.train/parts.sha256") || { echo "parts missing: not the warm machine?"; exit 2; }
  cat $W/corpus.tar.xz.? | xz -d | tar -C $W -xf - || exit 2
  mkdir -p /tmp/bin /tmp/runs
  for b in $builds; do xz -dc .train/$b.xz > /tmp/bin/$b && chmod +x /tmp/bin/$b; done
  # The shipped model as the start (int8 in models/, widened to f32 with the tokenizer).
  python3 scripts/assemble-mlm.py .train/tokenizer models/minilm-l6-mlm /tmp/base || exit 2
  nvidia-smi --query-gpu=name,driver_version --format=csv,noheader 2>/dev/null
  wc -lw $W/data/*.txt
  echo "== the shipped model on the held-out text"
  E0=$(date +%s)
  /tmp/bin/webbert eval-mlm --model /tmp/base --text $W/data/heldout.txt --backend ${BACKEND:-wgpu} | tee $OUT/eval-shipped.json
  eval_seconds=$(( $(date +%s) - E0 ))
  # Not the autotuned build: its log begins with the tuning's own kernels.
  echo "== where a step's GPU time goes: cubecl's profiler on the first steps"
  mkdir -p /tmp/profile && printf '[profiling]\nlogger = { level = "basic", stdout = true }\n' > /tmp/profile/cubecl.toml
  (cd /tmp/profile && train webbert profile --steps 100000 --until 5 --checkpoint-every 100000 > steps.log 2>&1)
  python3 scripts/gpu/kernel_times.py /tmp/profile/steps.log | tee $OUT/profile.md
  echo "== speed: 30 steps of each build, one after the other (thrown away)"
  for b in $builds; do
    train $b probe-$b --steps 100000 --until 30 --checkpoint-every 100000 2>&1 | stamp > /tmp/runs/probe-$b.log
    grep -h -E 'step (10|30)/' /tmp/runs/probe-$b.log | cut -c1-160
  done
  # Steps per second from step 10 to 30 (past compiling and tuning); the faster build fills TRAIN_SECONDS.
  read -r rate build < <(for b in $builds; do
    awk -v b=$b '/ step 10\//{x=$1} / step 30\//{y=$1} END{if (y > x) print 20/(y-x), b}' /tmp/runs/probe-$b.log
  done | sort -g -r | head -1)
  [ -n "${rate:-}" ] || { echo "no build ran 30 steps"; tail -n 5 /tmp/runs/probe-*.log; exit 1; }
  # Unless TRAIN_SECONDS says, the run's steps end in time for its final held-out tests (as long as the
  # shipped model's took) and a minute to spare before `finish` stops waiting.
  seconds=${TRAIN_SECONDS:-$(( ${CALL_SECONDS:-570} + ${WAIT_SECONDS:-480} - ($(date +%s) - T0) - eval_seconds - 60 ))}
  steps=$(awk -v r="$rate" -v s="$seconds" 'BEGIN{printf "%d", r*s}')
  every=$(( steps / 6 )); warm=$(( steps / 16 ))
  echo "== $build, $rate steps/s: $steps steps, warm-up $warm (setup took $(( $(date +%s) - T0 )) s)"
  setsid bash -c "$(declare -f train stamp); W=$W ARGS='$ARGS'; \
    train $build run --heldout $W/data/heldout.txt --steps $steps --checkpoint-every $every --warmup-steps $warm 2>&1 | stamp > /tmp/runs/run.log; \
    echo \$? > /tmp/runs/run.rc" < /dev/null > /dev/null 2>&1 &
  sleep $(( ${CALL_SECONDS:-570} - ($(date +%s) - T0) ))
  tail -n 3 /tmp/runs/run.log | cut -c1-200
  ;;
finish)
  T0=$(date +%s)
  while [ ! -f /tmp/runs/run.rc ]; do
    [ $(( $(date +%s) - T0 )) -gt ${WAIT_SECONDS:-480} ] && { echo "still training"; tail -n 2 /tmp/runs/run.log; exit 1; }
    sleep 5
  done
  { grep -E 'held-out' /tmp/runs/run.log; grep -E 'step [0-9]+/' /tmp/runs/run.log | awk 'NR%20==0'
    cat /tmp/runs/run/training.json; } > $OUT/log.txt
  tail -n 4 /tmp/runs/run.log
  # ship-mlm: the whole model in int8 (its word embeddings were trained).
  /tmp/bin/webbert ship-mlm --model /tmp/runs/run --out /tmp/shipped || exit 1
  for f in /tmp/shipped/*.safetensors; do split -b 15728640 -a 1 "$f" "$OUT/$(basename "$f").part."; done
  cp /tmp/shipped/*.json $OUT/
  # The run's own tests drew with its seed; this draws as the shipped model's did (eval-mlm's default).
  echo "== the run on the held-out text, as the shipped model was tested"
  timeout 150 /tmp/bin/webbert eval-mlm --model /tmp/runs/run --text $W/data/heldout.txt --backend ${BACKEND:-wgpu} \
    | tee $OUT/eval-run.json
  ls -la $OUT
  ;;
esac
