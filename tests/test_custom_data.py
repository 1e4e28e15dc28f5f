"""`data.dataset=custom`: torchvision ImageFolders written here as PNGs, read by the dataset, the
config, the stage-1 transform, and the whole pipeline (pretrain, select-k, train, eval, export);
damaged images and broken links among them, refused with one error naming the file."""
import argparse
import io
import json
import zlib
from types import SimpleNamespace

import numpy as np
import pytest
import torch
from PIL import Image
from sklearn.datasets import load_digits

from solo_ncp.cli import main
from solo_ncp.commands._encoder import dataset_of
from solo_ncp.config import dataset_spec, load_config, to_solo102_kwargs, to_solo_main_cfg
from solo_ncp.data import DatasetNotFoundError, build_dataset, config_custom_data, custom_data, normalization_of
from solo_ncp.launch.compat import HOST, pretrain_transform
from solo_ncp.models.checkpoint import read_checkpoint
from tests.conftest import ROOT, write_image_folder

CLASSES = ("zebra", "apple", "mango")
"""Folder names of the digits 0, 1 and 2: sorted, as ImageFolder numbers them, they are 2, 0, 1."""
MEAN, STD = [0.25, 0.3, 0.35], [0.4, 0.45, 0.5]
N_TRAIN, N_VAL = 30, 9


def digits_012(start: int, n: int):
    """The first `n` images of scikit-learn's digits 0, 1 and 2 from index `start` on: (images
    (n, 8, 8) uint8, their digits)."""
    digits = load_digits()
    pick = [i for i in range(start, len(digits.target)) if digits.target[i] < 3][:n]
    return np.round(digits.images[pick] * (255 / 16)).astype(np.uint8), digits.target[pick]


@pytest.fixture(scope="module")
def folders(tmp_path_factory):
    """{"train", "val"}: ImageFolders of N_TRAIN and N_VAL digits, classes CLASSES."""
    root = tmp_path_factory.mktemp("custom")
    return {"train": write_image_folder(root / "train", *digits_012(0, N_TRAIN), CLASSES),
            "val": write_image_folder(root / "val", *digits_012(1000, N_VAL), CLASSES)}


def as_pixels(x: torch.Tensor) -> np.ndarray:
    """(3, H, W) float in [0, 1] -> (H, W, 3) uint8."""
    return (x * 255).round().to(torch.uint8).permute(1, 2, 0).numpy()


def test_a_custom_split_yields_the_written_pixels_with_sorted_class_indices(tmp_path):
    gray, digits = digits_012(0, 12)
    rgb = np.random.default_rng(0).integers(0, 256, (2, 8, 8, 3), dtype=np.uint8)
    write_image_folder(tmp_path / "train", gray, digits, CLASSES)
    for i, image in enumerate(rgb):
        Image.fromarray(image).save(tmp_path / "train" / "apple" / f"rgb{i}.png")
    write_image_folder(tmp_path / "val", *digits_012(1000, 5), CLASSES)
    data = custom_data(tmp_path / "train", tmp_path / "val", 8, MEAN, STD, ("--train-path", "--val-path"))
    index = {name: i for i, name in enumerate(sorted(CLASSES))}
    expected = sorted([(np.stack([g] * 3, axis=-1).tobytes(), index[CLASSES[d]]) for g, d in zip(gray, digits)]
                      + [(image.tobytes(), index["apple"]) for image in rgb])
    train = build_dataset("custom", "train", custom=data)
    assert sorted((as_pixels(x).tobytes(), y) for x, y in train) == expected
    assert len(build_dataset("custom", "pretrain", custom=data)) == len(expected)
    assert len(build_dataset("custom", "test", custom=data)) == 5
    assert (data.spec.num_classes, data.spec.image_size, data.spec.mean) == (3, 8, tuple(MEAN))


