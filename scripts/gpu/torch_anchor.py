#!/usr/bin/env python3
"""PyTorch anchor for webbert's bench cases: BertModel / BertForMaskedLM with all-MiniLM-L6-v2's config,
random weights, eval mode, on CUDA (fp32, fp16) and on the CPU (fp32, all cores).

usage: python3 torch_anchor.py CONFIG_JSON OUT_JSON [--gpu-runs 30] [--cpu-runs 20] [--no-cpu] [--no-gpu]

Every timed run is wall clock around one call, with torch.cuda.synchronize() before and after (GPU), and
ends with the result copied to the host (like webbert, which reads its output back).
Cases (batch x tokens, no padding):
  embed BxS      BertModel -> mean pooling over the mask -> L2 normalise -> .cpu()
  fill-mask S    (a) 'full':   BertForMaskedLM logits for all S positions (S x 30522), softmax + top-5 of the
                               [MASK] row -> .cpu()
                 (b) 'masked': encoder, then the MLM head on the [MASK] row only (what webbert does),
                               softmax, top-5 -> .cpu()
Also, on CUDA: the same embed forward replayed as a CUDA graph (GPU time without Python/launch overhead), and
the number of CUDA kernels one eager embed forward launches (torch.profiler).
"""
import json
import statistics
import sys
import time

import torch
import transformers
from transformers import BertConfig, BertForMaskedLM, BertModel

args = sys.argv[1:]
cfg_path, out_path = args[0], args[1]
gpu_runs = int(args[args.index("--gpu-runs") + 1]) if "--gpu-runs" in args else 30
cpu_runs = int(args[args.index("--cpu-runs") + 1]) if "--cpu-runs" in args else 20
do_cpu = "--no-cpu" not in args
do_gpu = "--no-gpu" not in args and torch.cuda.is_available()

EMBED = [(1, 16), (1, 128), (1, 512), (8, 128), (64, 128), (256, 128)]
FILL = [16, 128]
MASK_ID = 103

results = {"torch": torch.__version__, "transformers": transformers.__version__, "rows": []}
if torch.cuda.is_available():
    p = torch.cuda.get_device_properties(0)
    results["gpu"] = {"name": p.name, "sms": p.multi_processor_count, "mem_gib": p.total_memory / 2**30,
                      "cuda": torch.version.cuda}
results["cpu_threads"] = torch.get_num_threads()


def stats(ts):
    ts = sorted(ts)
    return {"median_ms": statistics.median(ts), "min_ms": ts[0], "max_ms": ts[-1], "runs": len(ts)}


def bench(fn, device, runs, warm):
    cuda = device == "cuda"
    for _ in range(warm):
        fn()
    if cuda:
        torch.cuda.synchronize()
    ts = []
    for _ in range(runs):
        if cuda:
            torch.cuda.synchronize()
        t = time.perf_counter()
        fn()
        if cuda:
            torch.cuda.synchronize()
        ts.append((time.perf_counter() - t) * 1e3)
    return stats(ts)


