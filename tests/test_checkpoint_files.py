"""Files that are no checkpoint, read through `read_checkpoint`: whatever the bytes (any first
byte, an empty file, a zip or gzip, a torch archive with a missing or corrupt data.pkl, a
truncated legacy file), one CheckpointError line that names the file and the fix; a pickle that
a safe load refuses keeps its own message. A checkpoint's solo-ncp metadata, read through
`load_encoder` (every command's loader): any malformed entry is one CheckpointError naming the file,
the entry and the fix."""
import gzip
import io
import json
import struct
import zipfile

import pytest
import torch

from solo_ncp.cli import main
from solo_ncp.models import BackboneSpec, build_backbone
from solo_ncp.models.checkpoint import CheckpointError, load_encoder, read_checkpoint

CHECKPOINT = {"state_dict": {"encoder.conv1.weight": torch.arange(6.0).reshape(2, 3)}, "epoch": 1}


def saved(legacy: bool = False) -> bytes:
    """CHECKPOINT as torch.save writes it: a zip archive, or the legacy pickle stream."""
    buffer = io.BytesIO()
    torch.save(CHECKPOINT, buffer, _use_new_zipfile_serialization=not legacy)
    return buffer.getvalue()


def rezipped(archive: bytes, data_pkl=b"keep") -> bytes:
    """`archive` written again entry by entry, its data.pkl replaced by `data_pkl` (None: left out)."""
    source = zipfile.ZipFile(io.BytesIO(archive))
    out = io.BytesIO()
    with zipfile.ZipFile(out, "w", zipfile.ZIP_STORED) as target:
        for name in source.namelist():
            content = source.read(name)
            if name.endswith("/data.pkl"):
                if data_pkl is None:
                    continue
                content = content if data_pkl == b"keep" else data_pkl(content)
            target.writestr(name, content)
    return out.getvalue()


def not_torch_zip() -> bytes:
    out = io.BytesIO()
    with zipfile.ZipFile(out, "w") as archive:
        archive.writestr("notes.txt", "hello")
    return out.getvalue()


def assert_unreadable(path, trust: bool = False) -> None:
    with pytest.raises(CheckpointError) as caught:
        read_checkpoint(path, trust=trust)
    message = str(caught.value)
    assert "\n" not in message
    assert message.startswith(f"cannot read {path}: not a PyTorch checkpoint"), message
    assert "solo-ncp pretrain" in message


@pytest.mark.parametrize("first", range(256), ids=lambda b: f"{b:#04x}")
def test_a_text_file_of_any_first_byte_is_one_checkpoint_error(tmp_path, first):
    path = tmp_path / "notes.ckpt"
    path.write_bytes(bytes([first]) + b"ello, these are my notes (2 lines)\nnot a checkpoint\n")
    assert_unreadable(path)


def test_the_archives_built_here_load_before_a_fault_is_planted(tmp_path):
    """Control for the faults below: the rebuilt zip and the legacy file are checkpoints."""
    for name, content in (("zip.ckpt", rezipped(saved())), ("legacy.ckpt", saved(legacy=True))):
        (tmp_path / name).write_bytes(content)
        assert torch.equal(read_checkpoint(tmp_path / name)["state_dict"]["encoder.conv1.weight"],
                           torch.arange(6.0).reshape(2, 3))


