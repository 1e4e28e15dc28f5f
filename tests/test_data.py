import gzip
import importlib.util
from types import SimpleNamespace

import numpy as np
import pytest
import torch
from PIL import Image
from torchvision import transforms

from solo_ncp.data import (
    DATASETS,
    DatasetNotFoundError,
    IndexedDataset,
    build_dataset,
    get_spec,
    normalization_of,
    simclr_transform,
    weak_augmentation,
)
from solo_ncp.data.datasets import dataset_length, digits_arrays
from tests.conftest import needs_fashion_mnist
from tests.test_two_hosts import only_solo_102


def _check_split(dataset, size, num_classes):
    x, y = dataset[0]
    assert x.shape == (3, size, size) and x.dtype == torch.float32
    batch = torch.stack([dataset[i][0] for i in range(0, len(dataset), max(1, len(dataset) // 64))])
    assert batch.min() >= 0.0 and batch.max() <= 1.0 and batch.max() > 0.5
    labels = {dataset[i][1] for i in range(0, len(dataset), max(1, len(dataset) // 500))}
    assert labels == set(range(num_classes))


def test_digits_splits_are_disjoint_and_in_unit_range():
    train, test = build_dataset("digits", "train"), build_dataset("digits", "test")
    assert (len(train), len(test)) == (1437, 360)
    _check_split(train, 8, 10)
    _check_split(test, 8, 10)
    assert len(build_dataset("digits", "pretrain")) == len(train)
    # channels are the grayscale image replicated
    x, _ = train[3]
    assert torch.equal(x[0], x[1]) and torch.equal(x[1], x[2])


@pytest.mark.parametrize("shipped_csv", [True, False], ids=["csv read directly", "load_digits"])
def test_digits_arrays_are_scikit_learns(shipped_csv, monkeypatch, tmp_path):
    """Oracle: `sklearn.datasets.load_digits()`. Without the CSV file where scikit-learn keeps it
    (a package laid out otherwise), the arrays come through `load_digits` itself."""
    from sklearn.datasets import load_digits

    if not shipped_csv:
        find_spec = importlib.util.find_spec
        elsewhere = SimpleNamespace(origin=str(tmp_path / "sklearn" / "__init__.py"))
        monkeypatch.setattr(importlib.util, "find_spec",
                            lambda name, *rest: elsewhere if name == "sklearn" else find_spec(name, *rest))
    images, labels = digits_arrays()
    expected = load_digits()
    assert images.dtype == expected.images.dtype and np.array_equal(images, expected.images)
    assert labels.dtype == expected.target.dtype and np.array_equal(labels, expected.target)


@needs_fashion_mnist
def test_fashion_mnist_from_debian_files():
    train, test = build_dataset("fashionmnist", "train"), build_dataset("fashionmnist", "test")
    assert (len(train), len(test)) == (60000, 10000)
    _check_split(test, 28, 10)


def _idx_bytes(array: np.ndarray) -> bytes:
    """An IDX file of unsigned bytes: magic number 0, 0, 8, ndim; the sizes; the values."""
    header = bytes([0, 0, 8, array.ndim]) + b"".join(d.to_bytes(4, "big") for d in array.shape)
    return header + array.astype(np.uint8).tobytes()


def _write_idx(path, array):
    path.write_bytes(gzip.compress(_idx_bytes(array)))


IMAGES, LABELS = "t10k-images-idx3-ubyte.gz", "t10k-labels-idx1-ubyte.gz"


def write_fashion_mnist(folder, n_images=5, n_labels=5, size=28):
    """Fashion-MNIST's four files, gzipped, with `n_images` test images of size x size pixels and
    `n_labels` test labels (the training files: 5 of each)."""
    folder.mkdir(parents=True, exist_ok=True)
    counts = {"train": (5, 5), "t10k": (n_images, n_labels)}
    for prefix, (images, labels) in counts.items():
        pixels = np.arange(images * size * size).reshape(images, size, size) % 256
        _write_idx(folder / f"{prefix}-images-idx3-ubyte.gz", pixels)
        _write_idx(folder / f"{prefix}-labels-idx1-ubyte.gz", np.arange(labels))
    return folder


def test_fashion_mnist_from_data_dir_in_torchvision_layout(tmp_path):
    write_fashion_mnist(tmp_path / "FashionMNIST" / "raw")
    data = build_dataset("fashionmnist", "test", data_dir=tmp_path)
    x, y = data[2]
    assert y == 2
    image = np.arange(2 * 28 * 28, 3 * 28 * 28).reshape(28, 28) % 256
    assert torch.allclose(x[0], torch.tensor(image / 255.0, dtype=torch.float32))


def _cut_in_half(path):
    path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])


def _unzip_without_last_byte(path):
    """`path` (.gz) replaced by its content without `.gz` and without its last byte."""
    path.with_suffix("").write_bytes(gzip.decompress(path.read_bytes())[:-1])
    path.unlink()


def _rename(path, name):
    path.rename(path.with_name(name))


MALFORMED_FASHION_MNIST = {  # fault -> (plant it in a folder of good files, words the error holds)
    "truncated gzip": (lambda d: _cut_in_half(d / IMAGES), [IMAGES]),
    "random bytes": (lambda d: (d / LABELS).write_bytes(bytes(range(7, 250, 3))), [LABELS]),
    "random bytes, gzipped": (lambda d: (d / IMAGES).write_bytes(gzip.compress(bytes(range(200)))),
                              [IMAGES, "magic number"]),
    "labels where the images belong": (lambda d: (d / IMAGES).write_bytes((d / LABELS).read_bytes()),
                                       [IMAGES, "magic number 00000801 where 00000803"]),
    "an unzipped file cut short": (lambda d: _unzip_without_last_byte(d / IMAGES),
                                   ["t10k-images-idx3-ubyte ", "3935 bytes", "3936"]),
    "images of another size": (lambda d: write_fashion_mnist(d, size=27), [IMAGES, "27x27"]),
    "fewer labels than images": (lambda d: write_fashion_mnist(d, n_labels=4),
                                 [IMAGES, LABELS, "5 images", "4 labels"]),
    "a label file of another name": (lambda d: _rename(d / LABELS, "t10k-labels.gz"),
                                     [LABELS, "t10k-labels.gz", "give a file that name"]),
    "a missing image file": (lambda d: (d / IMAGES).unlink(), [IMAGES]),
}


@pytest.mark.parametrize("fault", sorted(MALFORMED_FASHION_MNIST))
def test_a_malformed_fashion_mnist_file_is_one_error_naming_it_and_the_fix(tmp_path, fault):
    plant, words = MALFORMED_FASHION_MNIST[fault]
    folder = write_fashion_mnist(tmp_path / "fashion-mnist")
    plant(folder)
    with pytest.raises(DatasetNotFoundError) as caught:
        build_dataset("fashionmnist", "test", data_dir=tmp_path)
    message = str(caught.value)
    assert "\n" not in message
    for word in [*words, "download Fashion-MNIST's files again", "--data-dir"]:
        assert word in message, (word, message)


def test_the_fashion_mnist_files_built_here_read_before_a_fault_is_planted(tmp_path):
    """Control for the faults above: the good folder holds 5 test images and their labels."""
    write_fashion_mnist(tmp_path / "fashion-mnist")
    data = build_dataset("fashionmnist", "test", data_dir=tmp_path)
    assert len(data) == 5 and [data[i][1] for i in range(5)] == [0, 1, 2, 3, 4]


STL10_IMAGES = {"train": 3, "test": 2, "unlabeled": 4}
"""The images of each part of the STL-10 folder `write_stl10` makes."""


def write_stl10(root) -> None:
    """STL-10's binary files under root/stl10_binary: STL10_IMAGES[part] black 3x96x96 byte images
    in `<part>_X.bin`, class 1 (of 1-10) for each in `<part>_y.bin`."""
    folder = root / "stl10_binary"
    folder.mkdir(parents=True)
    for part, images in STL10_IMAGES.items():
        (folder / f"{part}_X.bin").write_bytes(bytes(images * 3 * 96 * 96))
        if part != "unlabeled":
            (folder / f"{part}_y.bin").write_bytes(bytes([1] * images))


@pytest.mark.parametrize("split, images", [("train", 3), ("test", 2), ("pretrain", 3 + 4)])
def test_stl10_is_counted_from_its_file_sizes_as_torchvision_reads_it(split, images, tmp_path, monkeypatch):
    """Oracle: torchvision's STL10 reading the same files (its MD5 check off: they are no release)."""
    import torchvision

    write_stl10(tmp_path)
    assert dataset_length("stl10", split, data_dir=tmp_path) == images
    monkeypatch.setattr(torchvision.datasets.STL10, "_check_integrity", lambda self: True)
    assert len(build_dataset("stl10", split, data_dir=tmp_path)) == images


@pytest.mark.parametrize("read", [build_dataset, dataset_length])
@pytest.mark.parametrize("name", ["cifar10", "cifar100", "stl10", "fashionmnist"])
def test_offline_missing_dataset_names_folder_and_files(name, read, tmp_path):
    with pytest.raises(DatasetNotFoundError) as err:
        read(name, "train", data_dir=tmp_path)
    message = str(err.value)
    assert str(tmp_path) in message
    assert DATASETS[name].files[0] in message
    assert "--data-dir" in message


def test_unknown_dataset_and_split():
    with pytest.raises(ValueError) as err:
        build_dataset("mnist", "train")
    assert str(err.value) == ("unknown dataset 'mnist': choose one of cifar10, cifar100, digits, fashionmnist, "
                              "stl10, or custom (an ImageFolder of your own: README, 'Your own images')")
    with pytest.raises(ValueError, match="unknown split 'val'"):
        build_dataset("digits", "val")


def test_indexed_dataset_prepends_index():
    data = IndexedDataset(build_dataset("digits", "test"))
    index, x, y = data[7]
    assert index == 7 and x.shape == (3, 8, 8) and y == build_dataset("digits", "test")[7][1]


def test_weak_augmentation_keeps_size_and_range():
    torch.manual_seed(0)
    image = Image.fromarray(np.full((8, 8), 200, dtype=np.uint8)).convert("RGB")
    x = weak_augmentation(8)(image)
    assert x.shape == (3, 8, 8) and 0.0 <= x.min() and x.max() <= 1.0
    # padding is zero, so some crops bring black pixels in
    crops = torch.stack([weak_augmentation(8)(image) for _ in range(20)])
    assert crops.min() == 0.0


@pytest.mark.parametrize("name", sorted(DATASETS))
@only_solo_102  # solo-learn 1.0.2's transforms; both hosts: test_two_hosts
def test_simclr_transform_records_its_normalisation(name):
    spec = get_spec(name)
    pipeline = dict(brightness=0.4, contrast=0.4, saturation=0.4, hue=0.1, color_jitter_prob=0.8,
                    gray_scale_prob=0.2, horizontal_flip_prob=0.5, gaussian_prob=0.5,
                    solarization_prob=0.0, min_scale=0.08, max_scale=1.0,
                    crop_size=spec.image_size, num_crops=2)
    transform = simclr_transform(spec, (pipeline,))
    views = transform(Image.new("RGB", (spec.image_size, spec.image_size)))
    assert len(views) == 2 and views[0].shape == (3, spec.image_size, spec.image_size)
    norm = normalization_of(transform)
    assert norm["mean"] == pytest.approx(spec.mean, abs=1e-6)
    assert norm["std"] == pytest.approx(spec.std, abs=1e-6)


def test_normalization_of_without_normalize_is_an_error():
    with pytest.raises(ValueError, match="no transforms.Normalize"):
        normalization_of(transforms.Compose([transforms.ToTensor()]))
