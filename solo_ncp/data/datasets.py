"""Datasets that yield `(transform(image), label)` with `image` a PIL RGB picture.

With the default transform (`ToTensor`) samples are `(3, H, W)` float32 in [0, 1]: normalisation
always lives in the model (`solo_ncp.models.Normalize`), never here, because adversarial budgets
are stated in pixel space. Single-channel data (Fashion-MNIST, digits) is replicated to 3 channels
so every backbone, augmentation and checkpoint keeps the RGB layout of CIFAR/STL.
"""
import gzip
import importlib.util
import math
import os
import pickle
import zlib
from pathlib import Path
from typing import Callable, List, Optional, Sequence, Tuple

import numpy as np
from PIL import Image
from torch.utils.data import Dataset
from torchvision import transforms

from solo_ncp.data.custom import CUSTOM, CustomData, image_folder_dataset
from solo_ncp.data.registry import DatasetNotFoundError, get_spec

SPLITS = ("train", "test", "pretrain")
DEBIAN_FASHION_MNIST = Path("/usr/share/datasets/fashion-mnist")
DIGITS_TEST_EVERY = 5  # every 5th digit image is test data: a fixed, class-balanced 80/20 split
DATA_DIR_FLAG = "--data-dir"  # how the messages name the data folder option; config launchers rename it


class ArrayImageDataset(Dataset):
    """Images held in memory.

    images: (N, H, W) uint8 grayscale or (N, H, W, 3) uint8 RGB; labels: (N,) int.
    """

    def __init__(self, images: np.ndarray, labels: np.ndarray, transform: Optional[Callable]):
        if len(images) != len(labels):
            raise ValueError(f"{len(images)} images but {len(labels)} labels")
        self.images = images
        self.targets = labels.astype(np.int64)
        self.transform = transform

    def __len__(self) -> int:
        return len(self.images)

    def __getitem__(self, index: int):
        image = Image.fromarray(self.images[index]).convert("RGB")
        if self.transform is not None:
            image = self.transform(image)
        return image, int(self.targets[index])


class _RGB(Dataset):
    """Wraps a torchvision dataset so its images are PIL RGB before `transform` runs."""

    def __init__(self, dataset: Dataset, transform: Optional[Callable]):
        self.dataset = dataset
        self.transform = transform

    def __len__(self) -> int:
        return len(self.dataset)

    def __getitem__(self, index: int):
        image, label = self.dataset[index]
        image = image.convert("RGB")
        if self.transform is not None:
            image = self.transform(image)
        return image, int(label)


def _missing(name: str, root: Path, folder: str, files: Sequence[str], hint: str) -> None:
    where = root / folder if folder else root
    absent = [f for f in files if not (where / f).exists()]
    if absent:
        raise DatasetNotFoundError(
            f"dataset {name!r} not found: expected {', '.join(absent)} in {where}. {hint}"
        )


def _torchvision_hint(name: str, root: Path) -> str:
    extra = ", split='train+unlabeled'" if name == "stl10" else ""
    return (
        "Download it there on a machine with internet, e.g. `python -c \"import torchvision; "
        f"torchvision.datasets.{_TORCHVISION_CLASS[name]}('{root}'{extra}, download=True)\"`, "
        f"or pass {DATA_DIR_FLAG} pointing at the folder that holds it."
    )


_TORCHVISION_CLASS = {"cifar10": "CIFAR10", "cifar100": "CIFAR100", "stl10": "STL10"}


def _open(name: str, root: Path, factory: Callable[[], Dataset]) -> Dataset:
    """`factory()` (a torchvision dataset over `root`), with unreadable files (right names,
    wrong contents: torchvision's checksum or unpickling fails) reported as one error."""
    try:
        return factory()
    except (RuntimeError, pickle.UnpicklingError, EOFError, ValueError, OSError) as err:
        raise DatasetNotFoundError(
            f"dataset {name!r} under {root} is unreadable ({str(err).splitlines()[0]}): its files "
            f"have the expected names but not the expected contents. {_torchvision_hint(name, root)}"
        ) from None


def _cifar(name: str, root: Path, split: str, transform, download: bool) -> Dataset:
    from torchvision import datasets

    spec = get_spec(name)
    if not download:
        _missing(name, root, spec.folder, spec.files, _torchvision_hint(name, root))
    cls = getattr(datasets, _TORCHVISION_CLASS[name])
    return _RGB(_open(name, root, lambda: cls(str(root), train=split != "test", download=download)),
                transform)


STL10_SPLITS = {"train": ("train",), "test": ("test",), "pretrain": ("train", "unlabeled")}
"""The files (`<name>_X.bin`) each split of STL-10 reads, in torchvision's order."""


def _stl10(root: Path, split: str, transform, download: bool) -> Dataset:
    from torchvision.datasets import STL10

    spec = get_spec("stl10")
    if not download:
        _missing("stl10", root, spec.folder, spec.files, _torchvision_hint("stl10", root))
    stl_split = "+".join(STL10_SPLITS[split])
    return _RGB(_open("stl10", root, lambda: STL10(str(root), split=stl_split, download=download)),
                transform)


