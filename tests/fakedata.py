"""Small synthetic datasets on disk in the real formats (idx .gz for Fashion-MNIST, PNG ImageFolder)."""

from __future__ import annotations

import gzip
import struct
from pathlib import Path

import numpy as np


def _images(n: int, size: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Learnable toy images: class k is a bright horizontal band at a class-specific height, plus noise."""
    rng = np.random.default_rng(seed)
    labels = (np.arange(n) % 10).astype(np.uint8)
    imgs = rng.integers(0, 60, size=(n, size, size)).astype(np.uint8)
    for i, k in enumerate(labels):
        row = 2 + int(k) * (size - 4) // 10
        imgs[i, row:row + 2, :] = 230
    return imgs, labels


def write_fmnist(root: Path, n_train: int = 256, n_test: int = 64) -> Path:
    """Write the four Fashion-MNIST idx ``.gz`` files with toy content; returns the folder."""
    root.mkdir(parents=True, exist_ok=True)
    for split, n, seed in (("train", n_train, 0), ("t10k", n_test, 1)):
        imgs, labels = _images(n, 28, seed)
        img_bytes = struct.pack(">IIII", 0x803, n, 28, 28) + imgs.tobytes()
        lab_bytes = struct.pack(">II", 0x801, n) + labels.tobytes()
        (root / f"{split}-images-idx3-ubyte.gz").write_bytes(gzip.compress(img_bytes))
        (root / f"{split}-labels-idx1-ubyte.gz").write_bytes(gzip.compress(lab_bytes))
    return root


def write_imagefolder(root: Path, n_train: int = 60, n_test: int = 20, size: int = 24, grey: bool = False) -> Path:
    """Write ``train/`` and ``test/`` class folders of RGB (or greyscale) PNGs; returns the root."""
    from PIL import Image

    for split, n, seed in (("train", n_train, 0), ("test", n_test, 1)):
        imgs, labels = _images(n, size, seed)
        for i, (img, k) in enumerate(zip(imgs, labels)):
            d = root / split / f"class{k}"
            d.mkdir(parents=True, exist_ok=True)
            Image.fromarray(img if grey else np.stack([img] * 3, -1)).save(d / f"{i}.png")
    return root