def test_custom_images_of_another_size_are_resized_then_centre_cropped(tmp_path):
    flat = np.full((12, 20, 3), (200, 50, 100), dtype=np.uint8)  # 20 wide, 12 high, one colour
    bands = np.zeros((16, 8, 3), dtype=np.uint8)  # 8 wide, 16 high: red, green, blue bands
    bands[:4, :, 0], bands[4:12, :, 1], bands[12:, :, 2] = 255, 255, 255
    for name, image in (("flat", flat), ("bands", bands)):
        (tmp_path / name).mkdir()
        Image.fromarray(image).save(tmp_path / name / "0.png")
    data = custom_data(tmp_path, None, 8, MEAN, STD, ("--train-path", "--val-path"))
    (x_bands, _), (x_flat, _) = build_dataset("custom", "train", custom=data)  # sorted: bands, flat
    assert x_flat.shape == x_bands.shape == (3, 8, 8)
    assert (as_pixels(x_flat) == (200, 50, 100)).all()
    assert (as_pixels(x_bands) == (0, 255, 0)).all()  # the middle 8 rows of 16


def encoded(fmt: str) -> bytes:
    """An 8x8 picture of random colours as a file of format `fmt` ("JPEG", "PNG")."""
    out = io.BytesIO()
    Image.fromarray(np.random.default_rng(0).integers(0, 256, (8, 8, 3), dtype=np.uint8)).save(out, fmt)
    return out.getvalue()


def jpeg_cut_in_its_scan(n: int) -> bytes:
    """The 8x8 JPEG cut `n` bytes after its scan header (marker FFDA, then its length in 2 bytes):
    its one block of coded pixels stops short, those `n` bytes left unprocessed."""
    jpeg = encoded("JPEG")
    sos = jpeg.index(b"\xff\xda")
    return jpeg[:sos + 2 + int.from_bytes(jpeg[sos + 2:sos + 4], "big") + n]


def png_chunk(kind: bytes, data: bytes) -> bytes:
    """A PNG chunk: data length, type, data, CRC of type and data."""
    return len(data).to_bytes(4, "big") + kind + data + zlib.crc32(kind + data).to_bytes(4, "big")


def png_pixel_data(damage) -> bytes:
    """The 8x8 PNG with its pixel data (its one IDAT chunk's zlib stream) replaced by the chunks
    `damage(data)`, then IEND."""
    png = encoded("PNG")
    start = png.index(b"IDAT") - 4  # the chunk's length field
    data = png[start + 8:start + 8 + int.from_bytes(png[start:start + 4], "big")]
    return png[:start] + damage(data) + png_chunk(b"IEND", b"")


DAMAGED_IMAGES = {
    "a truncated JPEG": ("cut.jpg", lambda: jpeg_cut_in_its_scan(3),
                         "is truncated or damaged (PIL: image file is truncated (3 bytes not processed))"),
    "a PNG with a byte flipped": (  # the zlib header's first byte: compression method 7, not 8 (deflate)
        "flipped.png", lambda: png_pixel_data(lambda data: png_chunk(b"IDAT", bytes([data[0] ^ 0xFF]) + data[1:])),
        "is truncated or damaged (PIL: broken data stream when reading image file)"),
    "a PNG with a broken chunk": (  # the data in two chunks, the second's type not 4 letters: SyntaxError
        "chunk.png", lambda: png_pixel_data(lambda data: png_chunk(b"IDAT", data[:2]) + png_chunk(b"ID\0T", data[2:])),
        "is truncated or damaged (PIL: broken PNG file (chunk b'ID\\x00T'))"),
    "a PPM cut in its header": ("cut.ppm", lambda: b"P6\n8 8\n",  # no maximum value: a ValueError
                                "is truncated or damaged (PIL: Reached EOF while reading header)"),
    "an empty file": ("empty.png", lambda: b"", "is empty"),
    "text saved as a PNG": ("text.png", lambda: b"not a picture\n",
                            "is not an image PIL can read (in no format it knows)"),
}


@pytest.mark.parametrize("damage", sorted(DAMAGED_IMAGES))
def test_a_damaged_custom_image_is_one_error_naming_it_and_the_fix(tmp_path, damage):
    name, content, problem = DAMAGED_IMAGES[damage]
    write_image_folder(tmp_path, *digits_012(0, 3), CLASSES)
    (tmp_path / "apple" / name).write_bytes(content())
    data = custom_data(tmp_path, None, 8, MEAN, STD, ("--train-path", "--val-path"))
    with pytest.raises(DatasetNotFoundError) as caught:
        list(build_dataset("custom", "train", custom=data))
    assert str(caught.value) == f"custom data: image {tmp_path / 'apple' / name} {problem}: replace or remove it"