IDX_UBYTE = 0x08
"""The IDX type code of unsigned bytes, the third byte of every Fashion-MNIST file's magic number."""
FASHION_MNIST_FIX = (
    "download Fashion-MNIST's files again (the release's *-ubyte.gz, or `sudo apt-get install "
    f"--reinstall dataset-fashion-mnist`), or pass {DATA_DIR_FLAG} pointing at a folder of intact ones"
)


def _not_idx(path: Path, reason: str) -> DatasetNotFoundError:
    return DatasetNotFoundError(f"{path} is not a Fashion-MNIST IDX file ({reason}): {FASHION_MNIST_FIX}")


def _read_bytes(path: Path) -> bytes:
    """The content of `path`, gunzipped for a `.gz`; a damaged gzip is a DatasetNotFoundError."""
    opener = gzip.open if path.suffix == ".gz" else open
    try:
        with opener(path, "rb") as f:
            return f.read()
    except (EOFError, zlib.error, gzip.BadGzipFile) as err:  # truncated, damaged, no gzip at all
        raise _not_idx(path, f"{type(err).__name__}: {err}".rstrip(": ")) from None


def _read_idx(path: Path, ndim: int) -> np.ndarray:
    """An IDX file (MNIST format) of unsigned bytes with `ndim` dimensions, gzipped or not: its
    magic number is 0, 0, IDX_UBYTE, ndim and its size exactly the header plus the shape's bytes."""
    data = _read_bytes(path)
    magic = bytes([0, 0, IDX_UBYTE, ndim])
    if data[:4] != magic:
        raise _not_idx(path, f"magic number {data[:4].hex() or 'absent'} where {magic.hex()} belongs")
    header = 4 + 4 * ndim
    shape = tuple(int.from_bytes(data[4 + 4 * i: 8 + 4 * i], "big") for i in range(ndim))
    if len(data) < header or len(data) != header + math.prod(shape):
        raise _not_idx(path, f"{len(data)} bytes where a header of {ndim} sizes {shape} needs "
                             f"{header + math.prod(shape)}")
    return np.frombuffer(data, dtype=np.uint8, offset=header).reshape(shape)


def _idx_names(names: Sequence[str]) -> List[str]:
    """Each of Fashion-MNIST's file names, gzipped (`.gz`) or not."""
    return [n for name in names for n in (name, name[: -len(".gz")])]


def _fashion_mnist_root(data_dir: Optional[Path]) -> Path:
    """Finds the folder holding the four IDX files: --data-dir (flat, `fashion-mnist/` or
    torchvision's `FashionMNIST/raw/` layout), else Debian's dataset-fashion-mnist. A folder holding
    some of them is named with the files it lacks and the others it holds."""
    spec = get_spec("fashionmnist")
    candidates = (
        [data_dir, data_dir / spec.folder, data_dir / "FashionMNIST" / "raw"]
        if data_dir is not None
        else [DEBIAN_FASHION_MNIST]
    )

    def absent(folder: Path) -> List[str]:
        return [f for f in spec.files if not any((folder / n).exists() for n in _idx_names([f]))]

    folder = min(candidates, key=lambda c: len(absent(c)))
    missing = absent(folder)
    if not missing:
        return folder
    if len(missing) < len(spec.files):
        others = sorted(p.name for p in folder.iterdir()
                        if p.is_file() and p.name not in _idx_names(spec.files))
        raise DatasetNotFoundError(
            f"dataset 'fashionmnist' in {folder} lacks {', '.join(missing)} (or the same without "
            f".gz){'; other files there: ' + ', '.join(others[:5]) if others else ''}: give a "
            f"file that name, or {FASHION_MNIST_FIX}"
        )
    raise DatasetNotFoundError(
        f"dataset 'fashionmnist' not found: expected {', '.join(spec.files)} in "
        f"{' or '.join(str(c) for c in candidates)}. Install Debian's files with "
        "`sudo apt-get install dataset-fashion-mnist` (they land in "
        f"{DEBIAN_FASHION_MNIST}), or pass {DATA_DIR_FLAG} pointing at a folder that holds them."
    )


def _fashion_mnist(data_dir: Optional[Path], split: str, transform) -> Dataset:
    spec = get_spec("fashionmnist")
    root = _fashion_mnist_root(data_dir)
    prefix = "t10k" if split == "test" else "train"

    def path(kind: str) -> Path:
        gz = root / f"{prefix}-{kind}-idx{3 if kind == 'images' else 1}-ubyte.gz"
        return gz if gz.exists() else gz.with_suffix("")

    images, labels = _read_idx(path("images"), 3), _read_idx(path("labels"), 1)
    if images.shape[1:] != (spec.image_size,) * 2:
        raise _not_idx(path("images"), f"images of {images.shape[1]}x{images.shape[2]} pixels, "
                                       f"Fashion-MNIST's are {spec.image_size}x{spec.image_size}")
    if len(images) != len(labels):
        raise DatasetNotFoundError(
            f"{path('images')} holds {len(images)} images but {path('labels')} {len(labels)} labels: "
            f"the two files do not belong together: {FASHION_MNIST_FIX}"
        )
    return ArrayImageDataset(images, labels, transform)


