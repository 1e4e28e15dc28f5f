"""Files a command writes and reads back: atomic, synced writes and checksums (a crash never leaves
a half-written result behind), JSON records read back with an error naming a damaged file, a check
that an output folder can be written before any work starts, and the lock that keeps two processes
from training in one run folder."""
import errno
import fcntl
import hashlib
import json
import os
import re
import shutil
import tempfile
from contextlib import contextmanager, nullcontext
from pathlib import Path
from typing import Any, Callable, Iterable, Iterator, List, Mapping, Optional, Sequence, Union

from solo_ncp.interrupt import finished_where, results_written, signals_held
from solo_ncp.run_files import LAST

PathLike = Union[str, os.PathLike]
LOCK_NAME = ".lock"


class NotWritableError(OSError):
    """An output folder cannot be written; the message names it and the reason."""


class FolderLockedError(OSError):
    """Another live process holds a folder's lock; the message names its pid."""


DISK_FULL = (errno.ENOSPC, errno.EDQUOT)
"""A write's errors where its disk (or the user's quota on it) has no room left."""
FULL_BELOW = 2 ** 20
"""Bytes free below which a disk counts as full: torch.save's writer reports a full disk as a
RuntimeError ("unexpected pos", "iostream error"), without ENOSPC."""


class DiskFullError(OSError):
    """A write found no room left on its disk: the message names the folder, the file, how much of
    it was written (`writing`) and the fix."""

    def __init__(self, message: str):
        super().__init__(errno.ENOSPC, message)

    @classmethod
    def writing(cls, path: PathLike, written: Optional[int] = None) -> "DiskFullError":
        """For file `path`, written to a temporary file that held `written` bytes when the disk
        filled (then removed), or written in place (None)."""
        path = Path(path)
        if written is None:
            partial = ""
        elif written == 0:
            partial = " (none of it written when the disk filled)"
        else:
            size = f"{written / 2 ** 20:.1f} MB" if written >= 2 ** 20 else f"{written} bytes"
            partial = f" ({size} of it written when the disk filled, removed again)"
        return cls(f"no room left on the disk of {path.parent} for {path.name}{partial}: free space there, or write "
                   "to a folder on a larger disk")

    def __str__(self) -> str:
        return self.strerror


def _chain(err: Optional[BaseException]) -> List[BaseException]:
    """`err` and the errors it was raised from or in the handling of, outermost first."""
    chain = []
    while err is not None and err not in chain:
        chain.append(err)
        err = err.__cause__ or err.__context__
    return chain


def disk_full_in(err: BaseException) -> Optional[DiskFullError]:
    """The full disk behind `err`, if any: a DiskFullError that `err` is or was raised in the
    handling of (Lightning's logger failing on the full disk too as it stops), else an OSError of
    `DISK_FULL` among them (a file written in place, such as Lightning's metrics.csv) as one,
    one that names its file first."""
    chain = _chain(err)
    full = [seen for seen in chain if isinstance(seen, OSError) and seen.errno in DISK_FULL]
    ours = [seen for seen in full if isinstance(seen, DiskFullError)]
    if ours or not full:
        return next(iter(ours), None)
    named = [seen for seen in full if seen.filename]
    if named:
        return DiskFullError.writing(named[0].filename)
    return DiskFullError(f"no room left on the disk of a file it wrote ({full[0]}): free space there")


ACCESS_DENIED = (errno.EACCES, errno.EPERM)
"""An open's errors where the user may not read or write the file (its permissions, its owner)."""


def access_denied_in(err: BaseException) -> Optional[PermissionError]:
    """The file behind `err` that the user may not open, if any, as one error naming it and the
    fix: an OSError of `ACCESS_DENIED` among `err`'s chain (a reader's "not a checkpoint" or "not a
    k.json", raised in its handling, would send the user to write a file again that is whole)."""
    denied = [seen for seen in _chain(err) if isinstance(seen, OSError) and seen.errno in ACCESS_DENIED]
    if not denied or isinstance(err, NotWritableError):  # that one says so, naming the option to change
        return None
    name = next((seen.filename for seen in denied if seen.filename), None)
    what = f"{name}" if name else f"a file ({denied[0]})"
    return PermissionError(f"permission denied to open {what}: give your user access to it (chmod, chown), "
                           "or use a copy or a folder of your own")


def resolved(path: PathLike) -> Path:
    """`path` absolute with its links followed; a loop of links stays as it is (Path.resolve raised
    RuntimeError "Symlink loop", a traceback for `--ckpt` or `--out` given such a link)."""
    return Path(os.path.realpath(path))


