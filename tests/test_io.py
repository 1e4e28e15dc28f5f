"""solo_ncp.io: a path of the wrong kind is named as what it is, atomic writes keep the old file on
failure, output folders are checked before any work, and a folder lock admits one live process (a
dead one's lock is taken over, by one process of several racing for it, also when its pid now
belongs to another process), whose taking it removes the temporary files a killed atomic write
left."""
import errno
import multiprocessing
import os
import re
import shutil
import subprocess
import sys
import tempfile

import pytest

from solo_ncp.io import (
    LOCK_NAME,
    DiskFullError,
    FolderLockedError,
    NotWritableError,
    atomic_write,
    atomic_write_text,
    check_writable,
    folder_lock,
    wrong_kind,
)
from tests.conftest import ROOT


def test_wrong_kind_names_what_a_path_is_instead(tmp_path):
    (tmp_path / "a_file").write_text("")
    (tmp_path / "a_folder").mkdir()
    (tmp_path / "a_link").symlink_to(tmp_path / "a_folder")
    (tmp_path / "a_broken_link").symlink_to(tmp_path / "gone")
    (tmp_path / "a_loop").symlink_to(tmp_path / "a_loop")
    os.mkfifo(tmp_path / "a_pipe")
    said = {(name, kind): wrong_kind(tmp_path / name, kind)
            for name in ("a_file", "a_folder", "a_link", "a_broken_link", "a_loop", "a_pipe", "missing")
            for kind in ("file", "folder")}
    nothing = "is a link to nothing (its target is missing, or a loop of links)"
    assert said == {
        ("a_file", "file"): None, ("a_file", "folder"): "is a file, not a folder",
        ("a_folder", "file"): "is a folder, not a file", ("a_folder", "folder"): None,
        ("a_link", "file"): "is a folder, not a file", ("a_link", "folder"): None,
        ("a_broken_link", "file"): nothing, ("a_broken_link", "folder"): nothing,
        ("a_loop", "file"): nothing, ("a_loop", "folder"): nothing,
        ("a_pipe", "file"): "is not a regular file", ("a_pipe", "folder"): "is not a folder",
        ("missing", "file"): "does not exist", ("missing", "folder"): "does not exist",
    }


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
    with pytest.raises(DiskFullError, match=f"^no room left on the disk of {re.escape(str(tmp_path))} for metrics.json "
                                            r"\(3 bytes of it written when the disk filled, removed again\)"):
        atomic_write_text(target, "new")
    assert target.read_text() == "old" and os.listdir(tmp_path) == ["metrics.json"]


def _synced_and_renamed(record: list):
    """os.fsync and os.replace wrapped to append ("fsync", path) and ("rename", src, dst) to
    `record` (an fd's path read back from /proc), then do their work."""
    fsync, replace = os.fsync, os.replace

    def recorded_fsync(fd):
        record.append(("fsync", os.readlink(f"/proc/self/fd/{fd}")))
        fsync(fd)

    def recorded_replace(src, dst):
        record.append(("rename", str(src), str(dst)))
        replace(src, dst)

    return recorded_fsync, recorded_replace


def _one_temporary(events) -> str:
    (tmp,) = {event[1] for event in events if event[0] == "rename"}
    return tmp


def test_the_data_are_synced_before_the_rename_and_the_folder_after(tmp_path, monkeypatch):
    """What survives a power cut: the temp file's data on the disk before it replaces the old file,
    the folder's entry (the rename) before the write returns."""
    target = atomic_write_text(tmp_path / "last.ckpt", "old")
    events: list = []
    fsync, replace = _synced_and_renamed(events)
    monkeypatch.setattr(os, "fsync", fsync)
    monkeypatch.setattr(os, "replace", replace)
    atomic_write_text(target, "new")
    tmp = _one_temporary(events)
    assert os.path.dirname(tmp) == str(tmp_path) and os.path.basename(tmp).startswith(".last.ckpt.")
    assert events == [("fsync", tmp), ("rename", tmp, str(target)), ("fsync", str(tmp_path))]
    assert target.read_text() == "new"


STRACE = shutil.which("strace")


