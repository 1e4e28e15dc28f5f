"""`custom` data: torchvision ImageFolders (one sub-folder of images per class), as solo-learn's
`data.dataset: custom` reads them: the training images under one folder, the test (validation)
images under another.

Unlike solo-learn's, the images come out of the dataset at one size, `image_size` x `image_size`
(shorter side resized, bicubic, then centre-cropped; an image of that size already is left as it
is), so every stage batches them as it batches CIFAR's: stage 1's random resized crops and stage
2's pad-and-crop start from that picture, and evaluation sees it whole. Labels are the indices of
the class folders' names in sorted order (torchvision's rule), so the test folder must hold the
same class folders as the training folder. The normalisation is the config's (`CustomData.mean`,
`std`), as in solo-learn's custom configs.

torchvision is imported where used: solo_ncp.config reads this module, and the console script's
options are built without torch.
"""
import os
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Callable, List, Mapping, Optional, Sequence, Tuple

from solo_ncp.data.registry import DatasetNotFoundError, DatasetSpec

if TYPE_CHECKING:
    from PIL import Image
    from torch.utils.data import Dataset

CUSTOM = "custom"
LAYOUT = "an ImageFolder: one sub-folder of images per class, e.g. <folder>/cat/1.png"
CHANNELS = 3
"""mean/std hold one number per RGB channel: every image is read as RGB (grayscale replicated)."""


def _image_extensions() -> Tuple[str, ...]:
    """The file name endings ImageFolder reads as images (".png", ".jpg", ...)."""
    from torchvision.datasets.folder import IMG_EXTENSIONS

    return IMG_EXTENSIONS


def _is_image(name: str) -> bool:
    return name.lower().endswith(_image_extensions())


def _holds_image(folder: Path) -> bool:
    """Whether an image lies anywhere under `folder` (links followed, as ImageFolder walks it)."""
    return any(_is_image(name) for _, _, names in os.walk(folder, followlinks=True) for name in names)


def _broken_links(folder: Path, classes: Sequence[str]) -> List[str]:
    """The images in the class folders `classes` of `folder` (walked as ImageFolder walks them) that
    are links to nothing, relative to `folder`: the listing tells links apart, only they are looked up."""
    broken, pending = [], [folder / name for name in classes]
    while pending:
        with os.scandir(pending.pop()) as entries:
            for entry in entries:
                if entry.is_dir():
                    pending.append(Path(entry.path))
                elif entry.is_symlink() and _is_image(entry.name) and not os.path.exists(entry.path):
                    broken.append(os.path.relpath(entry.path, folder))
    return sorted(broken)


def image_folder_classes(path, option: str) -> List[str]:
    """The class names (sorted) of the ImageFolder at `path`; DatasetNotFoundError naming `path`,
    what is wrong and the fix (`option`: how the user gives the folder, e.g. "data.train_path") when
    it is missing, not a folder, holds no class sub-folders, a class sub-folder holds no image, or an
    image is a broken link."""
    folder = Path(path)
    fix = f"pass {option}=<{LAYOUT}>"
    if not folder.exists():
        raise DatasetNotFoundError(f"custom data: {option} {folder} does not exist: {fix}")
    if not folder.is_dir():
        raise DatasetNotFoundError(f"custom data: {option} {folder} is a file, not a folder: {fix}")
    classes = sorted(entry.name for entry in os.scandir(folder) if entry.is_dir())
    if not classes:
        loose = any(_is_image(entry.name) for entry in os.scandir(folder))
        what = "its images lie directly in it" if loose else "it is empty of class sub-folders"
        raise DatasetNotFoundError(f"custom data: {option} {folder} has no class sub-folders ({what}): "
                                   f"put each class's images into a sub-folder of its own; {fix}")
    empty = [name for name in classes if not _holds_image(folder / name)]
    if empty:
        raise DatasetNotFoundError(
            f"custom data: {option} {folder}: class folder(s) {', '.join(empty[:5])} hold no image "
            f"({', '.join(_image_extensions())}): add images to them or remove them; {fix}"
        )
    broken = _broken_links(folder, classes)
    if broken:
        raise DatasetNotFoundError(
            f"custom data: {option} {folder}: image(s) {', '.join(broken[:5])}{', ...' if len(broken) > 5 else ''} "
            "are broken links (their targets are missing): replace or remove them"
        )
    return classes