def wrong_kind(path: PathLike, kind: str) -> Optional[str]:
    """What keeps `path` from being a `kind` ("file" or "folder"), for an error message: "does not
    exist", "is a folder, not a file", "is a file, not a folder", or for anything else (a device,
    a pipe) "is not a regular file" / "is not a folder"; None when it is one (links followed)."""
    path = Path(path)
    if not path.exists():
        return ("is a link to nothing (its target is missing, or a loop of links)" if path.is_symlink()
                else "does not exist")
    if kind == "folder":
        return None if path.is_dir() else "is a file, not a folder" if path.is_file() else "is not a folder"
    return None if path.is_file() else "is a folder, not a file" if path.is_dir() else "is not a regular file"


def atomic_write(path: PathLike, write: Callable[[str], None], result: bool = False) -> Path:
    """Run `write(tmp_path)` on a temp file next to `path`, then rename it over `path`.

    Durable when the machine dies, not only the process (power cut, node pre-empted, kernel
    panic): the temp file's data are on the disk (fsync) before the rename, and the rename is (the
    folder's fsync) before this returns. A crash leaves the old file or the whole new one, never an
    empty or truncated one, and files written one after another (a checkpoint, then the step's
    done-marker) reach the disk in that order. A full disk (`DISK_FULL`, or torch.save's
    RuntimeError with under `FULL_BELOW` bytes free) is a DiskFullError naming `path`. `result`:
    `path` is the whole result of the running command (`plot`'s PNG): the rename is made with
    the interrupt signals held and recorded (`interrupt.results_written`), so that a signal then says
    the result is written (`staged_outputs` does this for a result of several files)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
    os.close(fd)
    umask = os.umask(0)
    os.umask(umask)
    os.chmod(tmp, 0o666 & ~umask)
    try:
        write(tmp)
        _sync(tmp)
        with signals_held(finished_where([path])) if result else nullcontext():
            os.replace(tmp, path)
            if result:
                results_written(path)
    except BaseException as err:
        full = (isinstance(err, OSError) and err.errno in DISK_FULL
                or isinstance(err, RuntimeError) and shutil.disk_usage(path.parent).free < FULL_BELOW)
        written = 0
        if os.path.exists(tmp):
            written = os.path.getsize(tmp)
            os.remove(tmp)
        if full:
            raise DiskFullError.writing(path, written) from err
        raise
    _sync(path.parent, folder=True)
    return path


CANNOT_SYNC = (errno.EINVAL, errno.ENOTSUP, errno.ENOSYS)
"""fsync's errors where a file system does not sync (a folder on some, some network and FUSE file
systems): the write stands, as durable as that file system makes it. Any other error (EIO, ENOSPC)
means the data may not be on the disk, and raises."""


def _sync(path: PathLike, folder: bool = False) -> None:
    """fsync of a file's data, or of a folder's entries."""
    fd = os.open(path, os.O_RDONLY | (os.O_DIRECTORY if folder else 0))
    try:
        os.fsync(fd)
    except OSError as err:
        if err.errno not in CANNOT_SYNC:
            raise
    finally:
        os.close(fd)


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


JSON_KINDS = {dict: "an object", list: "an array", str: "a string", int: "a number", float: "a number",
              bool: "a boolean", type(None): "null"}


def is_whole(value: object, at_least: Optional[int] = None) -> bool:
    """Whether a JSON value is a whole number (not a boolean), `at_least` or more where given (a
    count of test images: 0; a number of clusters: 2)."""
    return (isinstance(value, int) and not isinstance(value, bool)
            and (at_least is None or value >= at_least))


def read_json(path: PathLike):
    """The JSON value in the UTF-8 file `path`. ValueError where it holds none: UnicodeDecodeError,
    JSONDecodeError, or nesting deeper than Python's recursion limit (a damaged file: no solo-ncp
    result nests more than a few levels), which json raises as a RecursionError."""
    try:
        return json.loads(Path(path).read_text(encoding="utf-8"))
    except RecursionError:
        raise ValueError("it nests deeper than Python reads (no result of solo-ncp nests more than a few "
                         "levels: a damaged file)") from None


def read_json_object(path: PathLike, what: str) -> dict:
    """The JSON object in `path`, which should be `what` ("a k.json of `solo-ncp select-k`"). A file
    that cannot be read, is not UTF-8 JSON (empty, truncated, binary, nested without end) or holds
    no JSON object is a ValueError naming it and `what`."""
    try:
        record = read_json(path)
    except (OSError, ValueError) as err:  # UnicodeDecodeError and JSONDecodeError are ValueErrors
        raise ValueError(f"{path} is not {what}: {err}") from None
    if not isinstance(record, dict):
        raise ValueError(f"{path} is not {what}: it holds {JSON_KINDS[type(record)]}, not a JSON object")
    return record


def remove_outputs(folder: PathLike, names: Iterable[str]) -> List[str]:
    """Removes the files `names` (all a command may write into `folder`) where they exist, so that
    a run writing there leaves no earlier run's file beside its own; any other file stays. Returns
    the names removed."""
    folder = Path(folder)
    removed = [name for name in names if (folder / name).is_file()]
    for name in removed:
        (folder / name).unlink()
    return removed


UNFINISHED = ".unfinished"
"""The hidden folder a command writes its result files into before they replace the earlier ones."""


@contextmanager
def staged_outputs(folder: PathLike, names: Sequence[str], last: str) -> Iterator[Path]:
    """Yields the empty folder `folder/.unfinished` for a command's result files. When the block
    ends, they replace the earlier result in `folder`: of the files `names` (all the command may
    write), the earlier ones are removed, `last` (the file saying the result is complete) first,
    and the staged ones moved in, `last` last, each by a rename, with the interrupt signals held
    (`signals_held`: one arriving then is raised once the new result is in). A block that raises (a
    bad input, an interruption) leaves the earlier result as it was, and removes its staged files,
    and `folder` where the block made it and nothing else is in it (a first run that failed left an
    empty result folder). A killed process's staged files go when the command next runs."""
    folder = Path(folder)
    made = not folder.exists()
    staging = folder / UNFINISHED
    if staging.is_symlink() or staging.is_file():
        staging.unlink()
    shutil.rmtree(staging, ignore_errors=True)
    staging.mkdir(parents=True)
    try:
        yield staging
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        if made and not any(folder.iterdir()):
            folder.rmdir()
        raise
    with signals_held(finished_where([folder])):
        remove_outputs(folder, [last, *(name for name in names if name != last)])
        for name in sorted((path.name for path in staging.iterdir()), key=lambda name: name == last):
            os.replace(staging / name, folder / name)
        staging.rmdir()
        _sync(folder, folder=True)
        results_written(folder)


