"""A plain solo-learn checkpoint records no normalisation: solo-ncp runs it with the dataset's
solo-learn statistics and says so (eval and its kin, and as a stage-2 teacher), and where it has
none to assume the teacher's error names the option that gives them."""
import pytest
import torch

from solo_ncp.cli import main
from solo_ncp.models.backbones import BackboneSpec
from solo_ncp.models.checkpoint import META_KEY, CheckpointError
from tests.conftest import train_stage2


@pytest.fixture
def plain_ckpt(digits_simclr_ckpt, tmp_path):
    """The digits SimCLR checkpoint without solo-ncp's metadata, as solo-learn itself writes one."""
    checkpoint = torch.load(digits_simclr_ckpt, map_location="cpu", weights_only=True)
    checkpoint.pop(META_KEY)
    path = tmp_path / "plain.ckpt"
    torch.save(checkpoint, path)
    return path


def digits_mean() -> str:
    """The mean pixel of the digits training images (every 5th image is a test image), in [0, 1]
    as solo-ncp reads them (0..16 scaled to 0..255 and rounded), to 4 significant digits."""
    import numpy as np
    from sklearn.datasets import load_digits

    images = np.round(load_digits().images * 255 / 16) / 255
    return f"{images[np.arange(len(images)) % 5 != 0].mean():.4g}"


def test_eval_of_a_plain_checkpoint_names_the_statistics_it_assumes(plain_ckpt, tmp_path, capsys):
    assert main(["eval", "--ckpt", str(plain_ckpt), "--dataset", "digits", "--epochs", "1", "--test-n", "20",
                 "--aa-n", "0", "--cache-features", "--out", str(tmp_path / "e")]) == 0
    mean = digits_mean()
    assert (f"[solo-ncp] note: {plain_ckpt} records no normalisation (a plain solo-learn checkpoint): its "
            f"inputs are normalised with mean ({mean}, {mean}, {mean}), std (") in capsys.readouterr().out


def test_a_plain_teacher_names_the_statistics_it_assumes(plain_ckpt, tmp_path, capsys):
    """K=5000 stops the command once the teacher is read."""
    assert train_stage2(tmp_path, plain_ckpt, "max_epochs=1", "name=plain", "method_kwargs.k=5000") == 2
    mean = digits_mean()
    assert (f"[solo-ncp] note: teacher {plain_ckpt} records no normalisation (a plain solo-learn checkpoint): "
            f"its inputs are normalised with mean ({mean}, {mean}, {mean}), std (") in capsys.readouterr().out


def test_a_plain_teacher_without_statistics_to_assume_names_the_option(plain_ckpt, digits_simclr_ckpt):
    """Custom data or a dataset solo-ncp has no statistics for: nothing to assume."""
    from solo_ncp.ncp.teacher import load_teacher

    spec = BackboneSpec(**torch.load(digits_simclr_ckpt, weights_only=True)[META_KEY]["backbone"])
    with pytest.raises(CheckpointError) as err:
        load_teacher(plain_ckpt, spec, normalization=None)
    assert str(err.value) == (
        f"teacher {plain_ckpt} has no solo-ncp metadata, so the normalisation it was trained with is unknown, "
        "and the dataset has no registered one: give the mean and std it was trained with, "
        "+method_kwargs.normalization={mean: [r, g, b], std: [r, g, b]}, or use a checkpoint of solo-ncp "
        "pretrain, which records them")