@dataclass(frozen=True)
class CustomData:
    """A custom dataset: `train_path` holds the training images (splits "train" and "pretrain"),
    `val_path` the test images (split "test"; None: no test split), both ImageFolders of the class
    folders `classes` (sorted names). image_size: side in pixels of the images it yields. mean/std:
    per-channel statistics (3 each) of [0, 1] pixels, stage 1's normalisation."""

    train_path: str
    val_path: Optional[str]
    image_size: int
    mean: Tuple[float, ...]
    std: Tuple[float, ...]
    classes: Tuple[str, ...]

    @property
    def spec(self) -> DatasetSpec:
        """The registry-style facts: len(classes) classes, the ImageNet stem (solo-learn builds the
        CIFAR stem only for CIFAR), solo-learn's "custom" transform family."""
        return DatasetSpec(CUSTOM, len(self.classes), self.image_size, self.mean, self.std, CUSTOM,
                           False, "", ())

    def folder(self, split: str) -> str:
        if split != "test":
            return self.train_path
        if self.val_path is None:
            raise ValueError("custom data has no test split here: give its ImageFolder of test images "
                             "(data.val_path in a config, --val-path to a command)")
        return self.val_path

    def record(self) -> dict:
        """The checkpoint's `solo_ncp.data` entry (plain types): where later commands (select-k,
        eval, poc, plot) find the folders, and the image size, by default."""
        return {"train_path": self.train_path, "val_path": self.val_path, "image_size": self.image_size}


def custom_data(train_path, val_path, image_size: int, mean: Sequence[float], std: Sequence[float],
                options: Tuple[str, str]) -> CustomData:
    """CustomData of the two folders (absolute paths), each checked by `image_folder_classes`
    (`options`: how the user names each, for the messages); ValueError when the test folder's
    classes are not the training folder's."""
    classes = image_folder_classes(train_path, options[0])
    if val_path is not None:
        val_classes = image_folder_classes(val_path, options[1])
        if val_classes != classes:
            raise ValueError(
                f"custom data: {options[1]} {val_path} has the class folders {', '.join(val_classes[:5])}"
                f"{', ...' if len(val_classes) > 5 else ''} but {options[0]} {train_path} "
                f"{', '.join(classes[:5])}{', ...' if len(classes) > 5 else ''}: labels are class "
                "indices in sorted order, so both folders need the same class sub-folders"
            )
    return CustomData(os.path.abspath(train_path), None if val_path is None else os.path.abspath(val_path),
                      int(image_size), tuple(float(m) for m in mean), tuple(float(s) for s in std),
                      tuple(classes))


def _statistic(augmentations: Sequence[Mapping], key: str) -> Tuple[float, ...]:
    """`key` ("mean" or "std") of every augmentations entry: the same 3 numbers (stds > 0) in each,
    else ValueError naming the entry and the fix."""
    fix = (f"data.dataset={CUSTOM} normalises with the config's statistics, as solo-learn's custom "
           "configs: give each augmentations entry `mean: [r, g, b]` and `std: [r, g, b]` (on the "
           "command line: +augmentations.0.mean=[0.5,0.5,0.5] +augmentations.0.std=[0.25,0.25,0.25])")
    values = []
    for i, aug in enumerate(augmentations):
        value = aug.get(key)
        if value is None:
            raise ValueError(f"augmentations.{i}.{key} is missing: {fix}")
        numbers = isinstance(value, (list, tuple)) and all(
            isinstance(v, (int, float)) and not isinstance(v, bool) for v in value)
        if not numbers or len(value) != CHANNELS:
            raise ValueError(f"augmentations.{i}.{key}={value!r} must be {CHANNELS} numbers, one per RGB "
                             f"channel (grayscale images are read as RGB): {fix}")
        if key == "std" and min(value) <= 0:
            raise ValueError(f"augmentations.{i}.std={value!r}: a std must be > 0 (it divides): {fix}")
        values.append(tuple(float(v) for v in value))
    if len(set(values)) > 1:
        raise ValueError(f"augmentations[].{key} differ between entries ({values}): a checkpoint records one "
                         f"normalisation, so give every entry the same {key}")
    return values[0]


