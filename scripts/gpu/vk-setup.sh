# Source this on the device machine from the repo root (bash): `. gpu-lab/vk-setup.sh [diag]`.
# Brings the Vulkan/GL loaders (Debian 12 debs carried in .gl/, per the device tool's README), vulkaninfo
# (carried in .gpu/vk/), and exports the variables that make the loader find NVIDIA's driver.
# With `diag`, first prints what the image has (driver files, ICD manifests, ld.so.cache) and tries vulkaninfo
# with and without VK_DRIVER_FILES, so a failure shows where it stops.
_out=${OUT:-/tmp}
if [ "${1:-}" = diag ]; then
  echo "== image"; head -2 /etc/os-release; ldd --version | head -1; uname -r
  nvidia-smi --query-gpu=name,driver_version,memory.total,clocks.max.sm --format=csv
  echo "== before loaders: ldconfig -p | grep -i -E 'vulkan|GLX_nvidia|EGL_nvidia|nvidia'"
  ldconfig -p | grep -i -E 'vulkan|nvidia' | head -30
  echo "== /usr/local/nvidia"; ls /usr/local/nvidia 2>&1; ls /usr/local/nvidia/* 2>&1 | head -40
  echo "== ICD manifests"
  for d in /usr/local/nvidia/share/vulkan/icd.d /usr/share/vulkan/icd.d /etc/vulkan/icd.d /usr/local/nvidia/share/glvnd/egl_vendor.d /usr/share/glvnd/egl_vendor.d; do
    for f in $d/*.json; do [ -e "$f" ] && { echo "-- $f"; cat "$f"; }; done
  done
  echo "== libGLX_nvidia anywhere (not /proc,/sys)"
  timeout 60 find / -xdev \( -path /proc -o -path /sys \) -prune -o \( -name 'libGLX_nvidia*' -o -name 'libnvidia-glvkspirv*' -o -name 'libnvidia-gpucomp*' -o -name 'libEGL_nvidia*' \) -print 2>/dev/null | head
  find /usr/local/nvidia /usr/lib /usr/lib64 -maxdepth 3 \( -name 'libGLX_nvidia*' -o -name 'libnvidia-glvkspirv*' \) 2>/dev/null | head
  echo "== ld.so.conf.d"; cat /etc/ld.so.conf.d/*.conf 2>/dev/null
fi
for f in .gl/*.deb; do dpkg -x "$f" /; done; ldconfig
mkdir -p /tmp/vk && for f in .gpu/vk/*.deb; do [ -e "$f" ] && dpkg -x "$f" /tmp/vk; done
VULKANINFO="env LD_LIBRARY_PATH=$PWD/.gpu/vk/lib${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH} /tmp/vk/usr/bin/vulkaninfo"
if [ "${1:-}" = diag ]; then
  echo "== after loaders: ldconfig -p | grep -i -E 'vulkan|GLX'"; ldconfig -p | grep -i -E 'vulkan|libGLX|libEGL' | head
  echo "== vulkaninfo --summary, no VK_DRIVER_FILES"
  VK_LOADER_DEBUG=error,warn timeout 60 $VULKANINFO --summary 2>&1 | head -60
fi
export VK_DRIVER_FILES=/usr/local/nvidia/share/vulkan/icd.d/nvidia_icd.json
export __EGL_VENDOR_LIBRARY_FILENAMES=/usr/local/nvidia/share/glvnd/egl_vendor.d/10_nvidia.json
# Fallback if the manifest's bare soname (libGLX_nvidia.so.0) is not in ld.so.cache: the driver's own lib dirs.
if ! timeout 60 $VULKANINFO --summary 2>/dev/null | grep -qi nvidia; then
  for d in /usr/local/nvidia/lib64 /usr/local/nvidia/lib; do [ -d $d ] && export LD_LIBRARY_PATH=$d${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}; done
  VULKANINFO="env LD_LIBRARY_PATH=$PWD/.gpu/vk/lib:$LD_LIBRARY_PATH /tmp/vk/usr/bin/vulkaninfo"
  echo "vk-setup: no NVIDIA device with VK_DRIVER_FILES alone; now LD_LIBRARY_PATH=$LD_LIBRARY_PATH"
fi
if [ "${1:-}" = diag ]; then
  echo "== vulkaninfo --summary, VK_DRIVER_FILES=$VK_DRIVER_FILES LD_LIBRARY_PATH=$LD_LIBRARY_PATH"
  VK_LOADER_DEBUG=error,warn timeout 60 $VULKANINFO --summary 2>&1 | tee $_out/vulkaninfo-summary.txt | head -80
  timeout 60 $VULKANINFO > $_out/vulkaninfo-full.txt 2>&1; echo "vulkaninfo (full) rc=$?"
  grep -m5 -E 'driverVersion|driverInfo|conformanceVersion|apiVersion' $_out/vulkaninfo-full.txt
fi
