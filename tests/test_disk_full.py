"""A full disk is one error line naming the folder, the file and the fix, and leaves the results
written before it as they were: atomic writes (a real ENOSPC, and torch.save's own RuntimeError for
it), the error Lightning raises over it as it stops, and a training on a small tmpfs, whose
last.ckpt `--resume` continues once there is room."""
import errno
import re
import shutil
import subprocess
from collections import namedtuple
from pathlib import Path

import pytest
import torch

from solo_ncp.io import DiskFullError, NotWritableError, atomic_torch_save, atomic_write, check_writable, disk_full_in
from tests.conftest import SMALL_BACKBONE, pretrain


def fills_after(size: int, error: BaseException):
    """A write that puts `size` bytes into the file, then fails with `error`."""
    def write(tmp: str) -> None:
        Path(tmp).write_bytes(b"x" * size)
        raise error

    return write


def test_a_write_that_fills_the_disk_names_file_folder_and_size_and_keeps_the_old_file(tmp_path):
    path = tmp_path / "last.ckpt"
    path.write_text("old")
    with pytest.raises(DiskFullError) as raised:
        atomic_write(path, fills_after(3 * 2 ** 20, OSError(errno.ENOSPC, "No space left on device")))
    assert str(raised.value) == (f"no room left on the disk of {tmp_path} for last.ckpt (3.0 MB of it written when "
                                 "the disk filled, removed again): free space there, or write to a folder on a "
                                 "larger disk")
    assert raised.value.errno == errno.ENOSPC
    assert path.read_text() == "old" and sorted(p.name for p in tmp_path.iterdir()) == ["last.ckpt"]


