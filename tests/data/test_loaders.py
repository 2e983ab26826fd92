"""Dataset loaders on the real shared files and on small files written here; their error messages."""
from __future__ import annotations

import gzip
import hashlib
import pickle
import struct
import time
from pathlib import Path

import numpy as np
import pytest
import torch

from curridistill.data import DATASETS, checksums
from curridistill.data import cifar, mnist
from curridistill.data.image_folder import ImageFolderStream, stream_batches
from curridistill.data.mnist import read_idx
from curridistill.errors import UserError

SHARED = Path(__file__).resolve().parents[2].parent / "shared" / "datasets"
CIFAR10_NAMES = ["airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck"]


@pytest.fixture(scope="module")
def shared_dir() -> Path:
    if not SHARED.is_dir():
        pytest.skip(f"{SHARED} is absent (CI provides ../shared/datasets beside the repo)")
    return SHARED


@pytest.fixture(scope="module")
def cifar10(shared_dir):
    start = time.perf_counter()
    train, test = DATASETS.get("cifar10")(shared_dir)  # npz layout, md5-verified
    return train, test, time.perf_counter() - start


def md5(path: Path) -> str:
    return hashlib.md5(path.read_bytes()).hexdigest()


def test_all_loaders_registered():
    for name in ("cifar10", "cifar100", "mnist", "fashion-mnist", "image-folder", "tensors", "digits"):
        assert name in DATASETS


# ------------------------------------------------------------------------------------------ CIFAR
def test_cifar10_real(cifar10, shared_dir):
    train, test, seconds = cifar10
    print(f"cifar10 npz load incl. md5: {seconds:.2f} s")
    assert train.x.shape == (50000, 3, 32, 32) and test.x.shape == (10000, 3, 32, 32)
    assert train.x.dtype == torch.uint8 and train.y.dtype == torch.int64
    assert train.x.is_contiguous()
    assert train.classes == CIFAR10_NAMES and test.classes == CIFAR10_NAMES
    assert torch.bincount(train.y).tolist() == [5000] * 10
    assert torch.bincount(test.y).tolist() == [1000] * 10
    # per-channel training mean (README: 0.49139968, 0.48215841, 0.44653091) proves CHW order and RGB
    mean = (train.x.numpy().sum(axis=(0, 2, 3), dtype=np.int64) / (50000 * 32 * 32 * 255)).tolist()
    assert mean == pytest.approx([0.49139968, 0.48215841, 0.44653091], abs=1e-7)
    # both files were hashed once and are cached by (path, size, mtime)
    cached = {Path(k[0]).name for k in checksums._MD5_CACHE}
    assert {"cifar10-train.npz", "cifar10-test.npz"} <= cached


def test_cifar10_layout_search(shared_dir):
    folder = shared_dir / "cifar10"
    assert cifar._find(shared_dir, cifar.CIFAR10) == ("npz", folder)
    assert cifar._find(folder, cifar.CIFAR10) == ("npz", folder)
    assert cifar._find(shared_dir, cifar.CIFAR100) is None


def test_cifar_missing_files_message(tmp_path):
    with pytest.raises(UserError) as err:
        DATASETS.get("cifar10")(tmp_path)
    msg = str(err.value)
    assert str(tmp_path) in msg and "data.root" in msg and "download: true" in msg and "\n" not in msg
    with pytest.raises(UserError, match="data.root is not set"):
        DATASETS.get("cifar100")(None)


def test_cifar_truncated_npz_names_file_and_md5(tmp_path, shared_dir):
    folder = tmp_path / "cifar10"
    folder.mkdir()
    for name in ("cifar10-train.npz", "cifar10-test.npz"):
        with open(shared_dir / "cifar10" / name, "rb") as src, open(folder / name, "wb") as dst:
            dst.write(src.read(1 << 20))  # a copy cut short
    with pytest.raises(UserError) as err:
        DATASETS.get("cifar10")(tmp_path)
    msg = str(err.value)
    assert str(folder / "cifar10-train.npz") in msg
    assert "expected c91380e9d2bc8c82c7a6e6e80e21134b" in msg and "corrupt or truncated" in msg
    # without verification the damage still surfaces as a one-line UserError
    with pytest.raises(UserError, match="cannot read"):
        DATASETS.get("cifar10")(tmp_path, verify=False)