def test_the_damaged_images_built_here_are_read_whole_before_the_damage():
    """Control for the damages above: the JPEG and PNG they start from read, 8x8 RGB."""
    for fmt in ("JPEG", "PNG"):
        assert Image.open(io.BytesIO(encoded(fmt))).convert("RGB").size == (8, 8)
    assert Image.open(io.BytesIO(png_pixel_data(lambda data: png_chunk(b"IDAT", data)))).convert("RGB").size == (8, 8)


def test_a_broken_link_among_the_custom_images_is_refused_when_the_folders_are_checked(tmp_path):
    write_image_folder(tmp_path / "train", *digits_012(0, 3), CLASSES)
    (tmp_path / "train" / "apple" / "link.png").symlink_to(next((tmp_path / "train" / "zebra").iterdir()))
    (tmp_path / "train" / "mango" / "gone.png").symlink_to(tmp_path / "gone.png")
    with pytest.raises(DatasetNotFoundError) as caught:
        custom_data(tmp_path / "train", None, 8, MEAN, STD, ("--train-path", "--val-path"))
    assert str(caught.value) == (f"custom data: --train-path {tmp_path / 'train'}: image(s) mango/gone.png are "
                                 "broken links (their targets are missing): replace or remove them")
    (tmp_path / "train" / "mango" / "gone.png").unlink()
    data = custom_data(tmp_path / "train", None, 8, MEAN, STD, ("--train-path", "--val-path"))
    assert len(list(build_dataset("custom", "train", custom=data))) == 4  # the working link is read


def test_a_custom_image_whose_link_breaks_after_the_check_is_one_error_naming_it(tmp_path):
    write_image_folder(tmp_path / "train", *digits_012(0, 3), CLASSES)
    (tmp_path / "elsewhere.png").write_bytes(encoded("PNG"))
    (tmp_path / "train" / "apple" / "link.png").symlink_to(tmp_path / "elsewhere.png")
    data = custom_data(tmp_path / "train", None, 8, MEAN, STD, ("--train-path", "--val-path"))
    dataset = build_dataset("custom", "train", custom=data)
    (tmp_path / "elsewhere.png").unlink()
    with pytest.raises(DatasetNotFoundError) as caught:
        list(dataset)
    assert str(caught.value) == (f"custom data: image {tmp_path / 'train' / 'apple' / 'link.png'} is missing (a broken "
                                 "link, or deleted after the folder was listed): replace or remove it")


def custom_overrides(folders, *extra):
    """Overrides of the bundled Fashion-MNIST configs for the custom folders, at digits' scale."""
    return ["data.dataset=custom", f"data.train_path={folders['train']}",
            f"data.val_path={folders['val']}", f"+augmentations.0.mean={MEAN}",
            f"+augmentations.0.std={STD}", "augmentations.0.crop_size=8", "backbone.kwargs.cifar=true",
            "data.num_workers=0", "scheduler.warmup_epochs=0", "max_epochs=1", *extra]


def test_a_custom_config_counts_the_class_folders_and_normalises_with_its_statistics(folders):
    cfg = load_config(ROOT / "zoo_configs/fashionmnist/simclr.yaml", custom_overrides(folders))
    spec = dataset_spec(cfg)
    assert (spec.name, spec.num_classes, spec.image_size) == ("custom", 3, 8)
    assert (list(spec.mean), list(spec.std)) == (MEAN, STD)
    classes = to_solo_main_cfg(cfg).data.num_classes if HOST.is_main else to_solo102_kwargs(cfg)["num_classes"]
    assert classes == 3
    assert normalization_of(pretrain_transform(cfg)) == {"mean": tuple(MEAN), "std": tuple(STD)}