@pytest.mark.parametrize("size, said", [(0, "none of it written when the disk filled"),
                                        (4000, "4000 bytes of it written when the disk filled, removed again"),
                                        (5 * 2 ** 20 // 2, "2.5 MB of it written when the disk filled, removed again")])
def test_the_part_that_fit_is_said_in_its_unit(size, said, tmp_path):
    with pytest.raises(DiskFullError, match=re.escape(f"for head.pt ({said}): free space there")):
        atomic_write(tmp_path / "head.pt", fills_after(size, OSError(errno.ENOSPC, "No space left on device")))


def test_a_quota_is_a_full_disk_too(tmp_path):
    with pytest.raises(DiskFullError):
        atomic_write(tmp_path / "k.json", fills_after(10, OSError(errno.EDQUOT, "Disk quota exceeded")))


Usage = namedtuple("Usage", "total used free")
PART = r"(\d+\.\d MB|\d+ bytes)"
"""How much of a file fit, as the message says it."""


@pytest.mark.parametrize("free, full", [(0, True), (2 ** 20 - 1, True), (2 ** 20, False), (50 * 2 ** 30, False)])
def test_torch_saves_runtime_error_is_a_full_disk_only_where_the_disk_has_no_room(free, full, tmp_path, monkeypatch):
    """torch.save's writer reports ENOSPC as "unexpected pos ..." (a RuntimeError): where the disk
    still has a MB free, the error is another one and passes unchanged."""
    monkeypatch.setattr(shutil, "disk_usage", lambda folder: Usage(100 * 2 ** 30, 0, free))
    error = RuntimeError("[enforce fail at inline_container.cc:672] . unexpected pos 70717888 vs 70717776")
    with pytest.raises(DiskFullError if full else RuntimeError) as raised:
        atomic_write(tmp_path / "last.ckpt", fills_after(10, error))
    assert (raised.value.__cause__ is error) if full else (raised.value is error)
    assert list(tmp_path.iterdir()) == []


def test_the_full_disk_is_found_behind_the_error_raised_while_stopping(tmp_path):
    """Lightning's CSV logger writes metrics.csv in place as a failed fit stops: on the full disk
    it raises its own ENOSPC (no file named) over the checkpoint's."""
    def stopping():
        try:
            atomic_write(tmp_path / "last.ckpt", fills_after(2 ** 20, OSError(errno.ENOSPC, "No space")))
        except DiskFullError:
            raise OSError(errno.ENOSPC, "No space left on device")

    with pytest.raises(OSError) as raised:
        stopping()
    assert str(disk_full_in(raised.value)).startswith(f"no room left on the disk of {tmp_path} for last.ckpt")
    in_place = OSError(errno.ENOSPC, "No space left on device", str(tmp_path / "logs" / "metrics.csv"))
    assert str(disk_full_in(in_place)) == (f"no room left on the disk of {tmp_path / 'logs'} for metrics.csv: free "
                                           "space there, or write to a folder on a larger disk")
    assert disk_full_in(OSError(errno.EACCES, "Permission denied")) is None
    assert disk_full_in(ValueError("x")) is None


@pytest.fixture
def small_disk(tmp_path):
    """A tmpfs mounted at tmp_path/disk, `size` given by mount options; remounted by the test."""
    disk = tmp_path / "disk"
    disk.mkdir()
    mounted = []

    def mount(options: str) -> Path:
        command = ["mount", "-t", "tmpfs", "-o", options, "tmpfs", str(disk)]
        if mounted:
            command = ["mount", "-o", f"remount,{options}", str(disk)]
        proc = subprocess.run(command, capture_output=True, text=True)
        if proc.returncode != 0:
            pytest.skip(f"cannot mount a tmpfs here ({proc.stderr.strip()})")
        mounted.append(disk)
        return disk

    yield mount
    if mounted:
        subprocess.run(["umount", "--lazy", str(disk)], check=True)  # a failed writer may hold its file open


def test_torch_save_onto_a_real_full_disk(small_disk):
    """The kernel's ENOSPC under torch.save: the oracle for the RuntimeError rule above."""
    disk = small_disk("size=1M")
    with pytest.raises(DiskFullError) as raised:
        atomic_torch_save({"w": torch.zeros(2 ** 19)}, disk / "last.ckpt")  # 2 MB
    assert re.fullmatch(rf"no room left on the disk of {re.escape(str(disk))} for last\.ckpt \({PART} of it written "
                        r"when the disk filled, removed again\): free space there, or write to a folder on a "
                        r"larger disk",
                        str(raised.value))
    assert list(disk.iterdir()) == []


def test_a_training_that_fills_its_disk_says_so_and_resumes_once_there_is_room(small_disk, capsys):
    """WRN-28-1 checkpoints are 3.1 MB: 2 MB holds none; 5 MB holds last.ckpt and not the temporary
    file of the next one."""
    def train(disk: Path, resume: bool = False) -> int:
        return pretrain(disk, "max_epochs=3", "name=full", "limit_train_batches=2", *SMALL_BACKBONE, resume=resume)

    disk = small_disk("size=2M")
    assert train(disk) == 2
    line = capsys.readouterr().err.strip().splitlines()[-1]
    assert re.match(rf"error: no room left on the disk of {re.escape(str(disk / 'full'))} for last\.ckpt \({PART} of "
                    r"it written when the disk filled, removed again\): free space there", line)
    assert line.endswith("no checkpoint was written before it stopped: with room again, start it again "
                         "(solo-ncp pretrain)")
    shutil.rmtree(disk / "full")

    disk = small_disk("size=5M")
    assert train(disk) == 2
    line = capsys.readouterr().err.strip().splitlines()[-1]
    last = disk / "full" / "last.ckpt"
    assert line.endswith(f"{last} (the last completed checkpoint) is kept: with room again, --resume continues "
                         "from it (solo-ncp pretrain)")
    assert torch.load(last, weights_only=True)["epoch"] == 0

    small_disk("size=20M")
    assert train(disk, resume=True) == 0
    assert torch.load(last, weights_only=True)["epoch"] == 2


def test_an_output_folder_on_a_full_disk_is_named_with_the_fix_before_any_work(small_disk):
    """No inode left (tmpfs nr_inodes): a file cannot be created, as on a full disk; the fix is
    room, not permissions."""
    disk = small_disk("size=1M,nr_inodes=2")
    (disk / "taken").write_text("")
    with pytest.raises(NotWritableError) as raised:
        check_writable(disk / "run")
    assert str(raised.value) == (f"cannot write to {disk / 'run'}: No space left on device in {disk}: free space "
                                 "there, or choose an --out on a larger disk")


def test_the_run_folders_lock_on_a_full_disk_is_named_with_the_fix(small_disk):
    """The lock file's pid was written in place: a disk that filled as a training started ended
    `pretrain` with `[Errno 28] No space left on device`, naming no file (seen with the disk filled
    2-4 s after the start)."""
    from solo_ncp.io import folder_lock

    disk = small_disk("size=1M")
    (disk / "filler").write_bytes(b"x" * shutil.disk_usage(disk).free)
    with pytest.raises(DiskFullError) as raised, folder_lock(disk / "run"):
        pass
    assert str(raised.value) == (f"no room left on the disk of {disk / 'run'} for .lock: free space there, or write "
                                 "to a folder on a larger disk")
    assert sorted(path.name for path in disk.iterdir()) == ["filler"]


def test_a_full_disk_met_by_any_write_of_a_command_is_its_error_line(tmp_path, monkeypatch, capsys):
    """An ENOSPC from a write outside the atomic ones (a file written in place, a folder made)
    ended a command with `[Errno 28] No space left on device: '<path>'`, without the fix."""
    from solo_ncp.cli import main
    from solo_ncp.commands import report as report_command
    from tests.test_report_consistency import write_metrics

    def fails(inputs, folder, stem):
        raise OSError(errno.ENOSPC, "No space left on device", str(folder / f"{stem}_fig2.png"))

    monkeypatch.setattr(report_command, "draw_figures", fails)
    out = tmp_path / "report"
    assert main(["report", str(write_metrics(tmp_path / "eval", 0, "ncp-s0")), "--out", str(out / "report.md")]) == 2
    assert capsys.readouterr().err.strip().splitlines()[-1] == (
        f"error: no room left on the disk of {out / '.unfinished'} for report_fig2.png: free space there, or write to a "
        "folder on a larger disk (solo-ncp report)")
