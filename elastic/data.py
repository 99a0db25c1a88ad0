"""Training data for supernets: Fashion-MNIST (idx ``.gz`` files), ImageFolder trees and CIFAR-10's
on-disk layout, with a held-out validation split taken from the training set.

All datasets are torchvision datasets; this module only locates the files, checks them, and builds the
splits and transforms. The validation split (for BN recalibration, accuracy-predictor data and search)
is a seeded random subset of the training set; the official test split is kept for final reporting.
"""

from __future__ import annotations

import gzip
import hashlib
import logging
import math
import os
import struct
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch.utils.data import Dataset, Subset

from elastic.fileio import atomic_path

log = logging.getLogger(__name__)

FMNIST_DIR = Path("/usr/share/datasets/fashion-mnist")
FMNIST_FILES = {  # name -> (idx magic, item dims)
    "train-images-idx3-ubyte": (0x803, 3), "train-labels-idx1-ubyte": (0x801, 1),
    "t10k-images-idx3-ubyte": (0x803, 3), "t10k-labels-idx1-ubyte": (0x801, 1),
}
KINDS = ("fashion-mnist", "imagefolder", "cifar10")
# Training-split augmentation policies: random crop (zero padding) + horizontal flip, optionally followed by
# random erasing (a rectangle of 2-33% of the image set to the mean), which suits small grey images.
AUGMENTATIONS = ("none", "crop_flip", "crop_flip_erase")
IMAGENET_MEAN, IMAGENET_STD = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)
_HOW_TO_FMNIST = ("install it with `sudo apt-get install dataset-fashion-mnist` (Debian/Ubuntu) or pass "
                  "--data fashion-mnist:DIR with a folder holding the four idx .gz files")


@dataclass(frozen=True)
class DataSource:
    """Which dataset and where: ``kind`` is one of ``fashion-mnist``, ``imagefolder``, ``cifar10``."""

    kind: str
    path: Path

    def __post_init__(self) -> None:
        if self.kind not in KINDS:
            raise ValueError(f"unknown dataset kind {self.kind!r}; allowed: {list(KINDS)}")
        object.__setattr__(self, "path", Path(self.path).expanduser())

    @classmethod
    def parse(cls, text: str) -> "DataSource":
        """Parse ``--data``: ``fashion-mnist[:DIR]``, ``imagefolder:DIR``, ``cifar10:DIR`` or a bare ``DIR``.

        A bare directory is recognised by its content (idx files, ``cifar-10-batches-py``, or class folders).
        """
        kind, sep, rest = text.partition(":")
        if sep and kind in KINDS:
            return cls(kind, Path(rest) if rest else FMNIST_DIR)
        if text in KINDS:
            if text != "fashion-mnist":
                raise ValueError(f"--data {text} needs a directory: {text}:DIR")
            return cls("fashion-mnist", FMNIST_DIR)
        path = Path(text).expanduser()
        if not path.is_dir():
            raise ValueError(f"--data {text!r} is neither a dataset name ({', '.join(KINDS)}) nor an existing "
                             "directory; use fashion-mnist[:DIR], imagefolder:DIR or cifar10:DIR")
        if any((path / f"{n}.gz").is_file() for n in FMNIST_FILES):
            return cls("fashion-mnist", path)
        if (path / "cifar-10-batches-py").is_dir():
            return cls("cifar10", path)
        return cls("imagefolder", path)


@dataclass
class Splits:
    """Train (augmented), validation and test datasets plus what a deployed model must know."""

    train: Dataset
    val: Dataset
    test: Dataset | None
    in_channels: int
    num_classes: int
    classes: list[str]
    mean: tuple[float, ...]
    std: tuple[float, ...]
    image_size: int
    source: dict[str, Any] = field(default_factory=dict)

    def calibration(self, n: int) -> Subset:
        """The first ``n`` training images without augmentation: the BatchNorm recalibration set."""
        base = self.val.dataset if isinstance(self.val, Subset) else self.val
        train_idx = self.train.indices if isinstance(self.train, Subset) else range(len(base))
        return Subset(base, list(train_idx)[:n])

    def preprocessing(self) -> dict[str, Any]:
        """JSON-ready description of the input preprocessing (recorded with checkpoints)."""
        return {"mean": list(self.mean), "std": list(self.std), "in_channels": self.in_channels,
                "image_size": self.image_size, "scale": "pixel / 255, then (x - mean) / std",
                "classes": self.classes}