FAULTS = {
    "empty file": lambda: b"",
    "zip that is no torch archive": not_torch_zip,
    "torch zip without data.pkl": lambda: rezipped(saved(), None),
    "torch zip with a text data.pkl": lambda: rezipped(saved(), lambda pkl: b"hello\n"),
    "torch zip with a truncated data.pkl": lambda: rezipped(saved(), lambda pkl: pkl[: len(pkl) // 2]),
    "torch zip with a zeroed data.pkl": lambda: rezipped(saved(), lambda pkl: bytes(len(pkl))),
    "torch zip cut in half": lambda: saved()[: len(saved()) // 2],
    "gzipped checkpoint": lambda: gzip.compress(saved()),
    "legacy file cut after its magic number": lambda: saved(legacy=True)[:12],
    "legacy file cut in half": lambda: saved(legacy=True)[: len(saved(legacy=True)) // 2],
    "legacy file without its last byte": lambda: saved(legacy=True)[:-1],
}


@pytest.mark.parametrize("trust", [False, True], ids=["safe", "trusted"])
@pytest.mark.parametrize("fault", sorted(FAULTS))
def test_a_damaged_or_foreign_file_is_one_checkpoint_error(tmp_path, fault, trust):
    path = tmp_path / "last.ckpt"
    path.write_bytes(FAULTS[fault]())
    assert_unreadable(path, trust)


class Runner:
    """Unpickling this calls print: a safe load must refuse it."""

    def __reduce__(self):
        return (print, ("code ran",))


def test_an_unsafe_pickle_keeps_its_own_message(tmp_path):
    path = tmp_path / "unsafe.ckpt"
    torch.save({"state_dict": Runner()}, path)
    with pytest.raises(CheckpointError, match="--trust-checkpoint") as caught:
        read_checkpoint(path)
    assert "not a PyTorch checkpoint" not in str(caught.value)


@pytest.mark.parametrize("state", [None, [1, 2], "weights"])
def test_a_trusted_checkpoint_whose_state_dict_is_no_mapping_is_one_checkpoint_error(tmp_path, state):
    """What `--trust-checkpoint` lets through (any pickle) still has to hold a mapping of tensors."""
    path = tmp_path / "odd.ckpt"
    torch.save({"state_dict": state}, path)
    with pytest.raises(CheckpointError, match=f"holds a state_dict that is a {type(state).__name__}, "
                                              "not a mapping of tensors"):
        read_checkpoint(path, trust=True)


WRN = BackboneSpec("wide_resnet28_10", widen_factor=1)
META = {"format": 1, "method": "simclr", "dataset": "cifar10", "backbone": WRN.to_dict(),
        "normalization": {"mean": [0.5, 0.4, 0.3], "std": [0.2, 0.25, 0.3]}, "dual_bn": False}
"""Metadata as `solo-ncp pretrain` writes it, of a WideResNet-28-1 (small: its weights save fast)."""
RESAVE = ("write the checkpoint again with solo-ncp (`solo-ncp pretrain` / `train`; an export folder: "
          "`solo-ncp export`), or correct that entry")
OTHER_VERSION = "it was written by another solo-ncp version: load it with that version"


@pytest.fixture(scope="module")
def wrn_weights():
    return {f"backbone.{k}": v for k, v in build_backbone(WRN).state_dict().items()}


REMOVED = object()


def with_entry(key, value):
    """META with entry `key` (a path of keys) set to `value`, or removed if `value` is REMOVED."""
    meta = {k: dict(v) if isinstance(v, dict) else v for k, v in META.items()}
    *parents, last = key
    entry = meta
    for parent in parents:
        entry = entry[parent]
    if value is REMOVED:
        del entry[last]
    else:
        entry[last] = value
    return meta


MALFORMED = {
    "metadata is a list": (
        lambda: [META], "solo_ncp: a list, not a mapping", RESAVE),
    "backbone is a string": (
        lambda: with_entry(("backbone",), "wide_resnet28_10"), "backbone: a str, not a mapping", RESAVE),
    "backbone has a key of a newer version": (
        lambda: with_entry(("backbone", "foo"), 1),
        "backbone.foo: unknown key; this solo-ncp reads name, cifar, zero_init_residual, widen_factor",
        OTHER_VERSION),
    "backbone without name": (
        lambda: with_entry(("backbone", "name"), REMOVED), "backbone.name: missing", RESAVE),
    "backbone.cifar a string": (
        lambda: with_entry(("backbone", "cifar"), "yes"), "backbone.cifar: a str, not a bool", RESAVE),
    "backbone.widen_factor a bool": (
        lambda: with_entry(("backbone", "widen_factor"), True),
        "backbone.widen_factor: a bool, not an int or null", RESAVE),
    "no normalization": (
        lambda: with_entry(("normalization",), REMOVED), "normalization: missing", RESAVE),
    "normalization is a list": (
        lambda: with_entry(("normalization",), [0.5, 0.2]), "normalization: a list, not a mapping", RESAVE),
    "normalization without std": (
        lambda: with_entry(("normalization", "std"), REMOVED), "normalization.std: missing", RESAVE),
    "normalization has a key of a newer version": (
        lambda: with_entry(("normalization", "max_pixel"), 255),
        "normalization.max_pixel: unknown key; this solo-ncp reads mean, std", OTHER_VERSION),
    "mean of strings": (
        lambda: with_entry(("normalization", "mean"), ["0.5", "0.4", "0.3"]),
        "normalization.mean: ['0.5', '0.4', '0.3'] is not a list of numbers", RESAVE),
    "mean of one channel": (
        lambda: with_entry(("normalization", "mean"), [0.5]),
        "normalization.mean: [0.5] has length 1; images have 3 channels", RESAVE),
    "std shorter than mean": (
        lambda: with_entry(("normalization", "std"), [0.2, 0.25]),
        "normalization.std: [0.2, 0.25] has length 2; images have 3 channels", RESAVE),
    "std of zeros": (
        lambda: with_entry(("normalization", "std"), [0, 0, 0]),
        "normalization.std: [0, 0, 0] holds a std <= 0, which cannot divide", RESAVE),
    "negative std": (
        lambda: with_entry(("normalization", "std"), [0.2, -0.25, 0.3]),
        "normalization.std: [0.2, -0.25, 0.3] holds a std <= 0, which cannot divide", RESAVE),
    "NaN std": (
        lambda: with_entry(("normalization", "std"), [0.2, float("nan"), 0.3]),
        "normalization.std: [0.2, nan, 0.3] holds NaN or inf", RESAVE),
    "infinite mean": (
        lambda: with_entry(("normalization", "mean"), [0.5, float("inf"), 0.3]),
        "normalization.mean: [0.5, inf, 0.3] holds NaN or inf", RESAVE),
    "bn of no branch": (
        lambda: with_entry(("bn",), "both"), "bn: 'both', not null or one of clean, adv", RESAVE),
    "data record is a list": (
        lambda: with_entry(("data",), ["train"]), "data: a list, not a mapping or null", RESAVE),
}


def test_the_metadata_of_the_malformed_rows_loads_before_a_fault_is_planted(tmp_path, wrn_weights):
    """Control for MALFORMED: META with real weights is an encoder, as are older metadata without
    the optional entries (without backbone: inferred from the weights) and export metadata with a
    null bn."""
    for name, meta in (("full", META), ("old", {k: META[k] for k in ("backbone", "normalization")}),
                       ("no backbone", {"normalization": META["normalization"]}),
                       ("export", {**META, "bn": None, "data": None})):
        torch.save({"state_dict": wrn_weights, "solo_ncp": meta}, tmp_path / f"{name}.ckpt")
        encoder = load_encoder(tmp_path / f"{name}.ckpt")
        assert encoder.backbone == WRN
        assert encoder.normalization == {"mean": (0.5, 0.4, 0.3), "std": (0.2, 0.25, 0.3)}


def test_a_negative_running_var_is_one_checkpoint_error_naming_it(tmp_path, wrn_weights):
    """A variance below zero made every feature NaN: select-k then blamed 'features row 0', eval
    the fine-tuning's learning rate, neither the file."""
    weights = dict(wrn_weights)
    name = next(key for key in weights if key.endswith("running_var"))
    weights[name] = weights[name].clone().fill_(-1.0)
    path = tmp_path / "last.ckpt"
    torch.save({"state_dict": weights, "solo_ncp": META}, path)
    with pytest.raises(CheckpointError) as caught:
        load_encoder(path)
    assert str(caught.value) == (
        f"{path} holds a negative BatchNorm running_var in 1 tensors (first: {name.removeprefix('backbone.')}), "
        "which no training writes (a variance): the file is damaged. Use another checkpoint of that run, or train it again")


def _overflowing(weights):
    return {**weights, "backbone.conv1.weight": weights["backbone.conv1.weight"] * 1e30}


def _dead(weights):
    return {**weights, "backbone.bn1.weight": torch.zeros_like(weights["backbone.bn1.weight"]),
            "backbone.bn1.bias": torch.zeros_like(weights["backbone.bn1.bias"])}


@pytest.mark.parametrize("command", [
    ["select-k", "--k-min", "2", "--k-max", "3", "--k-step", "1", "--train-n", "16"],
    ["poc", "--k", "2", "--train-n", "16", "--test-n", "16", "--epochs", "1"]])
@pytest.mark.parametrize("change, says", [
    (_overflowing, "NaN, inf or overflowing features for 16 of 16 training images (first: image 0): its weights overflow float32 "
                   "on them, or the file is damaged"),
    (_dead, "all-zero features for 16 of 16 training images (first: image 0): a zero row has no direction for the "
            "cosine; a diverged or damaged checkpoint")], ids=["weights x 1e30", "a dead last BN"])
def test_features_that_cannot_be_clustered_name_the_checkpoint(tmp_path, wrn_weights, command, change, says, capsys):
    """Finite weights whose features are not: select-k said 'features row 0 contains NaN or inf ...:
    drop, repair or rescale that row' (advice for a library caller), and poc trained its head first."""
    path = tmp_path / "last.ckpt"
    torch.save({"state_dict": change(wrn_weights), "solo_ncp": META}, path)
    argv = [command[0], "--ckpt", str(path), "--dataset", "digits", "--out", str(tmp_path / "out"), *command[1:]]
    assert main(argv) == 2
    assert capsys.readouterr().err.strip().splitlines()[-1] == (
        f"error: the encoder of {path} gives {says}; use another checkpoint of that run (solo-ncp {command[0]})")


@pytest.mark.parametrize("mode", ["slf", "aff"])
def test_a_first_fine_tuning_step_on_overflowing_features_blames_the_checkpoint(tmp_path, wrn_weights, mode, capsys):
    """It said 'non-finite fine-tuning loss nan in epoch 0: lower --lr', before any step of that lr."""
    path = tmp_path / "last.ckpt"
    conv1 = wrn_weights["backbone.conv1.weight"]
    weights = {**wrn_weights, "backbone.conv1.weight": conv1 / conv1.abs().max() * 3e38}  # finite, its sums not
    torch.save({"state_dict": weights, "solo_ncp": META}, path)
    assert main(["eval", "--ckpt", str(path), "--dataset", "digits", "--mode", mode, "--epochs", "1", "--train-n",
                 "16", "--test-n", "16", "--aa-n", "0", "--out", str(tmp_path / "out")]) == 2
    assert capsys.readouterr().err.strip().splitlines()[-1] == (
        "error: non-finite fine-tuning loss nan at the first step, before any update: the encoder's features are "
        "not finite (its weights overflow float32 on these images, or the checkpoint is damaged); use another "
        "checkpoint (solo-ncp eval)")


@pytest.mark.parametrize("fault", sorted(MALFORMED))
def test_malformed_metadata_is_one_checkpoint_error_naming_the_entry(tmp_path, wrn_weights, fault):
    """Also when --dataset gives a normalisation: metadata is never replaced, only checked."""
    meta, detail, fix = MALFORMED[fault]
    path = tmp_path / "last.ckpt"
    torch.save({"state_dict": wrn_weights, "solo_ncp": meta()}, path)
    with pytest.raises(CheckpointError) as caught:
        load_encoder(path, normalization={"mean": [0.5] * 3, "std": [0.25] * 3})
    problem = f"{path} has malformed solo-ncp metadata ({detail})"
    assert (str(caught.value), caught.value.problem) == (f"{problem}: {fix}", problem)


def test_the_metadata_of_an_export_folder_is_checked_too(tmp_path, wrn_weights):
    folder = tmp_path / "export"
    folder.mkdir()
    torch.save({k[len("backbone."):]: v for k, v in wrn_weights.items()}, folder / "encoder.pt")
    (folder / "export.json").write_text(json.dumps(with_entry(("normalization", "std"), [0.2, 0.25, 0])))
    with pytest.raises(CheckpointError) as caught:
        load_encoder(folder)
    assert str(caught.value) == (f"{folder} has malformed solo-ncp metadata (normalization.std: [0.2, 0.25, 0] "
                                 f"holds a std <= 0, which cannot divide): {RESAVE}")


def test_the_cli_prints_one_error_line_for_malformed_metadata(tmp_path, wrn_weights, capsys):
    path = tmp_path / "last.ckpt"
    torch.save({"state_dict": wrn_weights, "solo_ncp": with_entry(("backbone", "foo"), 1)}, path)
    assert main(["export", "--ckpt", str(path), "--out", str(tmp_path / "out")]) == 2
    captured = capsys.readouterr()
    assert "Traceback" not in captured.err
    assert captured.err.strip().splitlines()[-1] == (
        f"error: {path} has malformed solo-ncp metadata (backbone.foo: unknown key; this solo-ncp reads name, "
        f"cifar, zero_init_residual, widen_factor): {OTHER_VERSION} (solo-ncp export)")


def test_a_changed_byte_inside_a_tensor_is_caught_by_the_zip_crc(tmp_path):
    """torch.load reads such a file without a word (the value just changes); the zip's CRC-32 of
    the record does not match, and the checkpoint is refused as corrupt."""
    path = tmp_path / "last.ckpt"
    torch.save({"epoch": 0, "state_dict": {"w": torch.arange(1000, dtype=torch.float32)}}, path)
    assert read_checkpoint(path)["state_dict"]["w"][500] == 500
    with zipfile.ZipFile(path) as archive:
        record = next(info for info in archive.infolist() if info.filename.endswith("/data/0"))
    with open(path, "rb") as file:
        file.seek(record.header_offset + 26)
        name_length, extra_length = struct.unpack("<HH", file.read(4))
    data_start = record.header_offset + 30 + name_length + extra_length
    damaged = bytearray(path.read_bytes())
    damaged[data_start + 4 * 500 + 3] ^= 0x01  # the high byte of w[500]
    path.write_bytes(bytes(damaged))
    assert torch.load(path, weights_only=True)["state_dict"]["w"][500] != 500  # loaded, changed
    with pytest.raises(CheckpointError) as caught:
        read_checkpoint(path)
    assert str(caught.value).startswith(
        f"cannot read {path}: not a PyTorch checkpoint, or a truncated or corrupt one (its record "
        f"{record.filename} fails its CRC-32 check: a changed byte, which torch.load does not check)")