def test_pretrain_stops_at_a_truncated_custom_image_with_one_error_line_naming_it(folders, tmp_path, capsys):
    write_image_folder(tmp_path / "train", *digits_012(0, N_TRAIN - 1), CLASSES)
    (tmp_path / "train" / "apple" / "cut.jpg").write_bytes(jpeg_cut_in_its_scan(3))
    cut = {"train": tmp_path / "train", "val": folders["val"]}
    assert main(["pretrain", "--config", str(ROOT / "zoo_configs/fashionmnist/simclr.yaml"),
                 f"checkpoint.dir={tmp_path / 'runs'}", "name=cut", "optimizer.batch_size=15",
                 *custom_overrides(cut)]) == 2
    assert capsys.readouterr().err.strip().splitlines()[-1] == (
        f"error: custom data: image {tmp_path / 'train' / 'apple' / 'cut.jpg'} is truncated or damaged (PIL: image "
        "file is truncated (3 bytes not processed)): replace or remove it (solo-ncp pretrain)")


def test_the_image_size_is_the_largest_crop_and_every_entry_gives_the_same_statistics(folders):
    data = {"train_path": str(folders["train"]), "val_path": None}
    entries = [{"crop_size": 4, "mean": MEAN, "std": STD}, {"crop_size": 8, "mean": MEAN, "std": STD}]
    custom = config_custom_data(data, entries, validate=False)
    assert (custom.image_size, custom.val_path, list(custom.mean), list(custom.std)) == (8, None, MEAN, STD)
    entries[0]["std"] = [0.5, 0.5, 0.5]
    with pytest.raises(ValueError, match=r"augmentations\[\]\.std differ between entries"):
        config_custom_data(data, entries, validate=False)


def encoder_args(**options):
    return argparse.Namespace(dataset="custom", ckpt="run/last.ckpt", custom=None,
                              **{key: options.get(key) for key in ("train_path", "val_path", "image_size")})


def test_eval_options_take_the_custom_folders_and_size_from_the_checkpoint_unless_given(folders, tmp_path):
    write_image_folder(tmp_path / "other", *digits_012(500, 6), CLASSES)
    encoder = SimpleNamespace(normalization={"mean": tuple(MEAN), "std": tuple(STD)}, meta={
        "dataset": "custom", "data": {"train_path": str(folders["train"]), "val_path": str(folders["val"]),
                                      "image_size": 8}})
    recorded = encoder_args()
    assert dataset_of(recorded, encoder).num_classes == 3
    assert (recorded.custom.train_path, recorded.custom.val_path, recorded.custom.image_size) == (
        str(folders["train"]), str(folders["val"]), 8)
    given = encoder_args(train_path=str(tmp_path / "other"), image_size=16)
    dataset_of(given, encoder, test=False)
    assert (given.custom.train_path, given.custom.val_path, given.custom.image_size) == (
        str(tmp_path / "other"), None, 16)
    assert given.custom.mean == tuple(MEAN)


@pytest.fixture(scope="module")
def pipeline(folders, tmp_path_factory):
    """A custom run through every command: {step: its output path}."""
    out = tmp_path_factory.mktemp("custom_runs")
    fashion = ROOT / "zoo_configs/fashionmnist"
    stage1 = ["pretrain", "--config", str(fashion / "simclr.yaml"), f"checkpoint.dir={out}", "name=s1",
              "optimizer.batch_size=15", "method_kwargs.proj_hidden_dim=32", "method_kwargs.proj_output_dim=16"]
    assert main([*stage1, *custom_overrides(folders)]) == 0
    simclr = out / "s1" / "last.ckpt"
    assert main(["select-k", "--ckpt", str(simclr), "--dataset", "custom", "--k-min", "2", "--k-max", "3",
                 "--k-step", "1", "--out", str(out / "k"), "--device", "cpu"]) == 0
    stage2 = ["train", "--config", str(fashion / "ncp.yaml"), f"checkpoint.dir={out}", "name=s2",
              "optimizer.batch_size=15", "limit_train_batches=1", "method_kwargs.pgd_steps=1",
              f"method_kwargs.teacher_ckpt={simclr}", "method_kwargs.k=null",
              f"method_kwargs.k_file={out / 'k' / 'k.json'}"]
    assert main([*stage2, *custom_overrides(folders)]) == 0
    ncp = out / "s2" / "last.ckpt"
    assert main(["eval", "--ckpt", str(ncp), "--dataset", "custom", "--out", str(out / "eval"), "--epochs",
                 "1", "--aa-n", "0", "--cache-features", "--pgd-steps", "1", "--bn", "adv", "--device",
                 "cpu"]) == 0
    assert main(["export", "--ckpt", str(ncp), "--bn", "adv", "--head", str(out / "eval"),
                 "--out", str(out / "export")]) == 0
    return {"simclr": simclr, "k": out / "k" / "k.json", "ncp": ncp, "eval": out / "eval" / "metrics.json",
            "export": out / "export" / "export.json"}


