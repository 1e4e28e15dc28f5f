"""Stage 2 (`solo-ncp train`) pads and crops back to the image size: a config whose
`augmentations.0.crop_size` is not the registered dataset's image size is refused with one
`error:` line naming both sizes, before any work (no run folder, no model or teacher built),
instead of failing mid-fit in torchvision's RandomCrop (a larger crop) or training on another
protocol than the one the clustering pass and every evaluation use."""
import gzip
import struct

import pytest
import torch
from PIL import Image

from tests.conftest import FASHION_MNIST, ROOT, train_stage2


def digits_side() -> int:
    """The side of scikit-learn's digits images (8)."""
    from sklearn.datasets import load_digits

    height, width = load_digits().images.shape[1:]
    assert height == width
    return int(height)


def fashion_mnist_side() -> int:
    """The side of Fashion-MNIST's images: the idx header of Debian's training images when
    installed (rows, cols), else the dataset's definition (28x28, Xiao et al. 2017)."""
    images = FASHION_MNIST / "train-images-idx3-ubyte.gz"
    if not images.is_file():
        return 28
    with gzip.open(images, "rb") as f:
        _, _, rows, cols = struct.unpack(">4I", f.read(16))
    assert rows == cols
    return int(rows)


# The image sides by the datasets' definitions: CIFAR-10/100 are 32x32 colour images
# (Krizhevsky 2009), STL-10 96x96 (Coates et al. 2011).
SIDES = {"digits": digits_side, "fashionmnist": fashion_mnist_side, "cifar10": lambda: 32,
         "cifar100": lambda: 32, "stl10": lambda: 96}


class ModelBuilt(Exception):
    """Raised by the spy in place of building the model (and loading the teacher)."""


@pytest.fixture
def builds(monkeypatch):
    """The configs `solo-ncp train` got as far as building a model from: `build_method` is
    replaced by a spy that records the call and stops there (ModelBuilt), so no teacher is read."""
    import solo_ncp.launch.methods

    calls = []

    def spy(cfg, *args, **kwargs):
        calls.append(cfg)
        raise ModelBuilt(f"build_method reached for data.dataset={cfg.data.dataset}")

    monkeypatch.setattr(solo_ncp.launch.methods, "build_method", spy)
    return calls


def train(tmp_path, dataset: str, crop: int) -> int:
    """`solo-ncp train` of the bundled ncp config on `dataset` with `crop`, runs under tmp_path/runs."""
    return train_stage2(tmp_path / "runs", tmp_path / "teacher.ckpt", f"data.dataset={dataset}",
                        f"augmentations.0.crop_size={crop}", "max_epochs=1", "name=crop")


def error_line(capsys) -> str:
    err = capsys.readouterr().err
    assert "Traceback" not in err
    (line,) = [line for line in err.splitlines() if "error:" in line]
    return line


def assert_refused(tmp_path, capsys, builds, dataset: str, crop: int) -> None:
    side = SIDES[dataset]()
    assert crop != side
    assert train(tmp_path, dataset, crop) == 2
    line = error_line(capsys)
    assert f"augmentations.0.crop_size={crop} but " in line, line
    assert f"images are {side}x{side} pixels" in line and dataset in line, line
    assert line.rstrip().endswith(f"set augmentations.0.crop_size={side} (solo-ncp train)"), line
    assert builds == []  # refused before the model (and its teacher) was built
    assert not (tmp_path / "runs").exists()  # no run folder, no checkpoint


# digits at 28 (a Fashion-MNIST config switched to digits: failed mid-fit in RandomCrop);
# Fashion-MNIST at 32 (trained silently on 32-px crops of padded 28-px images)
@pytest.mark.parametrize("dataset, crop", [("digits", 28), ("fashionmnist", 32)])
def test_a_crop_larger_than_the_images_is_refused_before_any_work(tmp_path, capsys, builds, dataset, crop):
    assert crop > SIDES[dataset]()
    assert_refused(tmp_path, capsys, builds, dataset, crop)


@pytest.mark.parametrize("dataset, crop", [("digits", 6), ("cifar10", 28)])
def test_a_crop_smaller_than_the_images_is_refused_before_any_work(tmp_path, capsys, builds, dataset, crop):
    assert crop < SIDES[dataset]()
    assert_refused(tmp_path, capsys, builds, dataset, crop)


