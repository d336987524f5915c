"""What the training-data fingerprint costs at scale: one pass over every value of every column.

    OMP_NUM_THREADS=1 python benchmarks/fingerprint_bench.py --rows 10000000 --mean-length 20

Builds an Arrow-backed `datasets.Dataset` like a tokenised GLUE training set (ragged int32 `input_ids` and
`attention_mask` of about `--mean-length` tokens, an int64 `label`), without going through Python lists,
then times `emp_hf.data_identity.train_data_fingerprint` on it and on a `select`ed (index-mapped) half.
"""

from __future__ import annotations

import argparse
import platform
import resource
import time

import numpy as np
import pyarrow as pa
import torch
from datasets import Dataset
from datasets.table import InMemoryTable

from emp_hf.data_identity import train_data_fingerprint


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rows", type=int, default=1_000_000)
    parser.add_argument("--mean-length", type=int, default=20)
    a = parser.parse_args()
    rng = np.random.default_rng(0)
    lengths = rng.integers(max(1, a.mean_length // 2), a.mean_length * 3 // 2 + 1, a.rows).astype(np.int32)
    offsets = np.concatenate([[0], np.cumsum(lengths, dtype=np.int64)])
    values = rng.integers(0, 30_522, int(offsets[-1]), dtype=np.int32)
    ids = pa.LargeListArray.from_arrays(pa.array(offsets), pa.array(values))
    mask = pa.LargeListArray.from_arrays(pa.array(offsets), pa.array(np.ones_like(values)))
    table = pa.table({"input_ids": ids, "attention_mask": mask, "label": pa.array(rng.integers(0, 2, a.rows))})
    data = Dataset(InMemoryTable(table))
    words = 2 * int(offsets[-1]) + a.rows
    print(f"# {platform.node()} {platform.machine()} torch {torch.__version__} threads {torch.get_num_threads()}; "
          f"{a.rows:,} rows, {words:,} values, {time.strftime('%Y-%m-%d %H:%M')}")
    before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20
    start = time.perf_counter()
    found = train_data_fingerprint(data)
    seconds = time.perf_counter() - start
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20 - before
    print(f"whole dataset: {seconds:.2f} s ({seconds / words * 1e9:.1f} ns per value), peak RSS +{peak:.2f} GiB, "
          f"digest {found.ordered[:16]}")
    half = data.select(range(0, a.rows, 2))
    start = time.perf_counter()
    train_data_fingerprint(half)
    print(f"select()ed half (index mapping): {time.perf_counter() - start:.2f} s")


if __name__ == "__main__":
    main()