@pytest.mark.skipif(STRACE is None, reason="strace is not installed (Debian: apt-get install strace)")
def test_the_kernel_sees_the_same_order(tmp_path):
    """Oracle: strace's record of the system calls of a process that writes a file over an old one
    (-y names each fd's file)."""
    target = tmp_path / "last.ckpt"
    target.write_text("old")
    trace = tmp_path / "strace.log"
    code = "import sys; from solo_ncp.io import atomic_write_text; atomic_write_text(sys.argv[1], 'new')"
    calls = "trace=fsync,fdatasync,rename,renameat,renameat2"
    done = subprocess.run([STRACE, "-f", "-y", "-o", str(trace), "-e", calls, sys.executable, "-c", code, str(target)],
                          capture_output=True, text=True, env={**os.environ, "PYTHONPATH": str(ROOT)})
    if done.returncode != 0 and "ptrace" in done.stderr.lower():
        pytest.skip(f"strace cannot trace here: {done.stderr.strip()}")
    assert done.returncode == 0, done.stderr
    events = []
    for line in trace.read_text().splitlines():
        call = re.match(r"\d+ +(\w+)\((.*)\) += 0$", line)
        if call and str(tmp_path) in call[2]:
            if call[1] in ("fsync", "fdatasync"):
                events.append(("fsync", re.fullmatch(r"\d+<(.*)>", call[2])[1]))
            else:
                events.append(("rename", *re.findall(r'"([^"]*)"', call[2])))
    tmp = _one_temporary(events)
    assert os.path.basename(tmp).startswith(".last.ckpt.")
    assert events == [("fsync", tmp), ("rename", tmp, str(target)), ("fsync", str(tmp_path))]
    assert target.read_text() == "new" and sorted(os.listdir(tmp_path)) == ["last.ckpt", "strace.log"]


@pytest.mark.parametrize("code", [errno.EIO, errno.ENOSPC])
def test_a_failed_sync_keeps_the_old_file_and_leaves_no_temporary(code, tmp_path, monkeypatch):
    """Data that may not have reached the disk never replace the old file."""
    target = atomic_write_text(tmp_path / "metrics.json", "old")

    def disk_error(fd):
        raise OSError(code, os.strerror(code))

    monkeypatch.setattr(os, "fsync", disk_error)
    with pytest.raises(OSError, match=os.strerror(code) if code != errno.ENOSPC else "^no room left on the disk of"):
        atomic_write_text(target, "new")
    assert target.read_text() == "old" and os.listdir(tmp_path) == ["metrics.json"]


@pytest.mark.parametrize("code", [errno.EINVAL, errno.ENOTSUP, errno.ENOSYS])
@pytest.mark.parametrize("unsynced", ["file", "folder"])
def test_a_file_system_that_cannot_sync_still_gets_the_file(unsynced, code, tmp_path, monkeypatch):
    """Where a file system does not sync a file or a folder, the write stands."""
    fsync = os.fsync

    def no_sync(fd):
        if os.path.isdir(f"/proc/self/fd/{fd}") == (unsynced == "folder"):
            raise OSError(code, os.strerror(code))
        fsync(fd)

    monkeypatch.setattr(os, "fsync", no_sync)
    target = atomic_write_text(tmp_path / "metrics.json", "old")
    assert atomic_write_text(target, "new").read_text() == "new" and os.listdir(tmp_path) == ["metrics.json"]


def test_writable_folders_pass_without_being_created(tmp_path):
    assert check_writable(tmp_path) == tmp_path
    assert check_writable(tmp_path / "a" / "b") == tmp_path / "a" / "b"
    assert os.listdir(tmp_path) == []


def test_unwritable_folders_are_named(tmp_path, monkeypatch):
    """With the fix, naming what sets the folder (select-k, poc, plot, report and reproduce gave none)."""
    (tmp_path / "file").write_text("")
    with pytest.raises(NotWritableError) as caught:
        check_writable(tmp_path / "file" / "run")
    assert str(caught.value) == (f"cannot write to {tmp_path / 'file' / 'run'}: {tmp_path / 'file'} is a file, not a "
                                 "folder: choose another --out")

    def denied(**kwargs):
        raise PermissionError(13, "Permission denied")

    monkeypatch.setattr(tempfile, "mkstemp", denied)  # what a read-only folder does (not as root)
    with pytest.raises(NotWritableError) as caught:
        check_writable(tmp_path / "run", "checkpoint.dir (or name)")
    assert str(caught.value) == (f"cannot write to {tmp_path / 'run'}: Permission denied in {tmp_path}: choose a "
                                 "writable checkpoint.dir (or name), or fix that folder's permissions")


def test_the_lock_holds_this_pid_refuses_a_second_holder_and_is_released(tmp_path):
    with folder_lock(tmp_path / "run") as lock:
        assert lock.read_text() == f"{os.getpid()}\n"
        with pytest.raises(FolderLockedError, match=f"in use by process {os.getpid()}"):
            with folder_lock(tmp_path / "run"):
                pass
        assert lock.exists()
    assert not lock.exists() and not (tmp_path / "run").exists()  # it created the folder