def config_custom_data(data: Mapping, augmentations: Sequence[Mapping], validate: bool) -> CustomData:
    """The CustomData of a run config's plain `data` block and `augmentations` list: folders
    `data.train_path` (required) and `data.val_path` (required when `validate`: `data.val`), image
    size the largest `crop_size` (stage 1's large crops), mean/std those of every entry
    (`_statistic`). ValueError (DatasetNotFoundError for the folders) naming the key and the fix."""
    if not data.get("train_path"):
        raise ValueError(f"data.dataset={CUSTOM} needs data.train_path=<{LAYOUT}> (and data.val_path, "
                         "the same for the test images)")
    if validate and not data.get("val_path"):
        raise ValueError(f"data.dataset={CUSTOM} validates on data.val_path, which is not set: pass "
                         f"data.val_path=<{LAYOUT}>, or data.val=false to train without validation")
    if not augmentations:
        raise ValueError("config has no `augmentations` list (one entry per pipeline)")
    image_size = max(int(aug["crop_size"]) for aug in augmentations)
    return custom_data(data["train_path"], data.get("val_path"), image_size,
                       _statistic(augmentations, "mean"), _statistic(augmentations, "std"),
                       ("data.train_path", "data.val_path"))


WIDE_MODES = {"I": "32-bit integer", "F": "32-bit float"}
"""PIL modes of more than 8 bits a channel whose range a file does not state."""


def _eight_bits(image: "Image.Image") -> "Image.Image":
    """A 16-bit grayscale picture (PIL mode I;16, as of a 16-bit PNG) as 8-bit L: 65535 -> 255
    (value // 257, rounded). RGB conversion clipped every value above 255 to white."""
    import numpy as np
    from PIL import Image

    wide = np.asarray(image).astype(np.uint32)
    return Image.fromarray(((wide + 128) // 257).astype(np.uint8), mode="L")


def load_image(path: str) -> "Image.Image":
    """ImageFolder's loader: the picture in the file at `path` as RGB (torchvision's `pil_loader`;
    16-bit grayscale scaled to 8 bits, `_eight_bits`, where `pil_loader` clips it to white);
    DatasetNotFoundError naming the file, what is wrong and the fix when it is missing, empty, not
    an image PIL can read, or truncated or damaged (PIL's decoding errors; other I/O errors pass)."""
    from PIL import Image, UnidentifiedImageError

    fix = "replace or remove it"
    try:
        with open(path, "rb") as file:
            image = Image.open(file)
            if image.mode.startswith("I;16"):
                return _eight_bits(image).convert("RGB")
            if image.mode not in WIDE_MODES:
                return image.convert("RGB")
        problem = (f"holds {WIDE_MODES[image.mode]} pixels (PIL mode {image.mode}) of no known range, which RGB "
                   "conversion clips")
        fix = "save it with 8 or 16 bits a channel, or remove it"
    except FileNotFoundError:
        problem = "is missing (a broken link, or deleted after the folder was listed)"
    except UnidentifiedImageError:
        problem = "is empty" if os.path.getsize(path) == 0 else "is not an image PIL can read (in no format it knows)"
    except Image.DecompressionBombError as err:  # over 2 x Image.MAX_IMAGE_PIXELS
        problem = f"is larger than PIL opens, its guard against decompression bombs ({err})"
        fix = "shrink it (it is resized to the image size anyway), or remove it"
    except (OSError, SyntaxError, ValueError) as err:  # PIL's decoding errors: OSErrors without errno
        if isinstance(err, OSError) and err.errno is not None:
            raise
        problem = f"is truncated or damaged (PIL: {err})"
    raise DatasetNotFoundError(f"custom data: image {path} {problem}: {fix}")


def image_folder_dataset(folder, image_size: int, transform: Callable) -> "Dataset":
    """The ImageFolder at `folder` (checked by the caller) as `(transform(image), label)`: image a
    PIL RGB picture (`load_image`) of image_size x image_size (see the module's docstring), label its
    class folder's index in sorted order."""
    from torchvision import transforms
    from torchvision.datasets import ImageFolder

    return ImageFolder(str(folder), loader=load_image, transform=transforms.Compose([
        transforms.Resize(image_size, interpolation=transforms.InterpolationMode.BICUBIC),
        transforms.CenterCrop(image_size),
        transform,
    ]))