def file_sha256(path: PathLike, chunk_bytes: int = 1 << 20) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(chunk_bytes), b""):
            digest.update(chunk)
    return digest.hexdigest()


def check_writable(folder: PathLike, option: str = "--out") -> Path:
    """Raises NotWritableError unless files can be created in `folder`, without creating it: a
    probe file is created and removed in `folder`, or in its nearest existing ancestor when
    `folder` does not exist yet (the command creates it later). `option`: what sets the folder,
    named in the fix."""
    folder = Path(folder)
    existing = next(p for p in (folder, *folder.parents) if p.exists() or p.is_symlink())
    fix = f"choose a writable {option}, or fix that folder's permissions"
    problem = wrong_kind(existing, "folder")
    if problem:
        raise NotWritableError(f"cannot write to {folder}: {existing} {problem}: choose another {option}")
    try:
        fd, probe = tempfile.mkstemp(prefix=".solo-ncp-probe.", dir=existing)
        os.close(fd)
        os.remove(probe)
    except OSError as err:
        if err.errno in DISK_FULL:
            fix = f"free space there, or choose an {option} on a larger disk"
        raise NotWritableError(f"cannot write to {folder}: {err.strerror} in {existing}: {fix}") from None
    return folder


RESULT_RECORDS = {"metrics.json": "eval", "export.json": "export", "poc.json": "poc", "k.json": "select-k"}
"""The record each command writing a result folder writes into its --out (eval's METRICS_FILE,
export's EXPORT_INFO, poc's POC_JSON, select-k's K_FILE) -> that command: a folder holding one is
that command's result."""


def check_out_folder(folder: PathLike, record: Optional[str], outputs: Iterable[str],
                     reads: Optional[Mapping[str, Optional[PathLike]]] = None, option: str = "--out",
                     command: Optional[str] = None) -> Path:
    """Before any work, a ValueError naming the folder, what it holds and the fix, when the command
    whose result record is `record` (a key of RESULT_RECORDS; None for `command`, which writes no
    record: report), and which may write or remove the files `outputs` in `folder`, would mix its
    result with another's or destroy its own input:

    - `folder` is a training run's (its LAST checkpoint) or holds another command's result (its
      record): --overwrite does not lift this, as it replaces only the command's own earlier
      result (an export's encoder.pt is not eval's);
    - an input of `reads` ({option: path}, e.g. {"--ckpt": ...}; None: not given) is one of
      `outputs` in `folder` (as given or with its links followed), lies in `folder`'s staging
      folder, or is a folder that is `folder` itself (an export folder read as --ckpt)."""
    folder = Path(folder)
    command = command or RESULT_RECORDS[record]
    if (folder / LAST).exists():
        raise ValueError(f"{option} {folder} is a training run's folder ({LAST}): `solo-ncp {command}` "
                         f"does not write into it; choose another {option}")
    for name, other in RESULT_RECORDS.items():
        if name != record and (folder / name).exists():
            own = f" (--overwrite replaces only an earlier `solo-ncp {command}` result)" if record else ""
            raise ValueError(
                f"{option} {folder} holds the result of `solo-ncp {other}` ({name}): `solo-ncp {command}` "
                f"does not write into another command's folder{own}; choose another {option}")
    place = resolved(folder)
    written = {place / name for name in outputs}
    for what, read in (reads or {}).items():
        if read is None:
            continue
        read = Path(read)
        paths = {resolved(read.parent) / read.name, resolved(read)}
        if read.is_dir() and resolved(read) == place:
            where = f"is the {option} folder"
        elif paths & written or any(path.is_relative_to(place / UNFINISHED) for path in paths):
            where = f"is a file `solo-ncp {command}` writes in {option} {folder}"
        else:
            continue
        raise ValueError(f"{what} {read} {where}: `solo-ncp {command}` would remove or replace the file "
                         f"it reads; choose another {option}")
    return folder


