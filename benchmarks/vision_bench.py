"""Training time of the vision loop at prune 0.3/0.5/0.7 against the full-data loop, side by side.

    OMP_NUM_THREADS=1 python benchmarks/vision_bench.py --repeats 2
    python benchmarks/vision_bench.py --gpu --synthetic 50000 --model resnet18 --width 64 --epochs 4   # CIFAR-sized

Runs alternate (full, 0.3, 0.5, 0.7, full, ...) in one process so machine drift
hits all of them. Train time excludes the per-epoch evaluation. ideal saving =
1 - forwarded/full-data examples; achieved = 1 - time/full time; efficiency =
achieved/ideal; throughput = examples forwarded per second of training.
"""

from __future__ import annotations

import argparse
import platform
import statistics
import tempfile

import torch

from emp_hf import PruningConfig
from emp_hf.vision import VisionArguments, load_image_data, train


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--dataset", default="fashion_mnist")
    parser.add_argument("--model", default="resnet10")
    parser.add_argument("--width", type=int, default=16)
    parser.add_argument("--epochs", type=int, default=4)
    parser.add_argument("--max_train_samples", type=int, default=10000)
    parser.add_argument("--method", default="emp")
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--gpu", action="store_true", help="bf16 autocast and channels_last on the GPU")
    parser.add_argument("--synthetic", type=int, default=0,
                        help="N random CIFAR-sized images (3x32x32, 10 classes) instead of --dataset")
    parser.add_argument("--batch_size", type=int, default=128)
    args = parser.parse_args()
    if args.gpu:
        import os

        os.environ["ACCELERATE_MIXED_PRECISION"] = "bf16"
    if args.synthetic:
        from emp_hf.vision import ImageData

        g = torch.Generator().manual_seed(0)
        images = torch.randint(0, 256, (args.synthetic + 1000, 3, 32, 32), generator=g, dtype=torch.uint8)
        labels = torch.randint(0, 10, (args.synthetic + 1000,), generator=g)
        data = ImageData(images[:-1000], labels[:-1000], images[-1000:], labels[-1000:], 10, "cifar10")
        args.dataset, args.max_train_samples, label = "cifar10", args.synthetic, "synthetic CIFAR-sized"
    else:
        data, label = load_image_data(args.dataset), args.dataset
    data.test_images, data.test_labels = data.test_images[:1000], data.test_labels[:1000]
    device = torch.cuda.get_device_name() + ", bf16, channels_last" if args.gpu else \
        f"CPU, {torch.get_num_threads()} thread(s)"
    print(f"torch {torch.__version__}, {device}, {platform.machine()}; {label} "
          f"{args.max_train_samples} images, {args.model} width {args.width}, {args.epochs} epochs, "
          f"method {args.method}, {args.repeats} repeats")
    results: dict[float, list[tuple[float, int]]] = {}
    for _ in range(args.repeats):
        for prune in (0.0, 0.3, 0.5, 0.7):
            with tempfile.TemporaryDirectory() as out:
                vargs = VisionArguments(dataset=args.dataset, model=args.model, width=args.width, epochs=args.epochs,
                                        max_train_samples=args.max_train_samples, output_dir=out, cpu=not args.gpu,
                                        progress=False, channels_last=args.gpu, batch_size=args.batch_size)
                cfg = PruningConfig(method="full" if prune == 0 else args.method, prune=prune)
                final = train(vargs, cfg, data=data).final
            results.setdefault(prune, []).append((final["train_time_s"], final["forwarded_examples"]))
    full_time = statistics.median(t for t, _ in results[0.0])
    full_fwd = results[0.0][0][1]
    print(f"{'prune':>6} {'train s':>8} {'forwarded':>10} {'img/s':>7} {'ideal saving':>13} {'achieved':>9} "
          f"{'efficiency':>11}")
    for prune, rows in results.items():
        t = statistics.median(x for x, _ in rows)
        fwd = rows[0][1]
        ideal, achieved = 1 - fwd / full_fwd, 1 - t / full_time
        eff = f"{achieved / ideal:.3f}" if ideal > 0 else "-"
        print(f"{prune:>6} {t:>8.1f} {fwd:>10,} {fwd / t:>7.0f} {ideal:>13.3f} {achieved:>9.3f} {eff:>11}")


if __name__ == "__main__":
    main()
