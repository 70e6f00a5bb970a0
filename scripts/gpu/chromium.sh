#!/bin/bash
# Device call (`run` with carry [".gl", ".chr"], right after chromium-part.sh parked every part; later calls
# on the same warm machine find Chromium unpacked):
# headless Chromium on the GPU's Vulkan driver: the WebGPU adapter, then webbert's package and
# transformers.js (ONNX Runtime Web's WebGPU backend) on the bench cases, one after the other.
# CASES and RUNS may be set in the environment; DTYPES="fp32 fp16 q8" runs both on each kind of weights
# (default fp32; tags NAME-fp16, tjs-fp16, …). Dawn keeps `shader-f16` off on NVIDIA's Vulkan driver unless
# asked (vulkan_enable_f16_on_nvidia), and transformers.js refuses fp16 on WebGPU without it: with fp16 in
# DTYPES every browser of the run gets that toggle.
set -u
export PYTHONUNBUFFERED=1 XDG_RUNTIME_DIR=/tmp
for f in .gl/*.deb; do dpkg -x "$f" /; done; ldconfig
# A later call on the same warm machine finds Chromium unpacked and needs no parts.
if [ ! -x /tmp/chr/run ]; then
  mkdir -p /tmp/chr
  cat /tmp/chr/chr.part.* > /tmp/chr/chr.tar.xz && rm /tmp/chr/chr.part.*
  echo "$(cat .chr/chr.sha256)  /tmp/chr/chr.tar.xz" | sha256sum -c || { echo "parts missing: not the warm machine?"; exit 2; }
  python3 -c "import lzma,sys,shutil;shutil.copyfileobj(lzma.open('/tmp/chr/chr.tar.xz'),sys.stdout.buffer)" | tar -C /tmp/chr -xf - || exit 2
  printf '#!/bin/sh\nLD_LIBRARY_PATH=/tmp/chr/lib${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH} exec /tmp/chr/chromium/chromium "$@"\n' > /tmp/chr/run
  chmod +x /tmp/chr/run
fi
[ -d /tmp/models ] || python3 scripts/gpu/make_models.py gen .chr/models /tmp/models > /dev/null || exit 2
unxz() { python3 -c "import lzma,shutil,sys;shutil.copyfileobj(lzma.open(sys.argv[1]),open(sys.argv[2],'wb'))" "$1" "$2"; }
# .chr/webbert, and any other build carried beside it as .chr/webbert-NAME (to compare two in one run).
for w in .chr/webbert*; do
  cp -r "$w" /tmp/
  for xz in "/tmp/${w#.chr/}"/pkg/*.wasm.xz; do unxz "$xz" "${xz%.xz}"; done
done
mkdir -p /tmp/ort && cp .chr/ort/*.mjs /tmp/ort/ && unxz .chr/ort/ort-wasm-simd-threaded.asyncify.wasm.xz /tmp/ort/ort-wasm-simd-threaded.asyncify.wasm
export VK_DRIVER_FILES=/usr/local/nvidia/share/vulkan/icd.d/nvidia_icd.json
FLAGS="--enable-features=Vulkan --use-angle=vulkan --disable-vulkan-surface --use-vulkan=native ${EXTRA_FLAGS:-}"
DTYPES=${DTYPES:-fp32}
case " $DTYPES " in *" fp16 "*) FLAGS="$FLAGS --enable-dawn-features=vulkan_enable_f16_on_nvidia" ;; esac
D="python3 scripts/gpu/browser/serve_and_drive.py /tmp/chr/run $OUT"
CASES=${CASES:-embed1x16,embed1x128,embed1x512,embed8x128,embed64x128,embed256x128,fill16,fill128,embedvaried,fillvaried}
timeout 60 $D --tag probe --timeout 50 --flags "$FLAGS" | cut -c1-800
# REPEAT=N: the builds in turn, N rounds (tags NAME, NAME.2, …), for runs that vary. READBACKS="map settle
# join": each build once per way of reading results back (the `readback` load option; tags NAME-settle, …).
# KERNELS="auto tiled-subgroups": each build, and PROFILE, once per kernel shape (the `kernels` load
# option; auto is the adapter's choice; tags NAME-tiled-subgroups, profile-T-tiled-subgroups).
TAGS=
suffix() { [ "$1" != fp32 ] && echo "-$1"; }
shape() { [ "$1" != auto ] && echo "-$1"; }
kernels_query() { [ "$1" != auto ] && echo "&kernels=$1"; }
for round in $(seq "${REPEAT:-1}"); do
  for w in .chr/webbert*; do
    for rb in ${READBACKS:-map}; do
      for k in ${KERNELS:-auto}; do
        for dt in $DTYPES; do
          tag=${w#.chr/}$([ "$rb" != map ] && echo "-$rb")$(shape "$k")$(suffix "$dt")$([ "$round" -gt 1 ] && echo ".$round")
          TAGS="$TAGS $tag"
          echo "== $tag, WebGPU"
          timeout 200 $D --tag "$tag" --timeout 180 --webbert "/tmp/${w#.chr/}" --models /tmp/models --flags "$FLAGS" \
            --query "webbert=1&runs=${RUNS:-20}&cases=$CASES&readback=$rb&dtype=$dt$(kernels_query "$k")" | grep -v '^POST'
        done
      done
    done
  done
done
# PROFILE="16 512 8x128": each build's kernels in one embed call of that many tokens (or texts × tokens), each
# timed alone, in wall time and by the GPU's timestamps (unquantised: WebGPU's developer features), and the
# whole call replayed (scripts/profile/; tags profile-T, profile-T-NAME for .chr/webbert-NAME).
# VARIANTS="numwg noflag nobarrier" also times each kernel with its WGSL rewritten so (gpuprobe.js, REWRITES).
# A device call brings back at most 8 files: where there are more, the tables and their JSON only.
trim() { [ "$(ls $OUT | wc -l)" -gt 8 ] && rm -f $OUT/chromium-*.log $OUT/browser-probe.json; true; }
for b in $([ -n "${PROFILE:-}" ] && ls -d .chr/webbert*); do
  name=${b#.chr/} w=/tmp/${b#.chr/}-profile
  rm -rf $w && cp -r /tmp/$name $w && cp scripts/profile/gpuprobe.js $w/js/ && \
    { echo "import './gpuprobe.js';"; cat /tmp/$name/js/worker.js; } > $w/js/worker.js
  for t in $PROFILE; do
    for k in ${KERNELS:-auto}; do
      tag=profile-$t${name#webbert}$(shape "$k")
      echo "== $tag" | tee -a $OUT/summary.md
      timeout 200 $D --tag "$tag" --timeout 180 --webbert $w --models /tmp/models \
        --flags "$FLAGS --enable-webgpu-developer-features" --root scripts/profile --page profile.html \
        --query "tokens=$t&post=1$(kernels_query "$k")$([ -n "${VARIANTS:-}" ] && echo "&variants=${VARIANTS// /,}")" | grep -v '^POST'
      python3 scripts/gpu/browser/kernels.py "$OUT/browser-$tag.json" | tee -a $OUT/summary.md
    done
  done
done
[ -n "${PROFILE:-}" ] && [ -n "${SKIP_TJS:-}" ] && { trim; exit 0; }
timeout 150 python3 scripts/export_onnx.py /tmp/models 2>&1 | grep -v -i warn | tail -3
for dt in $DTYPES; do
  echo "== transformers.js, WebGPU $dt"
  timeout 200 $D --tag "tjs$(suffix "$dt")" --timeout 180 --tjs .chr/tjs --ort /tmp/ort --models /tmp/models \
    --flags "$FLAGS" --query "tjs=1&runs=${RUNS:-20}&cases=$CASES&dtype=$dt" | grep -v '^POST'
done
for tag in $TAGS; do
  dt=$(for d in $DTYPES; do case $tag in *-$d|*-$d.*) echo "$d" ;; esac; done)
  echo "== $tag" | tee -a $OUT/summary.md
  python3 scripts/gpu/browser/summary.py "$OUT/browser-$tag.json" "$OUT/browser-tjs$(suffix "${dt:-fp32}").json" | tee -a $OUT/summary.md
done
trim
