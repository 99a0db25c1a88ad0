"""Training data for supernets: Fashion-MNIST (idx ``.gz`` files), ImageFolder trees and CIFAR-10's
on-disk layout, with a held-out validation split taken from the training set.

All datasets are torchvision datasets; this module only locates the files, checks them, and builds the
splits and transforms. The validation split (for BN recalibration, accuracy-predictor data and search)
is a seeded random subset of the training set; the official test split is kept for final reporting.
"""

from __future__ import annotations

import contextlib
import gzip
import hashlib
import logging
import math
import os
import struct
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterator

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
# Training-split augmentation policies: random crop (zero padding), optionally with a horizontal flip (wrong
# for digits and text, so never the default), optionally followed by random erasing (a rectangle of 2-33% of
# the image set to the mean), which suits small grey images.
AUGMENTATIONS = ("none", "crop", "crop_flip", "crop_flip_erase")
DEFAULT_AUGMENT = "crop"
STATS_IMAGES = 2000  # ImageFolder: mean/std are computed on the first this many training images
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
        if not isinstance(self.path, (str, os.PathLike)) or not str(self.path).strip():
            raise ValueError(f"dataset path {self.path!r} must be a folder path")
        object.__setattr__(self, "path", Path(self.path).expanduser())

    @classmethod
    def parse(cls, text: str) -> "DataSource":
        """Parse ``--data``: ``fashion-mnist[:DIR]``, ``imagefolder:DIR``, ``cifar10:DIR`` or a bare ``DIR``.

        A bare directory is recognised by its content (idx files, ``cifar-10-batches-py``, or class folders).
        """
        if not isinstance(text, str) or not text.strip():
            raise ValueError(f"--data {text!r} is empty; allowed: fashion-mnist[:DIR], imagefolder:DIR, cifar10:DIR "
                             "or a directory")
        kind, sep, rest = text.partition(":")
        if sep and kind in KINDS:
            if not rest and kind != "fashion-mnist":
                raise ValueError(f"--data {text!r} needs a directory: {kind}:DIR")
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


def _split_indices(n: int, val_size: int | None, seed: int, train_limit: int | None) -> tuple[list[int], list[int]]:
    val_size = default_val_size(n) if val_size is None else val_size
    if not 0 < val_size < n:
        raise ValueError(f"val_size={val_size} must be between 1 and the training set size - 1 ({n - 1})")
    perm = torch.randperm(n, generator=torch.Generator().manual_seed(seed)).tolist()
    val, train = perm[:val_size], perm[val_size:]
    return (train[:train_limit] if train_limit else train), val


def _erase_masks(n: int, h: int, w: int, p: float = 0.5, scale: tuple[float, float] = (0.02, 0.33),
                 ratio: tuple[float, float] = (0.3, 3.3), attempts: int = 10) -> torch.Tensor:
    """Random-erasing masks ``(n, h, w)``, drawn as torchvision's ``RandomErasing`` draws them, vectorised.

    With probability ``p`` a rectangle of ``scale`` of the area and log-uniform aspect ``ratio`` is erased
    (set to 0, the mean after normalisation); the first of ``attempts`` draws that fits is used, none if
    none fits.
    """
    area = h * w * torch.empty(n, attempts).uniform_(*scale)
    aspect = torch.exp(torch.empty(n, attempts).uniform_(math.log(ratio[0]), math.log(ratio[1])))
    eh = torch.sqrt(area * aspect).round().long()
    ew = torch.sqrt(area / aspect).round().long()
    fits = (eh < h) & (ew < w)
    first = torch.argmax(fits.int(), dim=1)
    rows = torch.arange(n)
    eh, ew = eh[rows, first], ew[rows, first]
    erase = (torch.rand(n) < p) & fits.any(1)
    top = (torch.rand(n) * (h - eh + 1)).floor().long()
    left = (torch.rand(n) * (w - ew + 1)).floor().long()
    ys, xs = torch.arange(h)[None, :], torch.arange(w)[None, :]
    in_rows = (ys >= top[:, None]) & (ys < (top + eh)[:, None])
    in_cols = (xs >= left[:, None]) & (xs < (left + ew)[:, None])
    return erase[:, None, None] & in_rows[:, :, None] & in_cols[:, None, :]


