"""Files that are no checkpoint, read through `read_checkpoint`: whatever the bytes (any first
byte, an empty file, a zip or gzip, a torch archive with a missing or corrupt data.pkl, a
truncated legacy file), one CheckpointError line that names the file and the fix; a pickle that
a safe load refuses keeps its own message."""
import gzip
import io
import zipfile

import pytest
import torch

from solo_ncp.models.checkpoint import CheckpointError, read_checkpoint

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
