"""Image datasets as whole uint8 tensors (N, C, H, W), plus the papers' variants.

Sources: CIFAR-10/100 from a local python-pickle archive (`--data_dir`) or the
Hub (`uoft-cs/cifar10`, `uoft-cs/cifar100`); Fashion-MNIST from IDX files (the
Debian package `dataset-fashion-mnist` or a local folder); scikit-learn's digits.
"""

from __future__ import annotations

import gzip
import pickle
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import Tensor

FASHION_MNIST_DIR = Path("/usr/share/datasets/fashion-mnist")
FASHION_FILES = {
    "train_images": "train-images-idx3-ubyte", "train_labels": "train-labels-idx1-ubyte",
    "test_images": "t10k-images-idx3-ubyte", "test_labels": "t10k-labels-idx1-ubyte",
}
#: Class-imbalanced CIFAR-10 (both papers): keep rate per class.
IMBALANCE_KEEP = {0: 0.25, 1: 0.25, 2: 0.5, 3: 0.5, 4: 0.5, 5: 0.75, 6: 0.75, 7: 1.0, 8: 1.0, 9: 1.0}


@dataclass
class ImageData:
    train_images: Tensor  # uint8 (N, C, H, W)
    train_labels: Tensor  # int64 (N,)
    test_images: Tensor
    test_labels: Tensor
    num_classes: int
    name: str

    @property
    def in_channels(self) -> int:
        return int(self.train_images.shape[1])

    def channel_stats(self) -> tuple[Tensor, Tensor]:
        """Per-channel mean/std of the training images, in [0, 1] units."""
        x = self.train_images.float().div(255.0)
        return x.mean(dim=(0, 2, 3)), x.std(dim=(0, 2, 3))

    def to(self, device: torch.device | str) -> ImageData:
        return ImageData(self.train_images.to(device), self.train_labels.to(device), self.test_images.to(device),
                         self.test_labels.to(device), self.num_classes, self.name)


# ---------------------------------------------------------------- loaders
def _read_idx(path: Path) -> Tensor:
    opener = gzip.open if path.suffix == ".gz" else open
    with opener(path, "rb") as f:
        data = f.read()
    ndim = data[3]
    dims = [int.from_bytes(data[4 + 4 * i: 8 + 4 * i], "big") for i in range(ndim)]
    return torch.frombuffer(bytearray(data[4 + 4 * ndim:]), dtype=torch.uint8).reshape(dims)


def load_fashion_mnist(data_dir: str | Path | None = None) -> ImageData:
    folder = Path(data_dir) if data_dir is not None else FASHION_MNIST_DIR
    paths = {}
    for key, stem in FASHION_FILES.items():
        found = [folder / f"{stem}{ext}" for ext in (".gz", "") if (folder / f"{stem}{ext}").is_file()]
        if not found:
            raise ValueError(
                f"Fashion-MNIST folder {str(folder)!r} lacks {stem}[.gz]; expected the four IDX files "
                f"{', '.join(FASHION_FILES.values())} (Debian: `apt-get install dataset-fashion-mnist`)."
            )
        paths[key] = found[0]
    return ImageData(
        _read_idx(paths["train_images"]).unsqueeze(1), _read_idx(paths["train_labels"]).long(),
        _read_idx(paths["test_images"]).unsqueeze(1), _read_idx(paths["test_labels"]).long(), 10, "fashion_mnist",
    )


def load_digits_data(test_fraction: float = 0.2, seed: int = 0) -> ImageData:
    from sklearn.datasets import load_digits

    digits = load_digits()
    images = torch.tensor(digits.images * (255.0 / 16.0)).round().to(torch.uint8).unsqueeze(1)
    labels = torch.tensor(digits.target, dtype=torch.int64)
    order = torch.randperm(len(labels), generator=torch.Generator().manual_seed(seed))
    n_test = int(round(test_fraction * len(labels)))
    test, train = order[:n_test], order[n_test:]
    return ImageData(images[train], labels[train], images[test], labels[test], 10, "digits")


class _CifarUnpickler(pickle.Unpickler):
    """Unpickles only what the CIFAR python archives hold (dicts, lists, bytes, numpy arrays): any other
    global (a crafted file's `os.system`, say) is refused before it is called."""

    ALLOWED = {
        ("numpy", "ndarray"), ("numpy", "dtype"),
        ("numpy.core.multiarray", "_reconstruct"), ("numpy._core.multiarray", "_reconstruct"),
        ("numpy.core.multiarray", "scalar"), ("numpy._core.multiarray", "scalar"),
    }

    def find_class(self, module: str, name: str):
        if (module, name) not in self.ALLOWED:
            raise pickle.UnpicklingError(f"global {module}.{name} is not allowed in a CIFAR batch file")
        return super().find_class(module, name)


def read_cifar_pickle(path: Path) -> dict:
    try:
        with path.open("rb") as f:
            batch = _CifarUnpickler(f, encoding="bytes").load()
    except (pickle.UnpicklingError, EOFError, ValueError, TypeError, AttributeError) as error:
        raise ValueError(f"{path} is not a CIFAR python-pickle batch ({error}); nothing in it was run.") from None
    if not isinstance(batch, dict) or b"data" not in batch:
        raise ValueError(f"{path} is not a CIFAR python-pickle batch (no b'data' entry).")
    return batch