class TensorImages(Dataset):
    """Labelled images held in memory as uint8 ``(N, H, W)`` or ``(N, H, W, C)``, prepared by tensor ops.

    Values equal torchvision's ``ToTensor`` + ``Normalize``; the training policies (zero-padded random crop,
    horizontal flip, random erasing) draw from torch's RNG like torchvision's. Skipping PIL makes a batch of
    Fashion-MNIST images many times cheaper to prepare (``benchmarks/RESULTS.md``).
    """

    def __init__(self, images: torch.Tensor, targets: Any, mean: tuple[float, ...], std: tuple[float, ...],
                 policy: str = "none", pad: int = 0):
        self.images = images if images.dim() == 4 else images.unsqueeze(-1)
        self.targets = torch.as_tensor(targets, dtype=torch.int64)
        self.mean = torch.tensor(mean, dtype=torch.float32).view(-1, 1, 1)
        self.std = torch.tensor(std, dtype=torch.float32).view(-1, 1, 1)
        self.policy, self.pad = augmentation_policy(policy), pad

    def __len__(self) -> int:
        return len(self.targets)

    def __getitem__(self, i: int) -> tuple[torch.Tensor, int]:
        return self.__getitems__([i])[0]

    def __getitems__(self, indices: list[int]) -> list[tuple[torch.Tensor, int]]:
        """A batch at once (the DataLoader calls this): the crop, flip and erase draws are vectorised."""
        idx = torch.as_tensor(indices, dtype=torch.int64)
        x = self.images[idx].permute(0, 3, 1, 2).float().div(255)  # N, C, H, W
        n, c, h, w = x.shape
        if self.policy != "none":
            p = self.pad
            padded = torch.nn.functional.pad(x, (p,) * 4)
            offset = torch.randint(0, (2 * p + 1) ** 2, (n,))  # (top, left) pair, uniform like RandomCrop
            for k in offset.unique().tolist():
                top, left = divmod(k, 2 * p + 1)
                sel = offset == k
                x[sel] = padded[sel, :, top:top + h, left:left + w]
            if self.policy != "crop":
                flip = torch.rand(n) < 0.5
                x[flip] = x[flip].flip(-1)
        x = (x - self.mean) / self.std
        if self.policy == "crop_flip_erase":
            x = x * ~_erase_masks(n, h, w)[:, None]
        return list(zip(x.contiguous().unbind(0), self.targets[idx].tolist()))


