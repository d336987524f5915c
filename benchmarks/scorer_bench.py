"""Memory and time of per-example scoring on large-vocabulary logits, emp-hf's one-pass blocks against a float32 copy.

    OMP_NUM_THREADS=1 python benchmarks/scorer_bench.py                 # B=8, T=512, V=50,000, bf16 logits
    python benchmarks/scorer_bench.py --device cuda

Each variant runs in a fresh child process (CPU: peak RSS above the process's footprint with the
logits already allocated; CUDA: torch's peak allocated bytes above the logits), so the figures do not
leak into each other. "unchunked" is what a direct
`F.cross_entropy(logits.float(), ...)`-plus-entropy would hold: a float32 (B, T, V) copy and its
log-softmax.
"""

from __future__ import annotations

import argparse
import json
import platform
import resource
import subprocess
import sys
import time

import torch
import torch.nn.functional as F

from emp_hf.core.per_example import token_terms


def unchunked(logits: torch.Tensor, labels: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    shifted, targets = logits[:, :-1].float(), labels[:, 1:]
    log_probs = F.log_softmax(shifted, dim=-1)
    loss = F.nll_loss(log_probs.transpose(1, 2), targets, reduction="none").mean(1)
    entropy = -(log_probs.exp() * log_probs).sum(-1).mean(1)
    return loss, entropy


def child(variant: str, batch: int, length: int, vocab: int, device: str) -> dict:
    g = torch.Generator().manual_seed(0)
    logits = torch.randn(batch, length, vocab, generator=g, dtype=torch.bfloat16).to(device)  # no float32 temp
    labels = torch.randint(0, vocab, (batch, length), generator=g).to(device)
    fn = unchunked if variant == "unchunked" else (lambda x, y: token_terms(x, y, shift=True, need_entropy=True)
                                                   .per_example()[:2])
    with torch.no_grad():
        fn(logits[:1, :8], labels[:1, :8])  # warm-up: kernel loading is not the scorer's cost
    if device == "cuda":
        torch.cuda.synchronize()
        base = torch.cuda.memory_allocated()
        torch.cuda.reset_peak_memory_stats()
    else:
        base = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
    start = time.perf_counter()
    with torch.no_grad():
        loss, _ = fn(logits, labels)
    if device == "cuda":
        torch.cuda.synchronize()
        peak = torch.cuda.max_memory_allocated() - base
    else:
        peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024 - base
    return {"variant": variant, "seconds": time.perf_counter() - start, "extra_peak_bytes": peak,
            "logits_bytes": logits.numel() * logits.element_size(), "loss0": float(loss[0])}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--length", type=int, default=512)
    parser.add_argument("--vocab", type=int, default=50_000)
    parser.add_argument("--device", default="cpu", choices=["cpu", "cuda"])
    parser.add_argument("--child", choices=["chunked", "unchunked"], help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        print(json.dumps(child(args.child, args.batch, args.length, args.vocab, args.device)))
        return
    print(f"# {platform.node()} {platform.machine()} torch {torch.__version__} device {args.device}; "
          f"B={args.batch} T={args.length} V={args.vocab}, bf16 logits, causal shift")
    results = {}
    for variant in ("chunked", "unchunked"):
        cmd = [sys.executable, __file__, "--child", variant, "--batch", str(args.batch), "--length", str(args.length),
               "--vocab", str(args.vocab), "--device", args.device]
        results[variant] = json.loads(subprocess.run(cmd, check=True, capture_output=True, text=True).stdout)
    for variant, r in results.items():
        print(f"{variant:>10}: extra peak {r['extra_peak_bytes'] / 2**20:8.0f} MiB "
              f"(logits {r['logits_bytes'] / 2**20:.0f} MiB), {r['seconds']:.3f} s, loss[0] {r['loss0']:.6f}")
    ratio = results["chunked"]["extra_peak_bytes"] / max(1, results["unchunked"]["extra_peak_bytes"])
    print(f"chunked / unchunked extra peak memory: {ratio:.3f}")


if __name__ == "__main__":
    main()
