"""Sums cubecl's profiler log (`[profiling] level = "basic"`: lines `| 1.2ms | KernelName_hash`) by kernel:
where the GPU's time goes. cubecl's logger writes behind the work and loses what it has not written when the
process ends, so a short training run logs about its first step or two: the same kernels as every step.
Usage: kernel_times.py LOG [TOP]"""
import re
import sys
from collections import defaultdict

UNITS = {"ns": 1e-3, "µs": 1.0, "us": 1.0, "ms": 1e3, "s": 1e6}
LINE = re.compile(r"^\|\s*([\d.]+)(ns|µs|us|ms|s)\s*\|\s*(.+?)\s*$")


def family(name):
    """A kernel's first and last name parts, without the hash of its compiled variant."""
    parts = [re.sub(r"_[0-9a-f]{8}$", "", p.strip()) for p in name.split("|") if p.strip()]
    return parts[0] if len(parts) == 1 else f"{parts[0]} … {parts[-1]}"


def main():
    log, top = sys.argv[1], int(sys.argv[2]) if len(sys.argv) > 2 else 15
    micros, launches = defaultdict(float), defaultdict(int)
    for line in open(log, encoding="utf-8", errors="replace"):
        m = LINE.match(line)
        if m:
            key = family(m.group(3))
            micros[key] += float(m.group(1)) * UNITS[m.group(2)]
            launches[key] += 1
    total = sum(micros.values())
    if not total:
        sys.exit(f"{log}: no profiled kernels")
    print(f"{sum(launches.values())} launches logged, {total / 1e3:.1f} ms of GPU time")
    print("| kernel | launches | ms | share |\n| --- | --- | --- | --- |")
    for key, t in sorted(micros.items(), key=lambda kv: -kv[1])[:top]:
        print(f"| {key} | {launches[key]} | {t / 1e3:.1f} | {100 * t / total:.1f}% |")


if __name__ == "__main__":
    main()
