"""Time score updates and one selection of the core for large N.

    OMP_NUM_THREADS=1 python benchmarks/core_bench.py --sizes 1e5 1e6 1e7

Prints, per (N, method): seconds per update of a batch of `--batch` rows,
seconds for the store updates covering one full epoch, seconds for one
selection (set_epoch + shuffled order), the store's bytes per example, and the
memory a selection adds to the store (peak RSS while it runs, sampled).
`--breakdown` also times, for the kept count that selection produced, the
steps any selection + shuffled order of that size must take whatever the
method (the mask's positions, the times-selected count, the shuffle and its
gather): their sum is the floor that torch's one-thread primitives set.
"""

from __future__ import annotations

import argparse
import platform
import resource
import threading
import time

import torch

from emp_hf.core import BYTES_PER_EXAMPLE, DataPruner, PruningConfig
from emp_hf.core import selection as selection_module
from emp_hf.core.selection import index_dtype, nonzero_indices


def current_rss_gib() -> float:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * resource.getpagesize() / 2**30


class PeakRSS:
    """The highest RSS seen while the block runs, sampled every half millisecond by a thread (torch's kernels
    release the GIL). `ru_maxrss` cannot isolate a phase: it is the process's peak since it started."""

    def __enter__(self) -> PeakRSS:
        self.peak, self._stop = current_rss_gib(), False
        self._thread = threading.Thread(target=self._sample, daemon=True)
        self._thread.start()
        return self

    def _sample(self) -> None:
        while not self._stop:
            self.peak = max(self.peak, current_rss_gib())
            time.sleep(0.0005)

    def __exit__(self, *exc) -> None:
        self._stop = True
        self._thread.join()
        self.peak = max(self.peak, current_rss_gib())


def timed(fn, repeat=3):
    best = float("inf")
    for _ in range(repeat):
        t0 = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - t0)
    return best


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sizes", nargs="+", type=float, default=[1e5, 1e6, 1e7])
    parser.add_argument("--methods", nargs="+", default=["emp", "infobatch", "ucb"])
    parser.add_argument("--batch", type=int, default=256)
    parser.add_argument("--prune", type=float, default=0.7)
    parser.add_argument("--breakdown", action="store_true", help="Also time the steps every selection must take.")
    parser.add_argument("--packed_min", type=float, default=None,
                        help="Hold selections packed from this many examples on (default: the library's 2^24); "
                             "e.g. 1e12 keeps the index form at every size, to compare the two.")
    args = parser.parse_args()
    if args.packed_min is not None:
        selection_module._PACKED_MIN = int(args.packed_min)  # the one module that reads it
    print(f"selections packed from {selection_module._PACKED_MIN:,} examples on")
    print(f"torch {torch.__version__}, threads {torch.get_num_threads()}, {platform.processor() or platform.machine()}")
    print(f"store bytes/example: {BYTES_PER_EXAMPLE}")
    print(f"{'N':>11} {'method':>10} {'update/batch s':>15} {'epoch updates s':>16} {'selection s':>12}")
    for size in args.sizes:
        n = int(size)
        for method in args.methods:
            pruner = DataPruner(n, 3, PruningConfig(method=method, prune=args.prune, anneal=0.0), seed=0)
            base = current_rss_gib()  # the store and the runtime
            with PeakRSS() as full_epoch:
                pruner.set_epoch(0)
                pruner.epoch_order()
            g = torch.Generator().manual_seed(0)
            # one full epoch of updates in one go (fills every score), then time batch-sized updates
            t0 = time.perf_counter()
            chunk = 1 << 16  # small temporaries, so that the peak RSS is the selection's
            for start in range(0, n, chunk):
                idx = torch.arange(start, min(n, start + chunk))
                pruner.update(idx, torch.rand(idx.numel(), generator=g), torch.rand(idx.numel(), generator=g))
            epoch_updates = time.perf_counter() - t0
            idx = torch.randint(0, n, (args.batch,), generator=g)
            losses, ents = torch.rand(args.batch, generator=g), torch.rand(args.batch, generator=g)
            per_batch = timed(lambda: pruner.update(idx, losses, ents), repeat=20)

            def select():
                pruner.selection = None  # force a fresh selection for epoch 1
                pruner._pruned = None
                pruner.epoch = None
                pruner.set_epoch(1)
                pruner.epoch_order()

            pruner.selection = pruner._order = None  # as `set_epoch` does first: epoch 0's order is let go
            with PeakRSS() as rss:
                selection = timed(select)
            print(f"{n:>11,} {method:>10} {per_batch:>15.6f} {epoch_updates:>16.3f} {selection:>12.3f}"
                  f"   RSS: store and runtime {base:.3f} GiB; peak above it in a full epoch's order "
                  f"+{full_epoch.peak - base:.3f}, in selection + order +{rss.peak - base:.3f} GiB "
                  f"(one float32 vector of N: {4 * n / 2**30:.3f})")
            if args.breakdown:
                print_floor(pruner)


def print_floor(pruner: DataPruner) -> None:
    """Time the shared steps of a selection of the size `pruner` just chose, on stand-ins of the same size."""
    n, kept = pruner.num_examples, len(pruner.selection)
    mask = torch.zeros(n, dtype=torch.bool)
    mask[pruner.selection.indices.long()] = True
    counts = torch.zeros(n, dtype=torch.int32)
    one = torch.ones(1, dtype=torch.int32).expand(kept)
    indices = nonzero_indices(mask)
    gen = torch.Generator().manual_seed(0)
    perm = torch.randperm(kept, generator=gen, dtype=index_dtype(kept))
    steps = {
        "positions of the mask (nonzero)": lambda: nonzero_indices(mask),
        "times-selected count (index_add_)": lambda: counts.index_add_(0, indices, one),
        "shuffle (randperm of the kept count)": lambda: torch.randperm(kept, generator=gen, dtype=index_dtype(kept)),
        "gather in shuffled order (index_select)": lambda: indices.index_select(0, perm),
    }
    total = 0.0
    for name, step in steps.items():
        seconds = timed(step)
        total += seconds
        print(f"{'':>23} {name:<42} {seconds:.3f} s")
    print(f"{'':>23} {f'floor for {kept:,} kept of {n:,}':<42} {total:.3f} s")


if __name__ == "__main__":
    main()