def test_verify_message(tmp_path):
    f = tmp_path / "file.bin"
    f.write_bytes(b"abc")
    checksums.verify(f, "900150983cd24fb0d6963f7d28e17f72")
    with pytest.raises(UserError) as err:
        checksums.verify(f, "0" * 32)
    assert str(err.value) == (f"corrupt or truncated file {f}: md5 900150983cd24fb0d6963f7d28e17f72, expected "
                              f"{'0' * 32}; delete it and download again (or restore it)")
    f.write_bytes(b"abcd")  # a changed file is hashed again (size/mtime key)
    assert checksums.md5sum(f) == hashlib.md5(b"abcd").hexdigest()


def _chw_images(n: int, seed: int) -> np.ndarray:
    """Images whose R, G, B planes hold distinct constant values, so CHW order is checkable."""
    rng = np.random.default_rng(seed)
    x = np.empty((n, 3, 32, 32), dtype=np.uint8)
    x[:, 0], x[:, 1], x[:, 2] = 10, 20, 30
    x[:, :, 0, 0] = rng.integers(0, 256, (n, 3))
    return x


def _write_pickle(path: Path, obj) -> None:
    with open(path, "wb") as f:
        pickle.dump(obj, f, protocol=2)


def write_cifar100(root: Path, n_train: int = 40, n_test: int = 20) -> Path:
    folder = root / "cifar-100-python"
    folder.mkdir(parents=True)
    for name, n in (("train", n_train), ("test", n_test)):
        fine = np.arange(n) % 100
        _write_pickle(folder / name, {b"filenames": [b"x.png"] * n, b"batch_label": b"b",
                                      b"fine_labels": fine.tolist(), b"coarse_labels": (fine // 5).tolist(),
                                      b"data": _chw_images(n, 1).reshape(n, -1)})
    _write_pickle(folder / "meta", {b"fine_label_names": [f"fine{i}".encode() for i in range(100)],
                                    b"coarse_label_names": [f"coarse{i}".encode() for i in range(20)]})
    return folder


def test_cifar100_official_layout(tmp_path, monkeypatch):
    folder = write_cifar100(tmp_path)
    train, test = DATASETS.get("cifar100")(tmp_path, verify=False)
    assert train.x.shape == (40, 3, 32, 32) and test.x.shape == (20, 3, 32, 32) and train.x.dtype == torch.uint8
    assert train.classes[:2] == ["fine0", "fine1"] and len(train.classes) == 100
    assert train.y.tolist() == list(range(40))
    assert train.x[:, 0, 5, 5].eq(10).all() and train.x[:, 1, 5, 5].eq(20).all() and train.x[:, 2, 5, 5].eq(30).all()
    coarse, _ = DATASETS.get("cifar100")(tmp_path, verify=False, labels="coarse")
    assert len(coarse.classes) == 20 and coarse.y.tolist() == [i // 5 for i in range(40)]
    with pytest.raises(UserError, match="labels"):
        DATASETS.get("cifar100")(tmp_path, labels="medium")
    # with verification, these files fail against the official md5s ...
    with pytest.raises(UserError) as err:
        DATASETS.get("cifar100")(tmp_path)
    assert "corrupt or truncated" in str(err.value) and "16019d7e3df5f24257cddd939b257f8d" in str(err.value)
    # ... and pass once the table lists theirs
    for name in ("train", "test", "meta"):
        monkeypatch.setitem(cifar.CIFAR100_MD5, name, md5(folder / name))
    train2, _ = cifar.load_cifar100(tmp_path / "cifar-100-python")
    assert torch.equal(train2.x, train.x)


def test_cifar10_official_layout(tmp_path, monkeypatch):
    folder = tmp_path / "cifar10" / "cifar-10-batches-py"
    folder.mkdir(parents=True)
    names = [f"data_batch_{i}" for i in range(1, 6)] + ["test_batch"]
    for i, name in enumerate(names):
        _write_pickle(folder / name, {b"labels": [(i + j) % 10 for j in range(6)],
                                      b"data": _chw_images(6, i).reshape(6, -1)})
    _write_pickle(folder / "batches.meta", {b"label_names": [n.encode() for n in CIFAR10_NAMES]})
    monkeypatch.setitem(cifar.CIFAR10_MD5, "batches.meta", md5(folder / "batches.meta"))
    for name in names:
        monkeypatch.setitem(cifar.CIFAR10_MD5, name, md5(folder / name))
    train, test = DATASETS.get("cifar10")(tmp_path)  # verified against the patched table
    assert train.x.shape == (30, 3, 32, 32) and test.x.shape == (6, 3, 32, 32)
    assert train.classes == CIFAR10_NAMES and test.y.tolist() == [(5 + j) % 10 for j in range(6)]
    (folder / "data_batch_3").unlink()
    with pytest.raises(UserError, match="data_batch_3"):
        DATASETS.get("cifar10")(tmp_path)


# ------------------------------------------------------------------------------------------ MNIST
def test_read_idx_real_mnist_test_set(shared_dir):
    images = read_idx(shared_dir / "mnist" / "t10k-images-idx3-ubyte.gz")
    labels = read_idx(shared_dir / "mnist" / "t10k-labels-idx1-ubyte.gz")
    assert images.shape == (10000, 28, 28) and images.dtype == np.uint8
    assert labels.shape == (10000,) and labels.dtype == np.uint8
    assert np.bincount(labels).tolist() == [980, 1135, 1032, 1010, 982, 892, 958, 1028, 974, 1009]
    assert images.max() == 255 and images.min() == 0
    checksums.verify(shared_dir / "mnist" / "t10k-images-idx3-ubyte.gz", mnist.MNIST_MD5["t10k-images-idx3-ubyte.gz"])
    fashion = read_idx(shared_dir / "fashion-mnist" / "train-labels-idx1-ubyte.gz")
    assert np.bincount(fashion).tolist() == [6000] * 10


def test_mnist_on_shared_folder_names_missing_training_images(shared_dir):
    with pytest.raises(UserError) as err:
        DATASETS.get("mnist")(shared_dir)
    assert "train-images-idx3-ubyte.gz" in str(err.value) and str(shared_dir / "mnist") in str(err.value)
    with pytest.raises(UserError, match="train-images-idx3-ubyte"):
        DATASETS.get("fashion-mnist")(shared_dir)


def idx_bytes(arr: np.ndarray) -> bytes:
    code = {np.dtype(np.uint8): 0x08, np.dtype(">i4"): 0x0C, np.dtype(">f4"): 0x0D}[arr.dtype]
    return bytes([0, 0, code, arr.ndim]) + struct.pack(f">{arr.ndim}I", *arr.shape) + arr.tobytes()


def write_mnist(folder: Path, n_train: int = 30, n_test: int = 10, compress: bool = True) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(0)
    for prefix, n in (("train", n_train), ("t10k", n_test)):
        for kind, arr in (("images-idx3-ubyte", rng.integers(0, 256, (n, 28, 28), dtype=np.uint8)),
                          ("labels-idx1-ubyte", (np.arange(n) % 10).astype(np.uint8))):
            data = idx_bytes(arr)
            name = f"{prefix}-{kind}"
            if compress:
                (folder / f"{name}.gz").write_bytes(gzip.compress(data))
            else:
                (folder / name).write_bytes(data)


@pytest.mark.parametrize("compress", [True, False])
def test_mnist_loader_on_written_idx(tmp_path, compress):
    write_mnist(tmp_path / "MNIST" / "raw", compress=compress)
    train, test = DATASETS.get("mnist")(tmp_path, verify=False)
    assert train.x.shape == (30, 1, 28, 28) and test.x.shape == (10, 1, 28, 28) and train.x.dtype == torch.uint8
    assert train.classes == [str(i) for i in range(10)] and test.y.tolist() == list(range(10))
    assert torch.equal(train.x[:, 0], torch.from_numpy(read_idx(next((tmp_path / "MNIST" / "raw").glob("train-images*")))))
    if compress:  # the written .gz files are not the published ones
        with pytest.raises(UserError, match="corrupt or truncated"):
            DATASETS.get("mnist")(tmp_path)
    else:  # uncompressed files have no reference md5: nothing to check
        DATASETS.get("mnist")(tmp_path)


def test_fashion_mnist_classes(tmp_path):
    write_mnist(tmp_path / "fashion-mnist")
    train, _ = DATASETS.get("fashion-mnist")(tmp_path, verify=False)
    assert train.classes[0] == "T-shirt/top" and train.classes[9] == "Ankle boot"
    with pytest.raises(UserError, match="not found"):  # MNIST looks in its own folders, not fashion-mnist/
        DATASETS.get("mnist")(tmp_path)


def test_read_idx_rejects_bad_files(tmp_path):
    good = idx_bytes(np.arange(24, dtype=np.uint8).reshape(2, 3, 4))
    (tmp_path / "ok").write_bytes(good)
    assert read_idx(tmp_path / "ok").shape == (2, 3, 4)
    wide = np.arange(6, dtype=">i4").reshape(2, 3)
    (tmp_path / "wide").write_bytes(idx_bytes(wide))
    got = read_idx(tmp_path / "wide")
    assert got.tolist() == wide.tolist() and got.dtype.isnative
    (tmp_path / "short").write_bytes(good[:-3])
    with pytest.raises(UserError, match="truncated"):
        read_idx(tmp_path / "short")
    (tmp_path / "junk").write_bytes(b"hello world")
    with pytest.raises(UserError, match="not an idx file"):
        read_idx(tmp_path / "junk")
    (tmp_path / "bad.gz").write_bytes(gzip.compress(good)[:-10])
    with pytest.raises(UserError, match="bad.gz"):
        read_idx(tmp_path / "bad.gz")


# ----------------------------------------------------------------------------------- image folder
COLORS = {"blue": (0, 0, 255), "green": (0, 200, 0), "red": (255, 0, 0)}


def write_images(folder: Path, per_class: dict[str, int], size=(12, 10)) -> None:
    from PIL import Image

    for cls, n in per_class.items():
        d = folder / cls
        d.mkdir(parents=True, exist_ok=True)
        for i in range(n):
            img = Image.new("RGB", size, COLORS[cls])
            if i % 3 == 1:
                img.convert("RGBA").save(d / f"{i}.png")
            elif i % 3 == 2:
                img.save(d / f"{i}.jpg", quality=95)
            else:
                img.save(d / f"{i}.png")
        (d / "notes.txt").write_text("not an image")


def test_image_folder_train_test(tmp_path):
    write_images(tmp_path / "imgs" / "train", {"red": 4, "green": 3, "blue": 5})
    write_images(tmp_path / "imgs" / "test", {"red": 2, "blue": 1})
    train, test = DATASETS.get("image-folder")(tmp_path, path="imgs", image_size=8)
    assert train.classes == ["blue", "green", "red"] and test.classes == train.classes
    assert train.x.shape == (12, 3, 8, 8) and train.x.dtype == torch.uint8 and test.x.shape == (3, 3, 8, 8)
    assert torch.bincount(train.y).tolist() == [5, 3, 4] and sorted(test.y.tolist()) == [0, 2, 2]
    for x, y in zip(train.x, train.y):  # solid colours survive decoding and resizing (jpg within a few levels)
        expect = torch.tensor(COLORS[train.classes[int(y)]]).view(3, 1, 1)
        assert (x.int() - expect).abs().max() <= 3
    grey, _ = DATASETS.get("image-folder")(tmp_path / "imgs", image_size=[6, 4], grayscale=True)
    assert grey.x.shape == (12, 1, 6, 4)


def test_image_folder_without_test_dir_splits_stratified(tmp_path):
    write_images(tmp_path / "train", {"red": 10, "green": 10})
    train, test = DATASETS.get("image-folder")(tmp_path, test_fraction=0.3, image_size=4)
    assert len(train) == 14 and len(test) == 6
    assert torch.bincount(test.y).tolist() == [3, 3]
    again, _ = DATASETS.get("image-folder")(tmp_path, test_fraction=0.3, image_size=4)
    assert torch.equal(again.x, train.x)


def test_image_folder_errors(tmp_path):
    with pytest.raises(UserError, match="needs a folder"):
        DATASETS.get("image-folder")(None)
    with pytest.raises(UserError, match="not found"):
        DATASETS.get("image-folder")(tmp_path, path="nowhere")
    write_images(tmp_path / "train", {"red": 2})
    (tmp_path / "train" / "red" / "broken.png").write_bytes(b"\x89PNG not really")
    with pytest.raises(UserError, match="broken.png"):
        DATASETS.get("image-folder")(tmp_path, image_size=4)
    with pytest.raises(UserError, match="image_size"):
        DATASETS.get("image-folder")(tmp_path, image_size="big")


def test_image_folder_stream_matches_in_memory(tmp_path):
    write_images(tmp_path / "train", {"red": 3, "green": 2, "blue": 4})
    write_images(tmp_path / "test", {"red": 1, "green": 1, "blue": 1})
    train, _ = DATASETS.get("image-folder")(tmp_path, image_size=8)
    stream = ImageFolderStream(tmp_path / "train", image_size=8)
    assert len(stream) == 9 and stream.classes == train.classes and stream.image_shape == (3, 8, 8)
    x0, y0 = stream[0]
    assert x0.dtype == torch.uint8 and x0.shape == (3, 8, 8) and isinstance(y0, int)
    xs, ys = zip(*stream_batches(stream, batch_size=4))
    assert [len(b) for b in xs] == [4, 4, 1] and xs[0].dtype == torch.uint8
    assert torch.equal(torch.cat(xs), train.x) and torch.equal(torch.cat(ys), train.y)
    batches = list(stream_batches(stream, batch_size=4, shuffle=True, seed=1, with_indices=True))
    idx = torch.cat([b[2] for b in batches])
    assert sorted(idx.tolist()) == list(range(9))
    assert torch.equal(torch.cat([b[0] for b in batches]), train.x[idx])
    again = torch.cat([b[2] for b in stream_batches(stream, batch_size=4, shuffle=True, seed=1, with_indices=True)])
    assert torch.equal(idx, again)
    test_stream = ImageFolderStream(tmp_path / "test", image_size=8, classes=stream.classes)
    assert test_stream.targets.tolist() == [0, 1, 2]


# ---------------------------------------------------------------------------------------- tensors
def test_tensors_two_files_nhwc(tmp_path):
    rng = np.random.default_rng(0)
    x = rng.integers(0, 256, (20, 5, 6, 3), dtype=np.uint8)
    np.savez(tmp_path / "train.npz", x=x, y=np.arange(20) % 4, classes=np.array(["a", "b", "c", "d"]))
    np.savez(tmp_path / "test.npz", x=x[:8], y=np.arange(8) % 4)
    train, test = DATASETS.get("tensors")(tmp_path, path="train.npz", test_path=str(tmp_path / "test.npz"))
    assert train.x.shape == (20, 3, 5, 6) and train.x.dtype == torch.uint8
    assert torch.equal(train.x, torch.from_numpy(x).permute(0, 3, 1, 2))
    assert train.classes == ["a", "b", "c", "d"] and test.classes == train.classes and len(test) == 8


def test_tensors_single_file_and_features(tmp_path):
    np.savez(tmp_path / "all.npz", x_train=np.random.rand(30, 7).astype(np.float64), y_train=np.arange(30) % 3,
             x_test=np.random.rand(9, 7), y_test=np.arange(9) % 3)
    train, test = DATASETS.get("tensors")(None, path=str(tmp_path / "all.npz"))
    assert train.x.shape == (30, 7) and train.x.dtype == torch.float32 and train.classes == ["0", "1", "2"]
    np.savez(tmp_path / "grey.npz", x=np.zeros((40, 1, 4, 4), np.uint8), y=np.arange(40) % 2)
    tr, te = DATASETS.get("tensors")(tmp_path, path="grey.npz", test_fraction=0.25)
    assert tr.x.shape == (30, 1, 4, 4) and len(te) == 10 and torch.bincount(te.y).tolist() == [5, 5]


@pytest.mark.parametrize("arrays,match", [
    (dict(x=np.zeros((5, 8, 8, 3), np.uint8), y=np.zeros(4, np.int64)), "x has 5 samples but y has 4"),
    (dict(x=np.zeros((5, 2, 2, 2, 2), np.uint8), y=np.zeros(5, np.int64)), "expected"),
    (dict(x=np.zeros((5, 3, 8, 3), np.uint8), y=np.zeros(5, np.int64)), "layout"),
    (dict(x=np.full((5, 4, 4), 300, np.int32), y=np.zeros(5, np.int64)), "uint8"),
    (dict(x=np.zeros((5, 4)), y=np.full(5, -1)), "negative"),
    (dict(x=np.zeros((5, 4)), y=np.full(5, 0.5)), "non-integer"),
    (dict(x=np.zeros((5, 4)), y=np.zeros(5, np.int64), classes=np.array(["a"]), x_extra=np.zeros(1)), None),
    (dict(features=np.zeros((5, 4))), "keys"),
])
def test_tensors_bad_files(tmp_path, arrays, match):
    np.savez(tmp_path / "d.npz", **arrays)
    if match is None:  # a valid file (extra keys are ignored)
        DATASETS.get("tensors")(tmp_path, path="d.npz", test_fraction=0.4)
        return
    np.savez(tmp_path / "t.npz", **arrays)  # a test file as bad as the training file
    with pytest.raises(UserError, match=match) as err:
        DATASETS.get("tensors")(tmp_path, path="d.npz", test_path="t.npz")
    assert "\n" not in str(err.value)


@pytest.mark.parametrize("arrays, options, match", [
    (dict(x=np.zeros((6, 4)), y=np.arange(6) % 2), dict(test_path="d.npz"), "test_path is the training file"),
    (dict(x=np.zeros((6, 4)), y=np.arange(6) % 2), dict(test_path="t.npz", test_fraction=0.5),
     "test_path and test_fraction both"),
    (dict(x_train=np.zeros((6, 4)), y_train=np.arange(6) % 2, x_test=np.zeros((2, 4)), y_test=np.arange(2)),
     dict(test_fraction=0.5), "already holds x_test/y_test; remove data.options.test_path and test_fraction"),
    (dict(x=np.zeros((6, 4)), y=np.arange(6) % 2), dict(test_fraction=0.5, split_seed="abc"),
     "split_seed is 'abc'; give an integer"),
    (dict(x=np.full((6, 4), 1e300), y=np.arange(6) % 2), dict(test_fraction=0.5), "beyond float32's range"),
    (dict(x=np.zeros((6, 4)), y=np.full(6, 1e30)), dict(test_fraction=0.5), "a label of 1e\\+30"),
    (dict(x=np.zeros((6, 4)), y=np.array([0, 1, 0, 1, 0, 2**40])), dict(test_fraction=0.5),
     "labels go up to 1099511627776 with only 6 samples"),
    (dict(x=np.zeros((6, 4)), y=np.arange(6) % 2, classes=np.array(["pos", "neg", "pos"])), dict(test_fraction=0.5),
     "'pos' appear twice in classes"),
    (dict(x=np.zeros((6, 4, 4)), y=np.arange(6) % 2), dict(test_fraction=0.5, layout="xyz"), "layout is 'xyz'"),
])
def test_tensors_test_split_and_value_checks(tmp_path, arrays, options, match):
    np.savez(tmp_path / "d.npz", **arrays)
    np.savez(tmp_path / "t.npz", **arrays)
    with pytest.raises(UserError, match=match) as err:
        DATASETS.get("tensors")(tmp_path, path="d.npz", **options)
    assert "\n" not in str(err.value)


def test_tensors_missing_and_unreadable(tmp_path):
    with pytest.raises(UserError, match="needs data.options.path"):
        DATASETS.get("tensors")(tmp_path)
    with pytest.raises(UserError, match="not found"):
        DATASETS.get("tensors")(tmp_path, path="missing.npz")
    (tmp_path / "bad.npz").write_bytes(b"PK\x03\x04 truncated")
    with pytest.raises(UserError, match="cannot read"):
        DATASETS.get("tensors")(tmp_path, path="bad.npz", test_path="bad.npz")
    np.savez(tmp_path / "one.npz", x=np.zeros((4, 2)), y=np.zeros(4, np.int64))
    with pytest.raises(UserError, match="test_path"):
        DATASETS.get("tensors")(tmp_path, path="one.npz")


def test_tensors_through_load_splits(tmp_path):
    from curridistill.config import DataConfig
    from curridistill.data.pipeline import load_splits

    np.savez(tmp_path / "d.npz", x_train=np.random.randint(0, 255, (50, 6, 6, 3), dtype=np.uint8),
             y_train=np.arange(50) % 5, x_test=np.zeros((10, 6, 6, 3), np.uint8), y_test=np.arange(10) % 5)
    splits = load_splits(DataConfig(name="tensors", root=str(tmp_path), options={"path": "d.npz"}, val_size=0.2))
    assert splits.input_shape == (3, 6, 6) and len(splits.val) == 10 and len(splits.test) == 10
    with pytest.raises(UserError, match="not accepted"):
        load_splits(DataConfig(name="tensors", root=str(tmp_path), options={"path": "d.npz", "colour": 1}))