# ---------------------------------------------------------------- Fashion-MNIST
def _check_idx(raw: bytes, name: str, src: Path) -> None:
    magic, dims = FMNIST_FILES[name]
    header = 4 + 4 * dims
    if len(raw) < header or struct.unpack(">I", raw[:4])[0] != magic:
        raise ValueError(f"{src} is not an idx file of the expected kind (bad header); {_HOW_TO_FMNIST}")
    shape = struct.unpack(f">{dims}I", raw[4:header])
    if len(raw) != header + math.prod(shape):
        raise ValueError(f"{src} is truncated or malformed: header says {shape}, file has "
                         f"{len(raw) - header} data bytes; {_HOW_TO_FMNIST}")


def _cache_root() -> Path:
    base = os.environ.get("OFAKIT_CACHE") or os.path.join(os.environ.get("XDG_CACHE_HOME", "~/.cache"), "ofakit")
    return Path(base).expanduser()


def fashion_mnist_root(src_dir: Path) -> Path:
    """Decompress the idx ``.gz`` files once into a cache laid out as torchvision expects; returns its root."""
    src_dir = Path(src_dir)
    missing = [f"{n}.gz" for n in FMNIST_FILES if not (src_dir / f"{n}.gz").is_file()]
    if missing:
        raise ValueError(f"Fashion-MNIST not found in {src_dir} (missing {', '.join(missing)}); {_HOW_TO_FMNIST}")
    key = hashlib.sha256()
    for n in sorted(FMNIST_FILES):
        st = (src_dir / f"{n}.gz").stat()
        key.update(f"{n}:{st.st_size}:{st.st_mtime_ns}".encode())
    root = _cache_root() / "fashion-mnist" / key.hexdigest()[:16]
    raw_dir = root / "FashionMNIST" / "raw"
    for n in FMNIST_FILES:
        target = raw_dir / n
        if target.is_file():
            continue
        src = src_dir / f"{n}.gz"
        try:
            raw = gzip.decompress(src.read_bytes())
        except (OSError, EOFError, gzip.BadGzipFile) as exc:
            raise ValueError(f"cannot decompress {src}: {exc}; {_HOW_TO_FMNIST}") from None
        _check_idx(raw, n, src)
        with atomic_path(target) as tmp:
            tmp.write_bytes(raw)
    return root


def _channel_stats(images: torch.Tensor) -> tuple[tuple[float, ...], tuple[float, ...]]:
    """Per-channel mean/std of uint8 images shaped (N, H, W) or (N, H, W, C), scaled to [0, 1]."""
    x = images.double() / 255.0
    if x.dim() == 3:
        x = x.unsqueeze(-1)
    flat = x.reshape(-1, x.shape[-1])
    return tuple(flat.mean(0).tolist()), tuple(flat.std(0).tolist())


def _split_indices(n: int, val_size: int, seed: int, train_limit: int | None) -> tuple[list[int], list[int]]:
    if not 0 < val_size < n:
        raise ValueError(f"val_size={val_size} must be between 1 and the training set size - 1 ({n - 1})")
    perm = torch.randperm(n, generator=torch.Generator().manual_seed(seed)).tolist()
    val, train = perm[:val_size], perm[val_size:]
    return (train[:train_limit] if train_limit else train), val