def test_the_lock_removes_every_folder_it_created_that_is_left_empty(tmp_path):
    """A command's --out new/deeper/run: its lock made all three folders, and left new/deeper
    behind when the command failed before writing anything."""
    (tmp_path / "new").mkdir()
    with folder_lock(tmp_path / "new" / "deeper" / "run"):
        (tmp_path / "new" / "notes.txt").write_text("the user's")  # meanwhile: `new` is not left empty
    assert sorted(path.name for path in (tmp_path / "new").iterdir()) == ["notes.txt"]
    with folder_lock(tmp_path / "a" / "b" / "c"):
        pass
    assert sorted(path.name for path in tmp_path.iterdir()) == ["new"]


def test_the_lock_is_released_on_errors(tmp_path):
    (tmp_path / "run").mkdir()
    with pytest.raises(ValueError):
        with folder_lock(tmp_path / "run"):
            raise ValueError("bad config")
    assert os.listdir(tmp_path / "run") == []


def test_another_live_process_holds_the_lock(tmp_path):
    """...and the temporary file of its atomic write in progress stays."""
    code = ("import sys, time; from solo_ncp.io import folder_lock\n"
            f"with folder_lock({str(tmp_path)!r}):\n    print('held', flush=True); time.sleep(120)")
    holder = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, text=True,
                              env={**os.environ, "PYTHONPATH": str(ROOT)})
    try:
        assert holder.stdout.readline() == "held\n"
        (tmp_path / ".last.ckpt.k2x9_a0q").write_bytes(b"half a checkpoint")
        with pytest.raises(FolderLockedError, match=f"in use by process {holder.pid}"):
            with folder_lock(tmp_path):
                pass
        assert (tmp_path / ".last.ckpt.k2x9_a0q").is_file()
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


def _dead_pid() -> int:
    process = subprocess.Popen(["true"])
    process.wait()
    return process.pid


def test_a_lock_whose_pid_now_names_another_live_process_is_taken(tmp_path):
    """The pid in a lock file left behind was reused by a process that holds no lock."""
    other = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(120)"])
    try:
        (tmp_path / LOCK_NAME).write_text(f"{other.pid}\n")
        with folder_lock(tmp_path) as lock:
            assert lock.read_text() == f"{os.getpid()}\n"
    finally:
        other.kill()
        other.wait()


def test_taking_the_lock_removes_a_killed_writers_temporary_files(tmp_path):
    """Left by a kill during atomic writes: `.<name>.` and mkstemp's 8 characters."""
    (tmp_path / LOCK_NAME).write_text(f"{_dead_pid()}\n")
    left = [".last.ckpt.k2x9_a0q", ".config.yaml.abcdefgh", ".run-ep=9.ckpt.0_1_2_3_"]
    kept = ["last.ckpt", ".step-done.json", ".hidden", "notes.abcdefgh", ".last.ckpt.short"]
    for name in left + kept:
        (tmp_path / name).write_text(name)
    with folder_lock(tmp_path):
        assert sorted(p.name for p in tmp_path.iterdir()) == sorted(kept + [LOCK_NAME])


def _race(folder: str, start, outcomes, release) -> None:
    """One of the racers: takes `folder`'s lock once all are ready, says whether it got it, and
    keeps it until `release` is set."""
    start.wait()
    try:
        with folder_lock(folder):
            outcomes.put("held")
            release.wait()
    except FolderLockedError:
        outcomes.put("refused")


def test_three_processes_racing_for_a_dead_processs_lock_one_gets_it(tmp_path):
    """50 times: a lock file of a process that is gone, three processes taking it at the same
    moment (a barrier); exactly one holds it, the others are refused."""
    context = multiprocessing.get_context("fork")
    for trial in range(50):
        folder = tmp_path / str(trial)
        folder.mkdir()
        (folder / LOCK_NAME).write_text(f"{_dead_pid()}\n")
        start, outcomes, release = context.Barrier(3), context.Queue(), context.Event()
        racers = [context.Process(target=_race, args=(str(folder), start, outcomes, release))
                  for _ in range(3)]
        for racer in racers:
            racer.start()
        got = sorted(outcomes.get(timeout=60) for _ in racers)
        release.set()
        for racer in racers:
            racer.join()
        assert got == ["held", "refused", "refused"], (trial, got)
