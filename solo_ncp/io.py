"""Files a command writes: atomic writes and checksums (a crash never leaves a half-written result
behind), a check that an output folder can be written before any work starts, and the lock that
keeps two processes from training in one run folder."""
import hashlib
import json
import os
import tempfile
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Callable, Iterable, Iterator, List, Optional, Union

PathLike = Union[str, os.PathLike]
LOCK_NAME = ".lock"


class NotWritableError(OSError):
    """An output folder cannot be written; the message names it and the reason."""


class FolderLockedError(OSError):
    """Another live process holds a folder's lock; the message names its pid."""


def atomic_write(path: PathLike, write: Callable[[str], None]) -> Path:
    """Run `write(tmp_path)` on a temp file next to `path`, then rename it over `path`."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
    os.close(fd)
    umask = os.umask(0)
    os.umask(umask)
    os.chmod(tmp, 0o666 & ~umask)
    try:
        write(tmp)
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.remove(tmp)
    return path


def atomic_write_text(path: PathLike, text: str) -> Path:
    def write(tmp: str) -> None:
        with open(tmp, "w") as f:
            f.write(text)

    return atomic_write(path, write)


def atomic_write_json(path: PathLike, obj: Any) -> Path:
    return atomic_write_text(path, json.dumps(obj, indent=2, sort_keys=True) + "\n")


def atomic_torch_save(obj: Any, path: PathLike) -> Path:
    import torch  # here only: the console script's options import this module

    return atomic_write(path, lambda tmp: torch.save(obj, tmp))


def remove_outputs(folder: PathLike, names: Iterable[str]) -> List[str]:
    """Removes the files `names` (all a command may write into `folder`) where they exist, so that
    a run writing there leaves no earlier run's file beside its own; any other file stays. Returns
    the names removed."""
    folder = Path(folder)
    removed = [name for name in names if (folder / name).is_file()]
    for name in removed:
        (folder / name).unlink()
    return removed


def file_sha256(path: PathLike, chunk_bytes: int = 1 << 20) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(chunk_bytes), b""):
            digest.update(chunk)
    return digest.hexdigest()


def check_writable(folder: PathLike) -> Path:
    """Raises NotWritableError unless files can be created in `folder`, without creating it: a
    probe file is created and removed in `folder`, or in its nearest existing ancestor when
    `folder` does not exist yet (the command creates it later)."""
    folder = Path(folder)
    existing = next(p for p in (folder, *folder.parents) if p.exists())
    if not existing.is_dir():
        raise NotWritableError(f"cannot write to {folder}: {existing} is a file, not a folder")
    try:
        fd, probe = tempfile.mkstemp(prefix=".solo-ncp-probe.", dir=existing)
        os.close(fd)
        os.remove(probe)
    except OSError as err:
        raise NotWritableError(f"cannot write to {folder}: {err.strerror} in {existing}") from None
    return folder


def _create_lock(path: Path) -> bool:
    """Creates `path` holding this process's pid, atomically (O_EXCL); False if it exists."""
    try:
        fd = os.open(path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
    except FileExistsError:
        return False
    with os.fdopen(fd, "w") as f:
        f.write(f"{os.getpid()}\n")
    return True


def _lock_holder(path: Path) -> Optional[int]:
    """The pid written in a lock file; None when it is unreadable or gone."""
    try:
        return int(path.read_text().strip())
    except (OSError, ValueError):
        return None


def _is_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # alive, owned by another user
        return True
    return True


def _acquire(path: Path) -> None:
    """Takes the lock file `path`, taking over a stale one (its process is gone)."""
    if _create_lock(path):
        return
    holder = _lock_holder(path)
    if holder is None or _is_alive(holder):
        raise FolderLockedError(
            f"{path.parent} is in use by process {holder if holder is not None else '(unknown)'} "
            f"(lock file {path}): wait until it ends, or remove the lock file if no such process runs"
        )
    print(f"[solo-ncp] {path.parent}: taking over the lock of process {holder}, which is gone")
    path.unlink(missing_ok=True)
    if not _create_lock(path):
        raise FolderLockedError(
            f"{path.parent} is in use by process {_lock_holder(path)} (lock file {path}), which "
            "took it over at the same time"
        )


@contextmanager
def folder_lock(folder: PathLike) -> Iterator[Path]:
    """Holds `folder/.lock` (this process's pid) for the block; a folder it had to create is
    removed again if it is empty at the end. Raises FolderLockedError naming a live holder."""
    folder = Path(folder)
    created = not folder.exists()
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / LOCK_NAME
    _acquire(path)
    try:
        yield path
    finally:
        if _lock_holder(path) == os.getpid():
            path.unlink(missing_ok=True)
        if created and not any(folder.iterdir()):
            folder.rmdir()