def digits_arrays() -> Tuple[np.ndarray, np.ndarray]:
    """scikit-learn's digits as `load_digits` returns them: images (1797, 8, 8) float64 in 0..16,
    labels (1797,) int64. Read from the CSV file scikit-learn ships (64 pixels and the label per
    row), found without importing scikit-learn, whose import costs about 2 s in every process of
    a digits run (each reproduce step); through `load_digits` where that file is missing."""
    spec = importlib.util.find_spec("sklearn")
    csv = Path(spec.origin).parent / "datasets" / "data" / "digits.csv.gz" if spec and spec.origin else None
    if csv is None or not csv.is_file():
        from sklearn.datasets import load_digits

        digits = load_digits()
        return digits.images, digits.target
    with gzip.open(csv, "rt") as rows:
        table = np.loadtxt(rows, delimiter=",")
    return table[:, :-1].reshape(-1, 8, 8), table[:, -1].astype(np.int64)


def _digits(split: str, transform) -> Dataset:
    images, labels = digits_arrays()
    images = np.round(images * (255.0 / 16.0)).astype(np.uint8)
    is_test = np.arange(len(images)) % DIGITS_TEST_EVERY == 0
    keep = is_test if split == "test" else ~is_test
    return ArrayImageDataset(images[keep], labels[keep], transform)


class IndexedDataset(Dataset):
    """Prepends the sample index: `(index, x, y)`, the batch layout solo-learn's methods expect."""

    def __init__(self, dataset: Dataset):
        self.dataset = dataset

    def __len__(self) -> int:
        return len(self.dataset)

    def __getitem__(self, index: int):
        return (index, *self.dataset[index])


def default_data_dir() -> Path:
    """`$SOLO_NCP_DATA` if set, else `./datasets` (solo-learn's own default folder name)."""
    return Path(os.environ.get("SOLO_NCP_DATA", "datasets"))


def build_dataset(
    name: str,
    split: str,
    *,
    data_dir: Optional[os.PathLike] = None,
    transform: Optional[Callable] = None,
    download: bool = False,
    custom: Optional[CustomData] = None,
) -> Dataset:
    """Returns the `split` ("train", "test" or "pretrain") of dataset `name`.

    "pretrain" is the training set used for self-supervised stages: train for every dataset
    except STL-10, where it is train + unlabeled (105,000 images).
    transform: applied to the PIL RGB image; default `ToTensor()` -> (3, H, W) float32 in [0, 1].
    download: let torchvision fetch CIFAR/STL (needs internet); off by default so an offline
        run fails at once with the folder and files it expects.
    custom: the folders and image size of name "custom" (solo_ncp.data.custom), which has no
        `data_dir`: "train" and "pretrain" are its train_path, "test" its val_path.
    """
    if split not in SPLITS:
        raise ValueError(f"unknown split {split!r}: choose one of {', '.join(SPLITS)}")
    transform = transforms.ToTensor() if transform is None else transform
    if name == CUSTOM:
        if custom is None:
            raise ValueError(f"dataset {CUSTOM!r} needs its folders (CustomData)")
        return image_folder_dataset(custom.folder(split), custom.image_size, transform)
    spec = get_spec(name)
    given = Path(data_dir) if data_dir is not None else None
    if spec.name == "fashionmnist":
        return _fashion_mnist(given, split, transform)
    if spec.name == "digits":
        return _digits(split, transform)
    root = given if given is not None else default_data_dir()
    if spec.name == "stl10":
        return _stl10(root, split, transform, download)
    return _cifar(spec.name, root, split, transform, download)


def dataset_length(name: str, split: str, *, data_dir: Optional[os.PathLike] = None,
                   custom: Optional[CustomData] = None) -> int:
    """How many images `build_dataset` with these arguments holds, without decoding them where
    that is slow: STL-10 is counted from the sizes of its `*_X.bin` files (one 96x96x3 byte image
    after another; the pretraining split's 105,000 images take seconds to read). Raises as
    `build_dataset` does when the files are not there."""
    if name != "stl10":
        return len(build_dataset(name, split, data_dir=data_dir, custom=custom))
    spec = get_spec(name)
    root = Path(data_dir) if data_dir is not None else default_data_dir()
    _missing(name, root, spec.folder, spec.files, _torchvision_hint(name, root))
    image_bytes = spec.image_size * spec.image_size * 3
    return sum((root / spec.folder / f"{part}_X.bin").stat().st_size // image_bytes
               for part in STL10_SPLITS[split])