@pytest.mark.parametrize("stage", ["simclr", "ncp"])
def test_a_custom_run_records_its_folders_size_and_statistics(pipeline, folders, stage):
    state = read_checkpoint(pipeline[stage])
    meta = state["solo_ncp"]
    assert meta["dataset"] == "custom"
    assert meta["normalization"] == {"mean": MEAN, "std": STD}
    assert meta["data"] == {"train_path": str(folders["train"]), "val_path": str(folders["val"]),
                            "image_size": 8}
    weights = [v for k, v in state["state_dict"].items() if k.endswith("classifier.weight")]
    assert [w.shape[0] for w in weights] == [len(CLASSES)]


def test_select_k_eval_and_export_read_the_recorded_custom_folders(pipeline):
    assert json.loads(pipeline["k"].read_text())["n"] == N_TRAIN
    record = json.loads(pipeline["eval"].read_text())
    assert (record["dataset"], record["settings"]["train_n"], record["settings"]["test_n"]) == (
        "custom", N_TRAIN, N_VAL)
    info = json.loads(pipeline["export"].read_text())
    assert (info["dataset"], info["normalization"]) == ("custom", {"mean": MEAN, "std": STD})
    assert info["classifier"]["num_classes"] == len(CLASSES)


def test_reproduce_passes_no_data_dir_for_custom_data_its_steps_read_the_recorded_folders(folders):
    from solo_ncp.launch.reproduce import data_options

    cfg = load_config(ROOT / "zoo_configs/fashionmnist/simclr.yaml", custom_overrides(folders) + ["data.subset=20"])
    assert data_options(cfg) == ["--train-n", "20"]
    registered = load_config(ROOT / "zoo_configs/fashionmnist/simclr.yaml", ["data.train_path=/data", "data.subset=20"])
    assert data_options(registered) == ["--data-dir", "/data", "--train-n", "20"]
    installed = load_config(ROOT / "zoo_configs/fashionmnist/simclr.yaml",
                            ["data.dataset=digits", "data.train_path=/data", "data.subset=20"])
    assert data_options(installed) == ["--train-n", "20"]  # eval, poc and select-k refuse --data-dir for digits


def test_standard_autoattack_on_fewer_than_10_classes_fails_inside_pyautoattack():
    """The oracle of the refusal below: APGD-T's 9 target classes index past 3 logits once an
    image survives APGD-CE (a tiny eps here), after pyautoattack has only warned."""
    from pyautoattack import AutoAttack

    torch.manual_seed(0)
    classifier = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(3 * 4 * 4, 3)).eval()
    x = torch.rand(4, 3, 4, 4)
    y = classifier(x).argmax(1)
    adversary = AutoAttack(classifier, device="cpu", eps=1e-6, norm="Linf", seed=0, version="standard")
    with pytest.raises(IndexError):
        adversary.run_standard_evaluation(x, y, batch_size=4)