def load_cifar(name: str, data_dir: str | Path | None = None) -> ImageData:
    classes = 10 if name == "cifar10" else 100
    if data_dir is None:
        return _cifar_from_hub(name, classes)
    root = Path(data_dir)
    if name == "cifar10":
        folder = root / "cifar-10-batches-py" if (root / "cifar-10-batches-py").is_dir() else root
        train_files = [folder / f"data_batch_{i}" for i in range(1, 6)]
        test_files, key = [folder / "test_batch"], b"labels"
    else:
        folder = root / "cifar-100-python" if (root / "cifar-100-python").is_dir() else root
        train_files, test_files, key = [folder / "train"], [folder / "test"], b"fine_labels"
    missing = [str(p) for p in train_files + test_files if not p.is_file()]
    if missing:
        raise ValueError(f"`data_dir` lacks the {name} python-pickle files: {', '.join(missing)}.")

    def read(files):
        images, labels = [], []
        for path in files:
            batch = read_cifar_pickle(path)
            images.append(torch.tensor(batch[b"data"], dtype=torch.uint8).reshape(-1, 3, 32, 32))
            labels.append(torch.tensor(batch[key], dtype=torch.int64))
        return torch.cat(images), torch.cat(labels)

    (tr_x, tr_y), (te_x, te_y) = read(train_files), read(test_files)
    return ImageData(tr_x, tr_y, te_x, te_y, classes, name)


def _cifar_from_hub(name: str, classes: int) -> ImageData:
    import numpy as np
    from datasets import load_dataset

    try:
        ds = load_dataset(f"uoft-cs/{name}")
    except (OSError, ValueError) as error:  # offline, or the Hub unreachable
        reason = " ".join(str(error).split())[:160]
        raise ValueError(f"Could not load uoft-cs/{name} from the Hub ({reason}). Pass --data_dir with the "
                         f"{name} python-pickle files (cifar-10-batches-py / cifar-100-python), or go online.") from None
    image_key = "img"
    label_key = "label" if name == "cifar10" else "fine_label"

    def convert(split):
        images = np.stack([np.asarray(im.convert("RGB")) for im in split[image_key]])
        return torch.from_numpy(images).permute(0, 3, 1, 2).contiguous(), torch.tensor(split[label_key])

    (tr_x, tr_y), (te_x, te_y) = convert(ds["train"]), convert(ds["test"])
    return ImageData(tr_x, tr_y, te_x, te_y, classes, name)


DATASETS = ("cifar10", "cifar100", "fashion_mnist", "digits")
#: (crop padding, horizontal flip) per dataset: pad-4 crop and flip as in the papers, but a 1-pixel
#: shift and no flip for 8x8 digits, where 4 pixels is half the image and a flip changes the digit.
AUGMENTATION = {"cifar10": (4, True), "cifar100": (4, True), "fashion_mnist": (4, True), "digits": (1, False)}


def load_image_data(name: str, data_dir: str | Path | None = None, seed: int = 0) -> ImageData:
    if name not in DATASETS:
        raise ValueError(f"Unknown `dataset` {name!r}; known datasets: {', '.join(DATASETS)}.")
    if data_dir is not None and not Path(data_dir).is_dir():
        raise ValueError(f"`data_dir` {str(data_dir)!r} is not a folder.")
    if name in ("cifar10", "cifar100"):
        return load_cifar(name, data_dir)
    if name == "fashion_mnist":
        return load_fashion_mnist(data_dir)
    return load_digits_data(seed=seed)


# --------------------------------------------------------------- variants
def subsample_per_class(labels: Tensor, keep: dict[int, float] | int, generator: torch.Generator) -> Tensor:
    """Indices keeping, per class, a fraction (dict) or at most N examples (int), in original order."""
    chosen = []
    for c in torch.unique(labels).tolist():
        members = torch.nonzero(labels == c).squeeze(1)
        count = keep if isinstance(keep, int) else int(round(keep.get(c, 1.0) * members.numel()))
        pick = members[torch.randperm(members.numel(), generator=generator)[: min(count, members.numel())]]
        chosen.append(pick)
    return torch.sort(torch.cat(chosen)).values


def apply_variants(data: ImageData, *, imbalance: bool = False, per_class: int | None = None,
                   label_noise: float = 0.0, max_train: int | None = None, seed: int = 0) -> tuple[ImageData, Tensor]:
    """The papers' training-set variants, reproducible by seed.

    Returns the new data and a mask of the training labels that noise changed.
    """
    if not 0.0 <= label_noise < 1.0:
        raise ValueError(f"`label_noise` must be in [0, 1), got {label_noise}.")
    if per_class is not None and per_class < 1:
        raise ValueError(f"`per_class` must be >= 1, got {per_class}.")
    if imbalance and data.num_classes != 10:
        raise ValueError("`imbalance` follows the papers' CIFAR-10 keep rates and needs a 10-class dataset.")
    g = torch.Generator().manual_seed(seed + 7919)
    images, labels = data.train_images, data.train_labels
    if imbalance:
        keep = subsample_per_class(labels.cpu(), IMBALANCE_KEEP, g)
        images, labels = images[keep], labels[keep]
    if per_class is not None:
        keep = subsample_per_class(labels.cpu(), per_class, g)
        images, labels = images[keep], labels[keep]
    if max_train is not None and max_train < labels.numel():
        keep = torch.sort(torch.randperm(labels.numel(), generator=g)[:max_train]).values
        images, labels = images[keep], labels[keep]
    noisy = torch.zeros(labels.numel(), dtype=torch.bool)
    if label_noise > 0:
        # docs/methods.md: a fraction of the training labels replaced uniformly at random
        count = int(round(label_noise * labels.numel()))
        where = torch.randperm(labels.numel(), generator=g)[:count]
        new = torch.randint(0, data.num_classes, (count,), generator=g)
        labels = labels.clone()
        noisy[where] = new != labels[where].cpu()
        labels[where] = new.to(labels.device)
    return ImageData(images, labels, data.test_images, data.test_labels, data.num_classes, data.name), noisy
