#!/bin/bash
# Device call (`run` with carry [".gl", ".gpu"], from scripts/gpu/prepare.sh native): webbert natively on
# the GPU's Vulkan driver, PyTorch on CUDA as the floor, on random weights of the bench models' layout.
# Everything lands in $OUT: cli-check.txt, bench-*.txt, bench-kernels.json, bench-tiles.json, torch.txt.
# PARTS picks the steps, of cli,tiled,baseline,tiles,serial,cpu,torch (default: cli,tiled,baseline,tiles,torch;
# all may take longer than a 600 s call); `baseline` runs where `BASELINE=REV scripts/gpu/prepare.sh native`
# carried an older bench, ROUNDS (3) times in turns with this build's on the large batches.
set -u
PARTS=${PARTS:-cli,tiled,baseline,tiles,torch}
part() { [[ ",$PARTS," == *",$1,"* ]]; }
T0=$(date +%s)
export PYTHONUNBUFFERED=1 XDG_RUNTIME_DIR=/tmp
. scripts/gpu/vk-setup.sh
$VULKANINFO --summary 2>/dev/null | grep -E 'deviceName|driverInfo|apiVersion' | head -4
M=/tmp/models B=/tmp/bin
python3 scripts/gpu/make_models.py gen .gpu/models $M > /dev/null || exit 1
mkdir -p $B
for f in .gpu/bin/*.xz; do
  python3 -c "import lzma,shutil,sys;shutil.copyfileobj(lzma.open(sys.argv[1]),open(sys.argv[2],'wb'))" "$f" "$B/$(basename "$f" .xz)"
done
chmod +x $B/*
export WEBBERT_MODELS=$M
texts() { python3 scripts/gpu/texts.py "$@"; }

part cli && echo "== outputs: the CPU backend against wgpu, each kernel shape" && {
  for run in "cpu:" "wgpu:serial" "wgpu:tiled" "wgpu:tiled-subgroups"; do
    be=${run%%:*} shape=${run##*:}
    WEBBERT_KERNELS=$shape timeout 60 $B/webbert embed --backend "$be" --model $M/all-MiniLM-L6-v2 \
      "$(texts 16)" "$(texts 128)" "$(texts 512)" > "/tmp/e-$be$shape.jsonl"
    WEBBERT_KERNELS=$shape timeout 60 $B/webbert fill-mask --backend "$be" --model $M/minilm-l6-mlm \
      "$(texts 16 mask)" "$(texts 128 mask)" > "/tmp/f-$be$shape.jsonl"
  done
  for shape in serial tiled tiled-subgroups; do
    echo "-- wgpu $shape"
    python3 scripts/gpu/compare.py embed /tmp/e-cpu.jsonl "/tmp/e-wgpu$shape.jsonl"
    python3 scripts/gpu/compare.py fill /tmp/f-cpu.jsonl "/tmp/f-wgpu$shape.jsonl"
  done
} 2>&1 | tee $OUT/cli-check.txt

mkdir -p /tmp/bench && cd /tmp/bench
if part tiled; then
  echo "== native bench: wgpu (tiled), where the time goes, then each kernel alone"
  BENCH_BACKENDS=wgpu BENCH_PHASES=1 BENCH_KERNELS=1 timeout 300 $B/native-bench 2>&1 | tee $OUT/bench-tiled.txt
  cp bench-kernels.json $OUT/ 2>/dev/null
fi
if part baseline && ls $B/native-bench-* > /dev/null 2>&1; then
  echo "== embed 64×128 and 256×128 on wgpu (tiled): this build and each older one carried, in turns"
  for round in $(seq "${ROUNDS:-3}"); do
    for bench in $B/native-bench $B/native-bench-*; do
      echo "-- $(basename "$bench"), round $round"
      BENCH_BACKENDS=wgpu BENCH_CASES=batch timeout 60 "$bench" 2>&1 | grep '^| Wgpu'
    done
  done 2>&1 | tee $OUT/bench-baseline.txt
fi
if part tiles; then
  echo "== the tiled Linear at 1,024 and 8,192 rows in every candidate tile and split"
  BENCH_BACKENDS=wgpu BENCH_CASES=none BENCH_TILES=1 timeout 150 $B/native-bench 2>&1 | tee $OUT/bench-tiles.txt
  cp bench-tiles.json $OUT/ 2>/dev/null
fi
if part serial; then
  echo "== native bench: wgpu with the serial kernels (those tuned on CPU-backed adapters)"
  WEBBERT_KERNELS=serial BENCH_BACKENDS=wgpu timeout 150 $B/native-bench 2>&1 | tee $OUT/bench-serial.txt
fi
if part cpu; then
  echo "== native bench: burn's CPU backend on $(nproc) cores"
  BENCH_BACKENDS=cpu timeout 150 $B/native-bench 2>&1 | tee $OUT/bench-cpu.txt
fi
cd - > /dev/null
if part torch; then
  echo "== PyTorch ($(( $(date +%s) - T0 )) s so far)"
  timeout 150 python3 scripts/gpu/torch_anchor.py .gpu/models/all-MiniLM-L6-v2/config.json /tmp/torch.json \
    --gpu-runs 50 --no-cpu > $OUT/torch.txt 2>&1
  grep '^|' $OUT/torch.txt
fi
echo "== done in $(( $(date +%s) - T0 )) s"