def default_val_size(n: int) -> int:
    """Validation images held out of ``n`` training images by default: 10%, at least 1, at most 5,000."""
    return max(1, min(5000, n // 10))


@contextlib.contextmanager
def _opened_image(path: str) -> Iterator[Any]:
    """A PIL image; an unreadable file (while opening or decoding it) is a one-line error naming it."""
    from PIL import Image

    try:
        with Image.open(path) as im:
            yield im
    except (OSError, ValueError, SyntaxError, Image.DecompressionBombError) as exc:
        raise ValueError(f"cannot read image {path}: {exc}") from None


class _ImageLoader:
    """Open an image file in one PIL mode (picklable, for DataLoader workers)."""

    def __init__(self, mode: str):
        self.mode = mode

    def __call__(self, path: str):
        with _opened_image(path) as im:
            return im.convert(self.mode)


def _imagefolder_format(samples: list[tuple[str, int]]) -> tuple[str, int]:
    """``(PIL mode, native size)`` of an ImageFolder's images, from the first few: grey if all are grey."""
    greys, sizes = [], []
    for path, _ in samples[:50]:
        with _opened_image(path) as im:
            greys.append(_is_grey(im))
            sizes.append(min(im.size))
    return ("L" if all(greys) else "RGB"), sizes[0]


def _is_grey(im: Any) -> bool:
    """Whether a PIL image holds grey values only: a grey mode (with or without alpha), or a palette whose
    colours are all grey (PNG encoders pick one for grey images with few levels)."""
    if im.mode in ("1", "L", "LA", "I", "I;16", "F"):
        return True
    if im.mode in ("P", "PA"):
        pal = im.getpalette() or []
        return all(pal[i] == pal[i + 1] == pal[i + 2] for i in range(0, len(pal) - 2, 3))
    return False


def _stats_of(dataset: Dataset, indices: list[int]) -> tuple[tuple[float, ...], tuple[float, ...]]:
    """Per-channel mean/std of ``dataset[i][0]`` (tensors in [0, 1]) over ``indices``."""
    xs = torch.stack([dataset[i][0] for i in indices])  # N, C, H, W
    flat = xs.transpose(0, 1).reshape(xs.shape[1], -1)
    return tuple(flat.mean(1).tolist()), tuple(flat.std(1).clamp_min(1e-3).tolist())


def _check_labels(root: Path, split: str, images: torch.Tensor, labels: torch.Tensor, classes: int) -> None:
    """An idx pair that belongs together: as many labels as images, every label a class index."""
    if len(images) != len(labels):
        raise ValueError(f"Fashion-MNIST in {root}: the {split} files hold {len(images)} images but {len(labels)} "
                         "labels; the pair must match")
    if len(labels) and not (int(labels.min()) >= 0 and int(labels.max()) < classes):
        raise ValueError(f"Fashion-MNIST in {root}: the {split} labels range {int(labels.min())}-{int(labels.max())}; "
                         f"allowed: 0 to {classes - 1}")


def load_splits(source: DataSource, val_size: int | None = None, seed: int = 0, train_limit: int | None = None,
                test_limit: int | None = None, image_size: int | None = None,
                augment: bool | str = DEFAULT_AUGMENT, preprocess: dict[str, Any] | None = None) -> Splits:
    """Build train/val/test datasets for ``source``.

    Args:
        source: Which dataset.
        val_size: Images held out of the training set for validation (default: :func:`default_val_size`).
        seed: Seed of the train/val split.
        train_limit: Keep only this many training images (tiny runs, tests).
        test_limit: Keep only the first this many test images.
        image_size: Image size for ImageFolder data (default: the first image's shorter side; images are
            resized and centre-cropped to it). Fashion-MNIST is 28, CIFAR-10 32.
        augment: Training-split augmentation, one of :data:`AUGMENTATIONS` (``True`` is ``crop_flip``,
            ``False`` is ``none``). ImageFolder data keeps its channels (grey images make a 1-channel
            model) and is normalised by the mean/std of its first :data:`STATS_IMAGES` training images.
        preprocess: A checkpoint's recorded preprocessing (:meth:`Splits.preprocessing`): its mean, std,
            channels and image size are used as recorded, so a trained model sees what it was trained on.
    """
    from torchvision import datasets
    from torchvision import transforms as T

    for name, v, low, top in (("val_size", val_size, 1, 2 ** 32), ("train_limit", train_limit, 1, 2 ** 32),
                              ("test_limit", test_limit, 1, 2 ** 32), ("image_size", image_size, 8, 2 ** 32),
                              ("seed", seed, 0, 2 ** 63)):  # seeds as TrainConfig allows them
        if v is None and name != "seed":
            continue
        if isinstance(v, bool) or not isinstance(v, int) or not low <= v < top:
            raise ValueError(f"{name}={v!r} must be an integer from {low} to {top - 1}")
    if preprocess is not None:
        need = ("mean", "std") + (("in_channels", "image_size") if source.kind == "imagefolder" else ())
        lacking = [k for k in need if k not in preprocess] if isinstance(preprocess, dict) else ["a dict"]
        if lacking:
            raise ValueError(f"preprocess record {str(preprocess)[:80]!r} lacks {lacking}; allowed: "
                             "Splits.preprocessing() output")
    policy = augmentation_policy(augment)
    if image_size is not None and source.kind != "imagefolder":
        raise ValueError(f"image_size={image_size} applies to ImageFolder data only; {source.kind} images have "
                         "their own size (28 or 32 px): drop [data] image_size (the space's resolutions set the "
                         "network's input sizes)")
    if source.kind == "fashion-mnist":
        root = fashion_mnist_root(source.path)
        base = datasets.FashionMNIST(str(root), train=True)
        size, pad, channels, classes = 28, 2, 1, list(base.classes)
        test_base = datasets.FashionMNIST(str(root), train=False)
        for split, ds in (("train", base), ("t10k", test_base)):
            _check_labels(root, split, ds.data, ds.targets, len(classes))
        arrays = {True: (base.data, base.targets), False: (test_base.data, test_base.targets)}
        n = len(base)
        train_idx, val_idx = _split_indices(n, val_size, seed, train_limit)
        mean, std = _channel_stats(base.data[train_idx])
    elif source.kind == "cifar10":
        if not (source.path / "cifar-10-batches-py").is_dir():
            raise ValueError(f"CIFAR-10 not found: {source.path} must contain cifar-10-batches-py/ "
                             "(torchvision's on-disk layout; downloads are not possible here)")
        # torchvision verifies every batch file's md5 against the official release before unpickling it.
        try:
            base = datasets.CIFAR10(str(source.path), train=True)
            test_base = datasets.CIFAR10(str(source.path), train=False)
        except RuntimeError as exc:
            raise ValueError(f"CIFAR-10 in {source.path} is incomplete or corrupted: {exc}") from None
        size, pad, channels, classes = 32, 4, 3, list(base.classes)
        arrays = {True: (torch.from_numpy(base.data), base.targets),
                  False: (torch.from_numpy(test_base.data), test_base.targets)}
        train_idx, val_idx = _split_indices(len(base), val_size, seed, train_limit)
        mean, std = _channel_stats(torch.from_numpy(base.data[train_idx]))
    else:
        train_dir = source.path / "train"
        if not train_dir.is_dir():
            raise ValueError(f"ImageFolder data needs {train_dir}/<class>/<image> (and optionally test/); "
                             f"{source.path} has no train/ folder")
        try:
            base = datasets.ImageFolder(str(train_dir))
        except (FileNotFoundError, RuntimeError) as exc:
            raise ValueError(f"cannot read ImageFolder data in {train_dir}: {exc}") from None
        mode, native = _imagefolder_format(base.samples)
        if preprocess:
            mode, image_size = ("L" if preprocess["in_channels"] == 1 else "RGB"), preprocess["image_size"]
        size = native if image_size is None else image_size
        pad, channels, classes = max(1, size // 8), 1 if mode == "L" else 3, list(base.classes)
        loader = _ImageLoader(mode)
        make_if = lambda d, tf: datasets.ImageFolder(str(d), transform=tf, loader=loader)  # noqa: E731
        train_idx, val_idx = _split_indices(len(base), val_size, seed, train_limit)
        stats_base = make_if(train_dir, T.Compose([T.Resize(size), T.CenterCrop(size), T.ToTensor()]))
        mean, std = ((tuple(preprocess["mean"]), tuple(preprocess["std"])) if preprocess
                     else _stats_of(stats_base, train_idx[:STATS_IMAGES]))
        test_dir = next((source.path / d for d in ("test", "val") if (source.path / d).is_dir()), None)
        make = lambda train, tf: make_if(train_dir if train else test_dir, tf)  # noqa: E731
    if source.kind == "imagefolder":
        norm = [T.ToTensor(), T.Normalize(mean, std)]
        resize = [T.Resize(size), T.CenterCrop(size)]
        plain = T.Compose(resize + norm)
        crop_flip = [T.RandomCrop(size, padding=pad)] if policy != "none" else []
        crop_flip += [T.RandomHorizontalFlip()] if policy.startswith("crop_flip") else []
        erase = [T.RandomErasing(p=0.5)] if policy == "crop_flip_erase" else []
        aug = T.Compose(resize + crop_flip + norm + erase)
    else:  # in memory: tensor ops, no PIL
        plain, aug = "none", policy
        make = lambda train, pol: TensorImages(*arrays[train], mean, std, pol, pad)  # noqa: E731
    has_test = source.kind != "imagefolder" or test_dir is not None
    test = make(False, plain) if has_test else None
    if test is not None and test_limit:
        test = Subset(test, range(min(test_limit, len(test))))
    log.info("%s: %d train / %d val / %s test images", source.kind, len(train_idx), len(val_idx),
             len(test) if test is not None else "no")
    return Splits(train=Subset(make(True, aug), train_idx), val=Subset(make(True, plain), val_idx), test=test,
                  in_channels=channels, num_classes=len(classes), classes=classes, mean=mean, std=std,
                  image_size=size, source={"kind": source.kind, "path": str(source.path), "val_size": len(val_idx),
                                           "seed": seed, "train_limit": train_limit, "augment": policy,
                                           "image_size": size})


def augmentation_policy(augment: bool | str) -> str:
    """Normalise an ``augment`` setting (a bool or a policy name) to one of :data:`AUGMENTATIONS`."""
    if isinstance(augment, bool):
        return "crop_flip" if augment else "none"
    if augment not in AUGMENTATIONS:
        raise ValueError(f"augment={augment!r} is not an augmentation policy; allowed: {list(AUGMENTATIONS)} "
                         "or true/false")
    return augment