TEMPORARY = re.compile(r"\..+\.[a-z0-9_]{8}")
"""Names of `atomic_write`'s (and `check_writable`'s) temporary files: `.<name>.` and mkstemp's 8
random characters, e.g. `.last.ckpt.k2x9_a0q`."""


_held_locks = set()
"""Descriptors of the lock files this process holds."""


def _close_held_locks() -> None:
    """In a forked child (a DataLoader worker): closes its copies of the held lock files, so a
    lock ends with the process that took it, not with its last worker (the flock belongs to the
    open file, which a fork shares; closing a copy keeps it, unlocking would not)."""
    for fd in _held_locks:
        os.close(fd)
    _held_locks.clear()


os.register_at_fork(after_in_child=_close_held_locks)


def _lock_holder(fd: int) -> str:
    """The pid written in the open lock file, or "(unknown)"."""
    text = os.pread(fd, 32, 0).decode(errors="replace").strip()
    return text if text.isdigit() else "(unknown)"


def _open_locked(path: Path) -> int:
    """An open descriptor of `path` holding its exclusive flock. Retries while the file it locked
    is no longer the one at `path` (its holder released it and removed it meanwhile). Raises
    FolderLockedError naming the pid written in the file when another process holds it."""
    while True:
        fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = _lock_holder(fd)
            os.close(fd)
            raise FolderLockedError(f"{path.parent} is in use by process {holder} (lock file {path}): "
                                    "wait until it ends") from None
        if _same_file(path, fd):
            return fd
        os.close(fd)


def _same_file(path: Path, fd: int) -> bool:
    """Whether `path` still names the file open as `fd`."""
    try:
        return os.path.samestat(os.stat(path), os.fstat(fd))
    except FileNotFoundError:
        return False


def remove_temporaries(folder: Path) -> None:
    """Removes the temporary files atomic writes left in `folder` when their process was killed."""
    for path in folder.iterdir():
        if TEMPORARY.fullmatch(path.name) and path.is_file():
            path.unlink(missing_ok=True)


@contextmanager
def folder_lock(folder: PathLike) -> Iterator[Path]:
    """Holds an exclusive `fcntl.flock` on `folder/.lock` for the block (the kernel releases it when
    the process dies, however it dies); the file holds the pid for the error message of a process
    refused. Taking it, removes the temporary files a killed holder's atomic writes left. The folders
    it had to create are removed again, deepest first, while empty at the end. Raises FolderLockedError naming
    a live holder."""
    folder = Path(folder)
    created = [parent for parent in (folder, *folder.parents) if not parent.exists()]  # deepest first
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / LOCK_NAME
    fd = _open_locked(path)
    _held_locks.add(fd)
    try:
        previous = _lock_holder(fd)
        if previous != "(unknown)":
            print(f"[solo-ncp] {folder}: taking over the lock of process {previous}, which is gone")
        try:
            os.ftruncate(fd, 0)
            os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
        except OSError as err:
            if err.errno in DISK_FULL:
                raise DiskFullError.writing(path) from None
            raise
        remove_temporaries(folder)
        yield path
    finally:
        if fd in _held_locks:  # not in a forked child leaving the block
            _release(path, fd, created)


def _release(path: Path, fd: int, created: Sequence[Path]) -> None:
    """Removes the lock file (while still locked, if it is still ours), then unlocks it by closing
    it; then the folders the lock `created` (deepest first), each while it is empty."""
    _held_locks.discard(fd)
    if _same_file(path, fd):
        path.unlink()
    os.close(fd)
    for folder in created:
        if any(folder.iterdir()):
            break
        folder.rmdir()
