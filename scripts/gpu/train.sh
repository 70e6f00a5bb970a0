#!/bin/bash
# Device calls for training the fill-mask model on the GPU's Vulkan driver (see "The fill-mask model" in the
# README; `scripts/gpu/prepare.sh train` stages what travels). The corpus is too big for one call's tree, so
# the first calls park its parts in /tmp/park on the warm machine:
#   bash scripts/gpu/train.sh park        carry [".trainN"], once per part, back to back
#   bash scripts/gpu/train.sh start       carry [".gl", ".train"]: checks the parts, starts from the shipped
#        model (models/, widened by assemble-mlm.py), evaluates it, measures both runs' speed for a few steps,
#        then sets their length to fill $TRAIN_SECONDS and leaves them running (setsid) when the call returns
#   bash scripts/gpu/train.sh finish      carry [], within the machine's idle time: waits for both runs,
#        evaluates them, ships the better one (`ship-mlm`) in parts of 15 MiB to $OUT
# Two runs share the GPU: the word embeddings frozen and trained (the latter won on 2026-11-23).
set -u
W=/tmp/park
export XDG_RUNTIME_DIR=/tmp
TRAIN_SECONDS=${TRAIN_SECONDS:-900}
ARGS="--batch-size ${BATCH:-256} --max-len 128 --lr ${LR:-4e-4} --seed 42 --backend ${BACKEND:-wgpu}"
runs="frozen trained"

stamp() { while IFS= read -r line; do printf "%s %s\n" "$EPOCHREALTIME" "$line"; done; }
train() { # NAME EXTRA...
  local name=$1; shift
  /tmp/bin/webbert train-mlm --base /tmp/base --corpus $W/data/train.txt --heldout $W/data/heldout.txt \
    --out /tmp/runs/$name $ARGS "$@"
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
  xz -dc .train/webbert.xz > /tmp/bin/webbert && chmod +x /tmp/bin/webbert
  # The shipped model as the start (int8 in models/, widened to f32 with the tokenizer).
  python3 scripts/assemble-mlm.py .train/tokenizer models/minilm-l6-mlm /tmp/base || exit 2
  nvidia-smi --query-gpu=name,driver_version --format=csv,noheader 2>/dev/null
  wc -lw $W/data/*.txt
  echo "== the shipped model on the held-out text"
  /tmp/bin/webbert eval-mlm --model /tmp/base --text $W/data/heldout.txt --backend ${BACKEND:-wgpu} | tee $OUT/eval-shipped.json
  echo "== speed: 30 steps of both runs at once (thrown away)"
  for r in $runs; do
    extra=$([ $r = trained ] && echo --train-word-embeddings)
    /tmp/bin/webbert train-mlm --base /tmp/base --corpus $W/data/train.txt --out /tmp/probe-$r $ARGS \
      --steps 100000 --until 30 --checkpoint-every 100000 $extra 2>&1 | stamp > /tmp/runs/probe-$r.log &
  done
  wait
  grep -h -E 'step (10|30)/' /tmp/runs/probe-*.log | cut -c1-160
  # Steps per second from step 10 to 30 of the slower run; the runs then fill TRAIN_SECONDS.
  rate=$(for r in $runs; do awk '/ step 10\//{a=$1} / step 30\//{b=$1} END{print 20/(b-a)}' /tmp/runs/probe-$r.log; done | sort -g | head -1)
  steps=$(awk -v r="$rate" -v s="$TRAIN_SECONDS" 'BEGIN{printf "%d", r*s}')
  every=$(( steps / 6 )); warm=$(( steps / 16 ))
  echo "== $rate steps/s: $steps steps, warm-up $warm (setup took $(( $(date +%s) - T0 )) s)"
  for r in $runs; do
    extra=$([ $r = trained ] && echo --train-word-embeddings)
    setsid bash -c "$(declare -f train stamp); W=$W ARGS='$ARGS'; \
      train $r --steps $steps --checkpoint-every $every --warmup-steps $warm $extra 2>&1 | stamp > /tmp/runs/$r.log; \
      echo \$? > /tmp/runs/$r.rc" < /dev/null > /dev/null 2>&1 &
  done
  sleep $(( ${CALL_SECONDS:-570} - ($(date +%s) - T0) ))
  tail -n 3 /tmp/runs/*.log | cut -c1-200
  ;;
finish)
  T0=$(date +%s)
  while [ ! -f /tmp/runs/frozen.rc ] || [ ! -f /tmp/runs/trained.rc ]; do
    [ $(( $(date +%s) - T0 )) -gt ${WAIT_SECONDS:-480} ] && { echo "still training"; tail -n 2 /tmp/runs/*.log; break; }
    sleep 5
  done
  tail -n 4 /tmp/runs/*.log
  for r in $runs; do
    echo "== $r"; grep -E 'held-out' /tmp/runs/$r.log; grep -E 'step [0-9]+/' /tmp/runs/$r.log | awk 'NR%20==0'
    cat /tmp/runs/$r/training.json
  done > $OUT/log.txt
  # The frozen recipe unless training the embeddings wins on the content-word test.
  best=$(python3 -c "import json;t=[json.load(open(f'/tmp/runs/{r}/training.json'))['heldout']['content_words']['top1'] for r in ('frozen','trained')];print('trained' if t[1]>t[0] else 'frozen')")
  echo "== shipping $best" | tee -a $OUT/log.txt
  # ship-mlm: the f16 delta (embeddings frozen) or the whole model in int8 (embeddings trained).
  /tmp/bin/webbert ship-mlm --model /tmp/runs/$best --out /tmp/shipped || exit 1
  for f in /tmp/shipped/*.safetensors; do split -b 15728640 -a 1 "$f" "$OUT/$(basename "$f").part."; done
  cp /tmp/shipped/*.json $OUT/
  ls -la $OUT
  ;;
esac
