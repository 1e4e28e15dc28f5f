"""solo_ncp.io: atomic writes keep the old file on failure, output folders are checked before any
work, and a folder lock admits one live process (a dead one's lock is taken over)."""
import os
import subprocess
import sys
import tempfile

import pytest

from solo_ncp.io import (
    LOCK_NAME,
    FolderLockedError,
    NotWritableError,
    atomic_write,
    atomic_write_text,
    check_writable,
    folder_lock,
)
from tests.conftest import ROOT


def _fail_halfway(tmp: str) -> None:
    with open(tmp, "w") as f:
        f.write("half of the new")
    raise RuntimeError("killed while writing")


def test_a_failed_write_keeps_the_old_file_and_leaves_no_temporary(tmp_path):
    target = atomic_write_text(tmp_path / "metrics.json", "old")
    with pytest.raises(RuntimeError, match="killed while writing"):
        atomic_write(target, _fail_halfway)
    assert target.read_text() == "old" and os.listdir(tmp_path) == ["metrics.json"]


def test_a_failed_rename_keeps_the_old_file_and_leaves_no_temporary(tmp_path, monkeypatch):
    target = atomic_write_text(tmp_path / "metrics.json", "old")

    def no_rename(src, dst):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(os, "replace", no_rename)
    with pytest.raises(OSError, match="No space left"):
        atomic_write_text(target, "new")
    assert target.read_text() == "old" and os.listdir(tmp_path) == ["metrics.json"]


def test_writable_folders_pass_without_being_created(tmp_path):
    assert check_writable(tmp_path) == tmp_path
    assert check_writable(tmp_path / "a" / "b") == tmp_path / "a" / "b"
    assert os.listdir(tmp_path) == []


def test_unwritable_folders_are_named(tmp_path, monkeypatch):
    (tmp_path / "file").write_text("")
    with pytest.raises(NotWritableError, match="is a file, not a folder"):
        check_writable(tmp_path / "file" / "run")

    def denied(**kwargs):
        raise PermissionError(13, "Permission denied")

    monkeypatch.setattr(tempfile, "mkstemp", denied)  # what a read-only folder does (not as root)
    with pytest.raises(NotWritableError, match=f"cannot write to {tmp_path / 'run'}: Permission denied"):
        check_writable(tmp_path / "run")


def test_the_lock_holds_this_pid_refuses_a_second_holder_and_is_released(tmp_path):
    with folder_lock(tmp_path / "run") as lock:
        assert lock.read_text() == f"{os.getpid()}\n"
        with pytest.raises(FolderLockedError, match=f"in use by process {os.getpid()}"):
            with folder_lock(tmp_path / "run"):
                pass
        assert lock.exists()
    assert not lock.exists() and not (tmp_path / "run").exists()  # it created the folder


def test_the_lock_is_released_on_errors(tmp_path):
    (tmp_path / "run").mkdir()
    with pytest.raises(ValueError):
        with folder_lock(tmp_path / "run"):
            raise ValueError("bad config")
    assert os.listdir(tmp_path / "run") == []


def test_another_live_process_holds_the_lock(tmp_path):
    code = ("import sys, time; from solo_ncp.io import folder_lock\n"
            f"with folder_lock({str(tmp_path)!r}):\n    print('held', flush=True); time.sleep(120)")
    holder = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, text=True,
                              env={**os.environ, "PYTHONPATH": str(ROOT)})
    try:
        assert holder.stdout.readline() == "held\n"
        with pytest.raises(FolderLockedError, match=f"in use by process {holder.pid}"):
            with folder_lock(tmp_path):
                pass
    finally:
        holder.kill()
        holder.wait()


def test_a_dead_processs_lock_is_taken_over(tmp_path, capsys):
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"],
                          capture_output=True, text=True).stdout.strip()
    (tmp_path / LOCK_NAME).write_text(f"{dead}\n")
    with folder_lock(tmp_path) as lock:
        assert lock.read_text() == f"{os.getpid()}\n"
    assert f"taking over the lock of process {dead}, which is gone" in capsys.readouterr().out
    assert not lock.exists()
