"""An `augmentations` entry without a key stage 1 cannot do without (`crop_size`, `num_crops`),
from an override (`~augmentations.0.num_crops`, a replacement `augmentations=[{crop_size: 8}]`) or
from the file, is one error line naming the entry, the key and the override that gives it, exit 2,
before any work: it failed with omegaconf's ConfigAttributeError traceback ("Missing key
num_crops") when pretrain built the pipelines, and `reproduce --dry-run` accepted it. Stage 2 reads
no `num_crops`, and `crop_size` only where given, except on custom data (its image size)."""
from pathlib import Path

import pytest

from solo_ncp.config import ConfigError, load_config

ZOO = Path(__file__).resolve().parents[1] / "zoo_configs"
SIMCLR, NCP = ZOO / "fashionmnist/simclr.yaml", ZOO / "fashionmnist/ncp.yaml"
DIGITS = ["data.dataset=digits", "augmentations.0.crop_size=8", "data.num_workers=0", "max_epochs=1"]
"""No dataset to read: digits is scikit-learn's; its images are 8x8 (the crop size suggested)."""
NUM_CROPS = "(how many crops this pipeline makes of each image): give it a value, e.g. ++augmentations.{i}.num_crops=2"
CROP_SIZE = "(the side of this pipeline's crops, in pixels): give it a value, e.g. ++augmentations.{i}.crop_size=8"


def lacks(key: str, index: int = 0, null: bool = False) -> str:
    fix = {"num_crops": NUM_CROPS, "crop_size": CROP_SIZE}[key].format(i=index)
    return f"augmentations.{index} {f'sets `{key}` to null' if null else f'lacks `{key}`'} {fix}"


def pretrain_error(tmp_path: Path, capsys, config: Path, overrides) -> str:
    """The last line of `solo-ncp pretrain`'s stderr, which must exit 2 with one error line, no
    traceback and no run folder (checkpoint.dir is not made)."""
    from solo_ncp.cli import main

    runs = tmp_path / "runs"
    code = main(["pretrain", "--config", str(config), f"checkpoint.dir={runs}", "name=keys", *overrides])
    err = capsys.readouterr().err
    assert code == 2, err
    assert "Traceback" not in err, err
    assert sum(line.startswith("error:") for line in err.splitlines()) == 1, err
    assert not runs.exists(), sorted(runs.rglob("*"))
    return err.strip().splitlines()[-1]


@pytest.mark.parametrize("overrides, message", [
    (["~augmentations.0.num_crops"], lacks("num_crops")),
    (["~augmentations.0.crop_size"], lacks("crop_size")),
    (["augmentations=[{crop_size: 8}]"], lacks("num_crops")),
    (["augmentations=[{num_crops: 2}]"], lacks("crop_size")),
    (["augmentations.0.num_crops=null"], lacks("num_crops", null=True)),
    (["augmentations=[{crop_size: 8, num_crops: 2}, {crop_size: 6}]"], lacks("num_crops", index=1)),
], ids=["~num_crops", "~crop_size", "replaced without num_crops", "replaced without crop_size",
        "num_crops null", "second entry without num_crops"])
def test_an_override_leaving_an_entry_without_a_key_is_one_error_line(tmp_path, capsys, overrides, message):
    line = pretrain_error(tmp_path, capsys, SIMCLR, DIGITS + overrides)
    assert line == f"error: {message} (solo-ncp pretrain)"


@pytest.mark.parametrize("key", ["num_crops", "crop_size"])
def test_a_config_file_whose_entry_lacks_a_key_is_one_error_line(tmp_path, capsys, key):
    text = SIMCLR.read_text()
    lines = [line for line in text.splitlines() if line.strip().startswith(f"{key}:")]
    assert len(lines) == 1, lines  # the file's one entry holds the key, on a line of its own
    path = tmp_path / "simclr.yaml"
    path.write_text(text.replace(lines[0] + "\n", ""))
    overrides = [override for override in DIGITS if key != "crop_size" or "crop_size" not in override]
    line = pretrain_error(tmp_path, capsys, path, overrides)
    assert line == f"error: {lacks(key)} (solo-ncp pretrain)"


def test_the_override_the_error_names_mends_the_config():
    cfg = load_config(SIMCLR, DIGITS + ["~augmentations.0.num_crops", "++augmentations.0.num_crops=2"])
    assert cfg.augmentations[0].num_crops == 2


def test_reproduce_dry_run_refuses_it_for_stage_1(tmp_path, capsys):
    from solo_ncp.cli import main

    out = tmp_path / "out"
    assert main(["reproduce", "--dataset", "fashionmnist", "--out", str(out), "--dry-run",
                 "simclr:~augmentations.0.num_crops"]) == 2
    err = capsys.readouterr().err
    assert "Traceback" not in err, err
    assert err.strip().splitlines()[-1] == f"error: simclr (simclr.yaml): {lacks('num_crops')} (solo-ncp reproduce)"
    assert not out.exists()


def test_stage_2_needs_neither_key_except_custom_datas_crop_size():
    """solo-ncp train reads no num_crops, and crop_size defaults to the image size (test_stage2_crop);
    custom data takes its image size from crop_size (KeyError 'crop_size' traceback before)."""
    cfg = load_config(NCP, ["~augmentations.0.crop_size", "~augmentations.0.num_crops"])
    assert "crop_size" not in cfg.augmentations[0] and "num_crops" not in cfg.augmentations[0]
    with pytest.raises(ConfigError) as caught:
        load_config(NCP, ["data.dataset=custom", "~augmentations.0.crop_size"])
    assert str(caught.value) == ("augmentations.0 lacks `crop_size` (the side of this pipeline's crops, in pixels; "
                                 "custom data's image size is the largest): give it a value, e.g. "
                                 "++augmentations.0.crop_size=32")
