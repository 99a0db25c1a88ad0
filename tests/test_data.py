"""Training data: --data parsing, Fashion-MNIST idx files, ImageFolder, CIFAR-10 errors, splits."""

from __future__ import annotations

import gzip

import pytest
import torch

from elastic.training.data import FMNIST_DIR, DataSource, augmentation_policy, load_splits
from tests.fakedata import write_fmnist, write_imagefolder


@pytest.fixture(autouse=True)
def _cache(tmp_path, monkeypatch):
    monkeypatch.setenv("OFAKIT_CACHE", str(tmp_path / "cache"))


def test_parse_data_argument(tmp_path):
    assert DataSource.parse("fashion-mnist") == DataSource("fashion-mnist", FMNIST_DIR)
    assert DataSource.parse(f"cifar10:{tmp_path}") == DataSource("cifar10", tmp_path)
    fm = write_fmnist(tmp_path / "fm")
    assert DataSource.parse(str(fm)).kind == "fashion-mnist"
    (tmp_path / "c" / "cifar-10-batches-py").mkdir(parents=True)
    assert DataSource.parse(str(tmp_path / "c")).kind == "cifar10"
    assert DataSource.parse(str(write_imagefolder(tmp_path / "if", 10, 0))).kind == "imagefolder"
    with pytest.raises(ValueError, match="neither a dataset name"):
        DataSource.parse(str(tmp_path / "nope"))
    with pytest.raises(ValueError, match="needs a directory: imagefolder:DIR"):
        DataSource.parse("imagefolder")


def test_fashion_mnist_splits(tmp_path):
    src = write_fmnist(tmp_path / "fm", n_train=100, n_test=30)
    s = load_splits(DataSource("fashion-mnist", src), val_size=20, seed=1)
    assert (len(s.train), len(s.val), len(s.test)) == (80, 20, 30)
    assert set(s.train.indices).isdisjoint(s.val.indices)
    x, y = s.val[0]
    assert x.shape == (1, 28, 28) and 0 <= y < 10 and s.in_channels == 1 and s.num_classes == 10
    raw = torch.cat([s.val.dataset.images[i].float().flatten() / 255 for i in s.train.indices])
    assert abs(s.mean[0] - raw.mean().item()) < 1e-6 and abs(s.std[0] - raw.std().item()) < 1e-4
    pre = s.preprocessing()
    assert pre["mean"] == list(s.mean) and pre["image_size"] == 28 and pre["classes"][0] == "T-shirt/top"
    again = load_splits(DataSource("fashion-mnist", src), val_size=20, seed=1, train_limit=16)
    assert again.val.indices == s.val.indices and len(again.train) == 16


def test_augmentation_policies(tmp_path):
    src = DataSource("fashion-mnist", write_fmnist(tmp_path / "fm", n_train=100, n_test=10))
    assert (augmentation_policy(True), augmentation_policy(False)) == ("crop_flip", "none")
    with pytest.raises(ValueError, match="augment='mixup' is not an augmentation policy; allowed"):
        load_splits(src, val_size=20, augment="mixup")
    with pytest.raises(ValueError, match="image_size=32 applies to ImageFolder data only; fashion-mnist"):
        load_splits(src, val_size=20, image_size=32)  # would be ignored: Fashion-MNIST is 28 px

    def draws(policy):
        s = load_splits(src, val_size=20, augment=policy)
        assert s.source["augment"] == policy
        i = s.train.indices[0]
        return s.val.dataset[i][0], [s.train[0][0] for _ in range(40)]

    plain, same = draws("none")
    assert all(torch.equal(x, plain) for x in same)
    plain, moved = draws("crop_flip")
    assert any(not torch.equal(x, plain) for x in moved) and all((x == 0).sum() < 9 for x in moved)
    _, erased = draws("crop_flip_erase")  # half the time a rectangle (2-33% of the image) is set to the mean: 0
    assert 5 <= sum((x == 0).sum() >= 9 for x in erased) <= 35


def test_fashion_mnist_errors(tmp_path):
    with pytest.raises(ValueError, match="apt-get install dataset-fashion-mnist"):
        load_splits(DataSource("fashion-mnist", tmp_path / "missing"))
    src = write_fmnist(tmp_path / "bad")
    (src / "train-labels-idx1-ubyte.gz").write_bytes(b"not gzip at all")
    with pytest.raises(ValueError, match="cannot decompress .*train-labels"):
        load_splits(DataSource("fashion-mnist", src))
    (src / "train-labels-idx1-ubyte.gz").write_bytes(gzip.compress(b"\x00\x00\x08\x03" + b"\x00" * 8))
    with pytest.raises(ValueError, match="bad header"):
        load_splits(DataSource("fashion-mnist", src))
    (src / "train-labels-idx1-ubyte.gz").write_bytes(gzip.compress(b"\x00\x00\x08\x01\x00\x00\x01\x00" + b"\x01" * 3))
    with pytest.raises(ValueError, match="truncated or malformed"):
        load_splits(DataSource("fashion-mnist", src))
    with pytest.raises(ValueError, match="val_size=500 must be between 1"):
        load_splits(DataSource("fashion-mnist", write_fmnist(tmp_path / "ok", 100, 10)), val_size=500)


def test_imagefolder_and_cifar(tmp_path):
    root = write_imagefolder(tmp_path / "if", n_train=40, n_test=10, size=20)
    s = load_splits(DataSource("imagefolder", root), val_size=10, image_size=16)
    assert s.in_channels == 3 and s.num_classes == 10 and len(s.test) == 10
    assert s.train[0][0].shape == (3, 16, 16)
    with pytest.raises(ValueError, match="has no train/ folder"):
        load_splits(DataSource("imagefolder", tmp_path))
    with pytest.raises(ValueError, match="must contain cifar-10-batches-py"):
        load_splits(DataSource("cifar10", tmp_path))
    (tmp_path / "c" / "cifar-10-batches-py").mkdir(parents=True)
    with pytest.raises(ValueError, match="incomplete or corrupted"):
        load_splits(DataSource("cifar10", tmp_path / "c"))
