"""`solo-ncp reproduce --teacher` of a plain solo-learn checkpoint (no solo-ncp metadata) is read
as `solo-ncp train` will read it: with the config's method_kwargs.normalization, else the dataset's
registered statistics; refused only where neither is there (custom data), or for its backbone."""
import numpy as np
import pytest
import torch
from sklearn.datasets import load_digits

from solo_ncp.cli import main
from solo_ncp.models.backbones import resnet_encoder
from tests.conftest import ROOT, host_independent, write_image_folder

pytestmark = host_independent

CONFIGS = ROOT / "zoo_configs/fashionmnist"
GIVEN = "{mean: [0.25, 0.3, 0.35], std: [0.4, 0.45, 0.5]}"
TINY = ["augmentations.0.crop_size=8", "data.subset=256", "data.num_workers=0", "data.val=false",
        "scheduler.warmup_epochs=0", "optimizer.batch_size=64", "max_epochs=1"]
OPTIONS = ["--select-k-options=--k-min 2 --k-max 4 --k-step 1", "--eval-options=--aa-n 0"]


def plain_checkpoint(path, cifar: bool):
    """A random ResNet-18 (CIFAR stem if `cifar`) as solo-learn saves one: its state_dict only."""
    torch.manual_seed(0)
    encoder = resnet_encoder("resnet18", cifar=cifar)
    torch.save({"state_dict": {f"encoder.{k}": v for k, v in encoder.state_dict().items()}}, path)
    return path


@pytest.fixture(scope="module")
def plain(tmp_path_factory):
    return plain_checkpoint(tmp_path_factory.mktemp("plain") / "plain.ckpt", cifar=True)


@pytest.fixture(scope="module")
def custom_folders(tmp_path_factory):
    """Overrides for custom data (reproduce sets data.dataset from --dataset): ImageFolders of 30
    training and 9 test digits 0, 1, 2."""
    digits = load_digits()
    pick = np.flatnonzero(digits.target < 3)
    images = np.round(digits.images * (255 / 16)).astype(np.uint8)
    root = tmp_path_factory.mktemp("custom")
    train = write_image_folder(root / "train", images[pick[:30]], digits.target[pick[:30]], ("a", "b", "c"))
    val = write_image_folder(root / "val", images[pick[30:39]], digits.target[pick[30:39]], ("a", "b", "c"))
    return [f"data.train_path={train}", f"data.val_path={val}",
            "+augmentations.0.mean=[0.3,0.3,0.3]", "+augmentations.0.std=[0.4,0.4,0.4]",
            "augmentations.0.crop_size=8", "backbone.kwargs.cifar=true", "data.num_workers=0",
            "scheduler.warmup_epochs=0", "max_epochs=1", "optimizer.batch_size=8"]


def reproduce(out, dataset: str, teacher, *overrides: str) -> list:
    return ["reproduce", "--dataset", dataset, "--config-dir", str(CONFIGS), "--seeds", "0", "--methods", "ncp",
            "--teacher", str(teacher), "--out", str(out), "--dry-run", *OPTIONS, *overrides]


def test_a_plain_teacher_is_read_with_the_given_normalisation_else_the_registered_one(plain):
    """digits' registered statistics (solo_ncp/data/registry.py), or the config's option as given."""
    from solo_ncp.models.backbones import BackboneSpec
    from solo_ncp.ncp.teacher import read_teacher

    spec = BackboneSpec("resnet18", cifar=True)
    def read(**kwargs) -> dict:
        normalization = read_teacher(plain, spec, dataset="digits", **kwargs).normalization
        return {key: [round(float(v), 4) for v in values] for key, values in normalization.items()}

    assert read() == {"mean": [0.3053] * 3, "std": [0.3760] * 3}
    given = {"mean": [0.25, 0.3, 0.35], "std": [0.4, 0.45, 0.5]}
    assert read(given=given) == given


@pytest.mark.parametrize("given", [[], [f"stage2:+method_kwargs.normalization={GIVEN}"]])
def test_a_plain_teacher_on_a_dataset_with_statistics_is_accepted(plain, tmp_path, capsys, given):
    """It was refused as if the dataset had no statistics, the option given or not."""
    code, printed = main(reproduce(tmp_path / "run", "digits", plain, *TINY, *given)), capsys.readouterr()
    assert code == 0, printed.err
    assert printed.err == ""
    (step,) = [line for line in printed.out.splitlines() if line.startswith("[reproduce] todo    s0/ncp: ")]
    assert f" method_kwargs.teacher_ckpt={plain} " in step
    assert printed.out.splitlines()[-1] == "[reproduce] 0 of 6 steps done (dry run: nothing ran)"


def test_a_plain_teacher_on_custom_data_needs_the_option(plain, custom_folders, tmp_path, capsys):
    """Custom data has no registered statistics: the error names the option; given, it is accepted."""
    assert main(reproduce(tmp_path / "run", "custom", plain, *custom_folders)) == 2
    assert capsys.readouterr().err.strip().splitlines() == [
        f"error: --teacher for method ncp: teacher {plain} has no solo-ncp metadata, so the normalisation it "
        "was trained with is unknown, and the dataset has no registered one: give the mean and std it was "
        "trained with, +method_kwargs.normalization={mean: [r, g, b], std: [r, g, b]}, or use a checkpoint "
        "of solo-ncp pretrain, which records them (solo-ncp reproduce)"]
    argv = reproduce(tmp_path / "run", "custom", plain, *custom_folders,
                     f"stage2:+method_kwargs.normalization={GIVEN}")
    code, printed = main(argv), capsys.readouterr()
    assert code == 0, printed.err
    assert printed.out.splitlines()[-1] == "[reproduce] 0 of 6 steps done (dry run: nothing ran)"


def test_a_plain_teacher_of_another_backbone_is_still_refused(tmp_path, capsys):
    """An ImageNet-stem ResNet-18 against the configs' CIFAR stem (digits: registry's cifar stem)."""
    teacher = plain_checkpoint(tmp_path / "imagenet.ckpt", cifar=False)
    assert main(reproduce(tmp_path / "run", "digits", teacher, *TINY)) == 2
    assert capsys.readouterr().err.strip().splitlines() == [
        f"error: --teacher for method ncp: stage-1 checkpoint {teacher} holds a resnet18 (cifar stem: False), "
        "but the config builds a resnet18 (cifar stem: True): set backbone.name / backbone.kwargs (cifar, "
        "widen_factor) to match the checkpoint, or pass the right checkpoint (solo-ncp reproduce)"]