def test_autoattack_needing_more_classes_than_the_data_has_is_refused_before_the_head(pipeline, tmp_path, capsys):
    """3 classes: the standard version's APGD-T and FAB-T need 10; the line offers the attacks
    that run on 3 (apgd-dlr reads the 3rd-largest logit, so 3 suffice)."""
    evaluate = ["eval", "--ckpt", str(pipeline["simclr"]), "--dataset", "custom", "--epochs", "1", "--aa-n", "2",
                "--cache-features", "--pgd-steps", "1", "--device", "cpu"]
    assert main([*evaluate, "--out", str(tmp_path / "standard")]) == 2
    assert capsys.readouterr().err.strip().splitlines()[-1] == (
        "error: AutoAttack standard runs attacks this dataset's 3 classes are too few for (fewest classes: "
        "apgd-t 10, fab-t 10; APGD-T and FAB-T attack 9 target classes): run --aa-version custom --aa-attacks "
        "apgd-ce apgd-dlr fab square (not AutoAttack's standard version: say so beside its AA), or skip "
        "AutoAttack with --aa-n 0 (solo-ncp eval)")
    assert not (tmp_path / "standard").exists()
    custom = ["--aa-version", "custom", "--aa-attacks", "apgd-ce", "apgd-dlr", "fab", "square"]
    assert main([*evaluate, *custom, "--out", str(tmp_path / "custom")]) == 0
    assert json.loads((tmp_path / "custom" / "metrics.json").read_text())["settings"]["aa"]["attacks"] == custom[3:]


def test_reproduce_refuses_such_an_autoattack_before_its_first_step(folders, tmp_path, capsys):
    fashion = str(ROOT / "zoo_configs/fashionmnist")
    argv = ["reproduce", "--dataset", "custom", "--config-dir", fashion, "--methods", "ncp", "--out",
            str(tmp_path / "run"), "--dry-run", "--select-k-options=--k-min 2 --k-max 4 --k-step 1",
            *custom_overrides(folders, "optimizer.batch_size=8")[1:]]
    assert main(argv) == 2
    assert capsys.readouterr().err.strip().splitlines()[-1].startswith(
        "error: step s0/eval-simclr-slf would fail: AutoAttack standard runs attacks this dataset's 3 classes "
        "are too few for")
    assert main([*argv, "--eval-options=--aa-n 0"]) == 0


def test_a_16_bit_grayscale_png_is_scaled_to_8_bits_not_clipped(tmp_path):
    """torchvision's pil_loader turned a 16-bit PNG about 98% white (every value above 255 clipped)."""
    from solo_ncp.data.custom import load_image

    wide = np.linspace(0, 65535, 64).astype(np.uint16).reshape(8, 8)
    Image.fromarray(wide).save(tmp_path / "wide.png")
    assert Image.open(tmp_path / "wide.png").mode == "I;16"
    pixels = np.asarray(load_image(str(tmp_path / "wide.png")))
    assert pixels.shape == (8, 8, 3) and (pixels == pixels[..., :1]).all()
    np.testing.assert_array_equal(pixels[..., 0], np.round(wide * (255 / 65535)).astype(np.uint8))


def test_an_image_over_pils_pixel_limit_is_refused_naming_it(tmp_path, monkeypatch):
    """A photo of over 2 x 89 M pixels (PIL's MAX_IMAGE_PIXELS, lowered here to 20 for an 8 x 8
    image) was a DecompressionBombError traceback; 40 pixels (under 2 x 20) still loads."""
    from solo_ncp.data.custom import load_image

    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 20)
    Image.fromarray(np.zeros((8, 8), np.uint8)).save(tmp_path / "big.png")
    Image.fromarray(np.zeros((5, 8), np.uint8)).save(tmp_path / "small.png")
    assert np.asarray(load_image(str(tmp_path / "small.png"))).shape == (5, 8, 3)
    with pytest.raises(DatasetNotFoundError) as caught:
        load_image(str(tmp_path / "big.png"))
    assert str(caught.value) == (
        f"custom data: image {tmp_path / 'big.png'} is larger than PIL opens, its guard against decompression "
        "bombs (Image size (64 pixels) exceeds limit of 40 pixels, could be decompression bomb DOS attack.): "
        "shrink it (it is resized to the image size anyway), or remove it")


def test_a_32_bit_image_is_refused_naming_it(tmp_path):
    from solo_ncp.data.custom import load_image

    Image.fromarray(np.full((4, 4), 70000, np.int32), mode="I").save(tmp_path / "deep.tif")
    with pytest.raises(DatasetNotFoundError) as caught:
        load_image(str(tmp_path / "deep.tif"))
    assert str(caught.value) == (f"custom data: image {tmp_path / 'deep.tif'} holds 32-bit integer pixels (PIL mode I) "
                                 "of no known range, which RGB conversion clips: save it with 8 or 16 bits a channel, "
                                 "or remove it")