def load_splits(source: DataSource, val_size: int = 5000, seed: int = 0, train_limit: int | None = None,
                test_limit: int | None = None, image_size: int = 224, augment: bool | str = True) -> Splits:
    """Build train/val/test datasets for ``source``.

    Args:
        source: Which dataset.
        val_size: Images held out of the training set for validation.
        seed: Seed of the train/val split.
        train_limit: Keep only this many training images (tiny runs, tests).
        test_limit: Keep only the first this many test images.
        image_size: Base image size for ImageFolder data (Fashion-MNIST is 28, CIFAR-10 32).
        augment: Training-split augmentation, one of :data:`AUGMENTATIONS` (``True`` is ``crop_flip``,
            ``False`` is ``none``).
    """
    from torchvision import datasets, transforms as T

    policy = augmentation_policy(augment)
    if source.kind == "fashion-mnist":
        root = fashion_mnist_root(source.path)
        make = lambda train, tf: datasets.FashionMNIST(str(root), train=train, transform=tf)  # noqa: E731
        base = make(True, None)
        size, pad, channels, classes = 28, 2, 1, list(base.classes)
        n = len(base)
        train_idx, val_idx = _split_indices(n, val_size, seed, train_limit)
        mean, std = _channel_stats(base.data[train_idx])
    elif source.kind == "cifar10":
        if not (source.path / "cifar-10-batches-py").is_dir():
            raise ValueError(f"CIFAR-10 not found: {source.path} must contain cifar-10-batches-py/ "
                             "(torchvision's on-disk layout; downloads are not possible here)")
        # torchvision verifies every batch file's md5 against the official release before unpickling it.
        make = lambda train, tf: datasets.CIFAR10(str(source.path), train=train, transform=tf)  # noqa: E731
        try:
            base = make(True, None)
        except RuntimeError as exc:
            raise ValueError(f"CIFAR-10 in {source.path} is incomplete or corrupted: {exc}") from None
        size, pad, channels, classes = 32, 4, 3, list(base.classes)
        train_idx, val_idx = _split_indices(len(base), val_size, seed, train_limit)
        mean, std = _channel_stats(torch.from_numpy(base.data[train_idx]))
    else:
        train_dir = source.path / "train"
        if not train_dir.is_dir():
            raise ValueError(f"ImageFolder data needs {train_dir}/<class>/<image> (and optionally test/); "
                             f"{source.path} has no train/ folder")
        make_if = lambda d, tf: datasets.ImageFolder(str(d), transform=tf)  # noqa: E731
        try:
            base = make_if(train_dir, None)
        except (FileNotFoundError, RuntimeError) as exc:
            raise ValueError(f"cannot read ImageFolder data in {train_dir}: {exc}") from None
        size, pad, channels, classes = image_size, image_size // 8, 3, list(base.classes)
        train_idx, val_idx = _split_indices(len(base), val_size, seed, train_limit)
        mean, std = IMAGENET_MEAN, IMAGENET_STD
        test_dir = next((source.path / d for d in ("test", "val") if (source.path / d).is_dir()), None)
        make = lambda train, tf: make_if(train_dir if train else test_dir, tf)  # noqa: E731
    norm = [T.ToTensor(), T.Normalize(mean, std)]
    resize = [] if source.kind != "imagefolder" else [T.Resize(size), T.CenterCrop(size)]
    plain = T.Compose(resize + norm)
    crop_flip = [T.RandomCrop(size, padding=pad), T.RandomHorizontalFlip()] if policy != "none" else []
    erase = [T.RandomErasing(p=0.5)] if policy == "crop_flip_erase" else []
    aug = T.Compose(resize + crop_flip + norm + erase)
    has_test = source.kind != "imagefolder" or test_dir is not None
    test = make(False, plain) if has_test else None
    if test is not None and test_limit:
        test = Subset(test, range(min(test_limit, len(test))))
    log.info("%s: %d train / %d val / %s test images", source.kind, len(train_idx), len(val_idx),
             len(test) if test is not None else "no")
    return Splits(train=Subset(make(True, aug), train_idx), val=Subset(make(True, plain), val_idx), test=test,
                  in_channels=channels, num_classes=len(classes), classes=classes, mean=mean, std=std,
                  image_size=size, source={"kind": source.kind, "path": str(source.path), "val_size": val_size,
                                           "seed": seed, "train_limit": train_limit, "augment": policy})


def augmentation_policy(augment: bool | str) -> str:
    """Normalise an ``augment`` setting (a bool or a policy name) to one of :data:`AUGMENTATIONS`."""
    if isinstance(augment, bool):
        return "crop_flip" if augment else "none"
    if augment not in AUGMENTATIONS:
        raise ValueError(f"augment={augment!r} is not an augmentation policy; allowed: {list(AUGMENTATIONS)} "
                         "or true/false")
    return augment
