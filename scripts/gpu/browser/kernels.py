#!/usr/bin/env python3
"""`kernels.py PROFILE.json`: scripts/profile's result (every dispatch of one call, timed alone) summed per
kernel, in wall time and, where the adapter has timestamp queries, in GPU time; the whole call replayed; and
the WGSL variants' times per kernel where they were asked for."""
import json
import sys

result = next(r for r in json.load(open(sys.argv[1])) if "rows" in r)
rows = result["rows"]


def ms(value):
    return "–" if value is None else f"{value:.3f}"


def summed(rows, key):
    """The sum of `key` over `rows`, or None where a row has none (no timestamp queries)."""
    values = [r.get(key) for r in rows]
    return None if None in values else sum(values)


by = {}
for r in rows:
    k = by.setdefault(r["kernel"], {"n": 0, "rows": [], "workgroups": []})
    k["n"] += 1
    k["rows"].append(r)
    if r["workgroups"] not in k["workgroups"]:
        k["workgroups"].append(r["workgroups"])


print(f"\n{result['task']} {result.get('batch', 1)}×{result['tokens']}: call {result['forwardMs']:.1f} ms in the page, {len(rows)} dispatches")
call = result.get("call")
if call:
    print(f"the call's dispatches replayed in one pass: {call['wallMs']:.3f} ms from encoding to the queue's done, "
          f"{ms(call['gpuMs'])} ms on the GPU's clock")
print(f"each alone: {ms(summed(rows, 'ms'))} ms (wall), {ms(summed(rows, 'gpuMs'))} ms (GPU); in the call, a pass each: "
      f"{ms(summed(rows, 'inCallGpuMs'))} ms (GPU)")
print("| kernel | dispatches | alone, wall ms | alone, GPU ms | in the call, GPU ms | workgroups |")
print("| --- | --- | --- | --- | --- | --- |")
for name, k in sorted(by.items(), key=lambda kv: -summed(kv[1]["rows"], "ms")):
    print(f"| {name} | {k['n']} | {ms(summed(k['rows'], 'ms'))} | {ms(summed(k['rows'], 'gpuMs'))} | {ms(summed(k['rows'], 'inCallGpuMs'))} "
          f"| {', '.join(k['workgroups'][:3])} |")

variants = result.get("variants") or []
if variants:
    names = list(dict.fromkeys(v["variant"] for v in variants))
    print("\nWGSL variants, ms per dispatch: GPU (wall)")
    print("| kernel | workgroups | " + " | ".join(names) + " |")
    print("| --- | --- | " + " | ".join("---" for _ in names) + " |")
    kernels = {}
    for v in variants:
        kernels.setdefault((v["kernel"], v["workgroups"]), {})[v["variant"]] = v
    for (kernel, workgroups), got in kernels.items():
        cells = []
        for name in names:
            v = got.get(name)
            cells.append("" if v is None else v["error"] if "error" in v else f"{ms(v['gpuMs'])} ({ms(v['ms'])})")
        print(f"| {kernel} | {workgroups} | " + " | ".join(cells) + " |")