def ids(batch, seq, mask=False, device="cpu"):
    g = torch.Generator().manual_seed(0)
    x = torch.randint(1000, 30000, (batch, seq), generator=g)
    x[:, 0], x[:, -1] = 101, 102
    if mask:
        x[:, seq // 2] = MASK_ID
    return x.to(device)


def row(**kw):
    results["rows"].append(kw)
    r = kw
    print(f"| {r['runtime']} | {r['case']} | {r['median_ms']:.3f} [{r['min_ms']:.3f}–{r['max_ms']:.3f}] "
          f"({r['runs']} runs) |", flush=True)


def run_all(device, dtype, runs, warm):
    label = f"torch-{device}-{str(dtype).split('.')[-1]}"
    config = BertConfig.from_json_file(cfg_path)
    torch.manual_seed(0)
    enc = BertModel(config, add_pooling_layer=False).eval().to(device=device, dtype=dtype)
    torch.manual_seed(0)
    mlm = BertForMaskedLM(config).eval().to(device=device, dtype=dtype)
    results.setdefault("attn_implementation", getattr(enc.config, "_attn_implementation", None))
    with torch.inference_mode():
        for b, s in EMBED:
            x = ids(b, s, device=device)
            am = torch.ones_like(x)
            tt = torch.zeros_like(x)

            def embed():
                h = enc(input_ids=x, attention_mask=am, token_type_ids=tt).last_hidden_state
                m = am.unsqueeze(-1).to(h.dtype)
                pooled = (h * m).sum(1) / m.sum(1)
                return torch.nn.functional.normalize(pooled.float(), dim=-1).cpu()

            try:
                row(runtime=label, case=f"embed {b}x{s}", **bench(embed, device, runs, warm))
            except Exception as e:  # keep going: one failed case must not sink the run
                print(f"{label} embed {b}x{s} FAILED: {e!r}", flush=True)
            if device == "cuda":
                try:  # CUDA graph replay of the same forward: the GPU's own time, launch overhead removed
                    st = torch.cuda.Stream()
                    st.wait_stream(torch.cuda.current_stream())
                    with torch.cuda.stream(st):
                        for _ in range(3):
                            enc(input_ids=x, attention_mask=am, token_type_ids=tt)
                    torch.cuda.current_stream().wait_stream(st)
                    g = torch.cuda.CUDAGraph()
                    with torch.cuda.graph(g):
                        out = enc(input_ids=x, attention_mask=am, token_type_ids=tt).last_hidden_state
                    row(runtime=label + "-cudagraph", case=f"embed {b}x{s} (encoder only)",
                        **bench(g.replay, device, runs, warm))
                    del g, out
                except Exception as e:
                    print(f"{label} cudagraph {b}x{s} FAILED: {e!r}", flush=True)
                if (b, s) == (1, 128):
                    try:
                        from torch.profiler import ProfilerActivity, profile
                        with profile(activities=[ProfilerActivity.CUDA]) as prof:
                            embed()
                            torch.cuda.synchronize()
                        kernels = [e for e in prof.events() if e.device_type == torch.autograd.DeviceType.CUDA]
                        results.setdefault("kernels_per_embed_1x128", {})[label] = len(kernels)
                        print(f"{label}: CUDA kernels+memcpys in one eager embed 1x128: {len(kernels)}", flush=True)
                    except Exception as e:
                        print(f"{label} profiler FAILED: {e!r}", flush=True)
        for s in FILL:
            x = ids(1, s, mask=True, device=device)
            am = torch.ones_like(x)
            tt = torch.zeros_like(x)
            pos = s // 2

            def fill_full():
                logits = mlm(input_ids=x, attention_mask=am, token_type_ids=tt).logits
                p = torch.softmax(logits[0, pos].float(), -1)
                v, i = p.topk(5)
                return v.cpu(), i.cpu()

            def fill_masked():
                h = mlm.bert(input_ids=x, attention_mask=am, token_type_ids=tt).last_hidden_state
                logits = mlm.cls(h[:, pos:pos + 1])
                p = torch.softmax(logits[0, 0].float(), -1)
                v, i = p.topk(5)
                return v.cpu(), i.cpu()

            for name, fn in (("full logits", fill_full), ("masked row only", fill_masked)):
                try:
                    row(runtime=label, case=f"fill-mask {s} ({name})", **bench(fn, device, runs, warm))
                except Exception as e:
                    print(f"{label} fill-mask {s} {name} FAILED: {e!r}", flush=True)
    del enc, mlm
    if device == "cuda":
        torch.cuda.empty_cache()


print(json.dumps({k: v for k, v in results.items() if k != "rows"}), flush=True)
print("| runtime | case | ms median [min–max] |\n| --- | --- | --- |", flush=True)
if do_gpu:
    torch.backends.cuda.matmul.allow_tf32 = False  # plain fp32 GEMMs (PyTorch's default); noted in the report
    run_all("cuda", torch.float32, gpu_runs, 10)
    run_all("cuda", torch.float16, gpu_runs, 10)
if do_cpu:
    run_all("cpu", torch.float32, cpu_runs, 3)
results["attn_implementation"] = results.get("attn_implementation")
with open(out_path, "w") as f:
    json.dump(results, f, indent=1)