@pytest.mark.parametrize("dataset", sorted(SIDES))
def test_the_image_size_as_crop_passes_the_check(tmp_path, capsys, builds, dataset):
    side = SIDES[dataset]()
    with pytest.raises(ModelBuilt):
        train(tmp_path, dataset, side)
    assert "error:" not in capsys.readouterr().err
    (cfg,) = builds
    assert (cfg.data.dataset, cfg.augmentations[0].crop_size) == (dataset, side)


@pytest.mark.parametrize("removed", ["~augmentations", "~augmentations.0.crop_size"])
@pytest.mark.parametrize("dataset", ["digits", "fashionmnist"])
def test_without_augmentations_stage_2_crops_to_the_image_size(dataset, removed):
    """No `augmentations` (or no crop_size): the weak augmentation pads and crops back to the
    dataset's own image size."""
    from solo_ncp.commands.train import weak_augmentation_of
    from solo_ncp.config import load_config

    side = SIDES[dataset]()
    image = Image.new("RGB", (side, side))
    cfg = load_config(ROOT / "zoo_configs/fashionmnist/ncp.yaml", [f"data.dataset={dataset}", removed])
    torch.manual_seed(0)
    assert weak_augmentation_of(cfg)(image).shape == (3, side, side)


def test_a_config_without_a_crop_size_passes_the_check(tmp_path, capsys, builds):
    with pytest.raises(ModelBuilt):
        train_stage2(tmp_path / "runs", tmp_path / "teacher.ckpt", "~augmentations.0.crop_size", "name=crop")
    assert "error:" not in capsys.readouterr().err
    (cfg,) = builds
    assert cfg.data.dataset == "digits" and cfg.augmentations[0].get("crop_size") is None


@pytest.mark.parametrize("crop, refused", [(28, True), (32, False)])
def test_solo_learn_mains_own_launcher_refuses_another_crop_too(crop, refused):
    """main_pretrain.py builds `ncp` through `add_and_assert_specific_cfg`; it resizes the
    clustering set to the crop size while evaluation sees CIFAR-10's 32-px images."""
    from omegaconf import OmegaConf

    from solo_ncp._host import current_host
    from solo_ncp.config import ConfigError

    if not current_host().is_main:
        pytest.skip("solo-learn main's launcher")
    from solo.methods import METHODS

    cfg = OmegaConf.create({"method": "ncp", "backbone": {"name": "resnet18"}, "optimizer": {},
                            "scheduler": {}, "data": {"dataset": "cifar10"},
                            "augmentations": [{"crop_size": crop}],
                            "method_kwargs": {"teacher_ckpt": "t.ckpt", "k": 7}})
    if refused:
        with pytest.raises(ConfigError, match="augmentations.0.crop_size=28 but cifar10's images are 32x32 "):
            METHODS["ncp"].add_and_assert_specific_cfg(cfg)
    else:
        assert METHODS["ncp"].add_and_assert_specific_cfg(cfg).method_kwargs.k == 7


@pytest.mark.parametrize("override, named", [
    ("augmentations.0.solarization.prob=1.0", "solarization.prob=1.0"),
    ("augmentations.0.color_jitter.prob=0.8", "color_jitter.prob=0.8"),
    ("augmentations.0.gaussian_blur.prob=0.5", "gaussian_blur.prob=0.5"),
    ("augmentations.0.rrc.enabled=true", "rrc.enabled=true"),
])
def test_a_strong_augmentation_switched_on_is_refused_before_any_work(tmp_path, capsys, builds, override, named):
    """solo-ncp train applies pad_crop, crop_size and horizontal_flip only: these trained without
    them, exit 0, and config.yaml recorded them as set."""
    assert train_stage2(tmp_path / "runs", tmp_path / "teacher.ckpt", "data.dataset=digits",
                        f"augmentations.0.crop_size={SIDES['digits']()}", "max_epochs=1", "name=aug", override) == 2
    assert error_line(capsys) == (
        f"error: augmentations.0.{named}: stage 2 trains on the paper's weak augmentation only (pad_crop, a crop of "
        "crop_size, horizontal_flip), one view, so solo-ncp train would not apply it: switch it off (its prob 0, "
        "rrc.enabled false) (solo-ncp train)")
    assert builds == [] and not (tmp_path / "runs").exists()
