"""A step of a pipeline: one `solo-ncp` command run in a subprocess, its output in
`<folder>/step.log`, done when `<folder>/.step-done.json` exists (written atomically once the
command succeeded and its result is complete - a training's last.ckpt at its last epoch, another
command's result file - with its argv and the hashes of its input files). A step with a folder but
no valid marker was interrupted: run again, a training resumes from its last.ckpt (`--resume`),
other commands replace what they may have written (`--overwrite`)."""
import functools
import os
import re
import shlex
import signal
import subprocess
import sys
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO, Callable, Dict, List, Optional, Tuple

from solo_ncp.interrupt import Interrupted, as_interrupted, raise_pending
from solo_ncp.config.overrides import override_of
from solo_ncp.io import DISK_FULL, atomic_write_json, file_sha256, read_json_object, resolved

Missing = Callable[[], Optional[str]]
"""What a step's result still lacks, in words ("it wrote no <folder>/k.json"); None when it is
complete."""

DONE = ".step-done.json"
LOG = "step.log"


class StepFailed(ValueError):
    """A step's command exited non-zero (its error line is in the step's log)."""


@dataclass(frozen=True)
class Step:
    """One command of the plan. argv() is built when the step runs (poc reads K from k.json)."""

    name: str
    folder: Path
    argv: Callable[[], List[str]]
    missing: Missing
    """Checked after the command exited 0, and again before a marked step is skipped."""
    rerun: str = "--overwrite"
    """What an interrupted step adds when run again: "--resume" (a training: when its last.ckpt
    exists), "--overwrite" (replaces a result written just before the interruption) or ""."""
    inputs: Tuple[Path, ...] = ()
    """Files whose contents the step's result depends on beyond its argv: the checkpoints and
    k.json it reads (the report: the results it tabulates)."""

    def state(self) -> str:
        """"done" (marker present, same argv and inputs, result complete), "stale" (the same, but
        an input changed since it ran), "partial" (interrupted: folder present, no valid marker)
        or "todo"."""
        recorded = self._marker()
        if same_argv(recorded.get("argv"), self.argv()) and self.missing() is None:
            return "stale" if self.changed_inputs(recorded) else "done"
        return "partial" if self.folder.is_dir() and any(self.folder.iterdir()) else "todo"

    def _marker(self) -> Dict:
        """The done-marker's record; {} without one, or with a damaged one (the step runs again):
        one whose inputs are no {path: sha256}."""
        try:
            record = read_json_object(self.folder / DONE, "a step's done-marker")
        except ValueError:
            return {}
        inputs = record.get("inputs") or {}
        valid = isinstance(inputs, dict) and all(isinstance(value, str) and "\0" not in path
                                                 for path, value in inputs.items())
        return record if valid else {}

    def _input_hashes(self) -> Dict[str, str]:
        return {str(resolved(path)): _sha256(path) for path in self.inputs if path.is_file()}

    def changed_inputs(self, recorded: Optional[Dict] = None) -> List[str]:
        """The inputs whose contents differ from those the step's marker records (a marker written
        before the step recorded its inputs, whose record of them is empty, is trusted)."""
        recorded = as_resolved_keys((self._marker() if recorded is None else recorded).get("inputs") or {})
        now = self._input_hashes() if recorded else {}
        return sorted(path for path in set(recorded) | set(now) if recorded.get(path) != now.get(path))

    def command(self, state: str) -> List[str]:
        """The argv to run from `state`: an interrupted training resumes its last.ckpt, other
        interrupted steps, and those whose inputs changed, overwrite what they wrote."""
        argv = self.argv()
        if state == "partial" and self.rerun == "--resume":
            argv += ["--resume"] if (self.folder / "last.ckpt").is_file() else []
        elif state in ("partial", "stale") and self.rerun and self.rerun != "--resume":
            argv += [self.rerun]
        return argv

    def check_runnable(self, state: str) -> None:
        """StepFailed where running the step from `state` would mix results: a training done from
        inputs that changed since (resuming it would keep what it learnt from the old ones), or an
        interrupted training whose last.ckpt cannot be read."""
        if state == "stale" and self.rerun == "--resume":
            raise StepFailed(
                f"step {self.name} was trained from other inputs than those there now "
                f"({', '.join(self.changed_inputs())} changed since): move {self.folder} away to "
                "train it again from them, or restore them")
        last = self.folder / "last.ckpt"
        if state == "partial" and self.rerun == "--resume" and last.is_file():
            from solo_ncp.models.checkpoint import CheckpointError, read_checkpoint

            try:
                read_checkpoint(last)
            except CheckpointError as err:
                raise StepFailed(f"step {self.name} cannot resume: {err.problem}. Delete {last} to train "
                                 "the step from its start (or restore it), then run the same command "
                                 "again") from None

    def run(self, state: str) -> float:
        """Runs the command (output appended to the step's log); marks the step done when it
        exited 0 with its result complete; seconds."""
        argv = self.command(state)
        self.folder.mkdir(parents=True, exist_ok=True)
        log = self.folder / LOG
        start = time.perf_counter()
        output = StepOutput(open(log, "ab", buffering=0))
        output.write(f"\n=== {time.strftime('%Y-%m-%d %H:%M:%S')} solo-ncp {shlex.join(argv)}\n".encode(), keep=False)
        try:
            process = subprocess.Popen([sys.executable, "-m", "solo_ncp.cli", *argv],
                                       stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                                       stderr=subprocess.STDOUT, preexec_fn=own_group_dying_with_parent)
        except BaseException:
            output.log.close()
            raise
        copying = output.copy(process.stdout)
        try:
            code = wait_for(process, self.name)
        finally:
            copying.join(timeout=OUTPUT_AFTER_EXIT_S)
        if code < 0:
            raise StepFailed(f"step {self.name} was killed by {signal.Signals(-code).name}"
                             f"{' (the out-of-memory killer sends it)' if -code == signal.SIGKILL else ''}, "
                             f"not marked done: run the same command again to continue it; its log: "
                             f"{log}{output.lost_note()}")
        if code != 0:
            raise StepFailed(f"step {self.name} failed (exit {code}): {last_error(output.tail_text())}; once that "
                             f"is mended, running reproduce again continues from this step (a mend that changes "
                             f"reproduce's settings needs another --out); its log: {log}{output.lost_note()}")
        missing = self.missing()
        if missing is not None:
            raise StepFailed(f"step {self.name} exited 0 but {missing}: not marked done; its log: {log}"
                             f"{output.lost_note()}")
        seconds = time.perf_counter() - start
        atomic_write_json(self.folder / DONE, {"argv": self.argv(), "ran": argv, "seconds": seconds,
                                               "inputs": self._input_hashes()})
        return seconds


def same_argv(recorded, argv: List[str]) -> bool:
    """Whether a done-marker's `recorded` argv is `argv` (whose paths reproduce resolved): equal
    item by item, or a path, or a Hydra override `key=path`, spelled as a marker of a version that
    did not resolve them has it (`runs/x/s0/simclr/last.ckpt`, from the current folder, for
    `/home/u/runs/x/s0/simclr/last.ckpt`). A damaged record is no match."""
    if not isinstance(recorded, list) or len(recorded) != len(argv):
        return False
    return all(old == new or _same_path(old, new) for old, new in zip(recorded, argv))


def _same_path(old, new: str) -> bool:
    """Whether `old`, read as a path from the current folder (an override's value as its value),
    is the absolute path `new` (an override of its path)."""
    if not isinstance(old, str):
        return False
    key, is_override, value = old.partition("=")
    try:
        if is_override and not key.startswith("-") and not value.startswith(("'", '"')):
            return new == override_of(key, resolved(value))
        return os.path.isabs(new) and str(resolved(old)) == new
    except (ValueError, OSError):  # a NUL, a name too long: no path of this machine
        return False


def as_resolved_keys(hashes: Dict[str, str]) -> Dict[str, str]:
    """A done-marker's {input path: sha256} keyed by absolute paths (an earlier version recorded
    them as --out was spelled, from the current folder)."""
    return {str(resolved(path)): digest for path, digest in hashes.items()}


OUTPUT_AFTER_EXIT_S = 10.0
"""How long reproduce waits, once a step's process has ended, for the rest of its output (the
pipe's content); a process of the step's that outlives it keeps the pipe open, not reproduce."""
TAIL_BYTES = 1 << 16
"""How much of a step's latest output reproduce keeps in memory for the error line it reports."""


class StepOutput:
    """A step's output on its way to the step's log (`log`: a file opened unbuffered for appending),
    its last TAIL_BYTES kept in memory: a log that cannot hold it (a full disk, a quota) loses what
    did not fit, not the error line reproduce reports. `lost`: the first error writing the log
    (None while it holds everything); nothing more is written to the log after it."""

    def __init__(self, log: BinaryIO):
        self.log = log
        self.tail = b""
        self.lost: Optional[OSError] = None

    def write(self, data: bytes, keep: bool = True) -> None:
        """Appends `data` to the log (while it can), and to the tail kept in memory if `keep`."""
        if keep:
            self.tail = (self.tail + data)[-TAIL_BYTES:]
        view = memoryview(data)
        while view and self.lost is None:
            try:
                view = view[self.log.write(view):]
            except OSError as err:
                self.lost = err

    def copy(self, source: BinaryIO) -> threading.Thread:
        """Starts a thread that writes what `source` (the step's stdout and stderr, a pipe) gives
        until it ends, then closes it and the log; join it once the process has ended (a process
        the step started that outlives it holds the pipe open: the thread ends after it)."""
        def pump() -> None:
            try:
                for chunk in iter(lambda: os.read(source.fileno(), 1 << 16), b""):
                    self.write(chunk)
            finally:
                source.close()
                self.log.close()

        thread = threading.Thread(target=pump, name="step-output", daemon=True)
        thread.start()
        return thread

    def tail_text(self) -> str:
        return self.tail.decode(errors="replace")

    def lost_note(self) -> str:
        """"" when the log holds the step's whole output, else what cut it short and the fix."""
        if self.lost is None:
            return ""
        fix = "free space there" if self.lost.errno in DISK_FULL else "mend that"
        return (f" (incomplete: writing it failed with {self.lost.strerror or repr(self.lost)}, and the rest of "
                f"the step's output is lost: {fix} before running reproduce again)")


@functools.lru_cache(maxsize=256)
def _sha256_of(path: str, mtime_ns: int, size: int) -> str:
    return file_sha256(path)


def _sha256(path: Path) -> str:
    """file_sha256, once per version of the file in this process (the plan reads a stage-1
    checkpoint once for each step that uses it)."""
    stat = path.stat()
    return _sha256_of(str(path), stat.st_mtime_ns, stat.st_size)


def wait_for(process: subprocess.Popen, name: str) -> int:
    """The exit code of step `name`'s process. Interrupted (SIGINT, SIGTERM, SIGHUP), this process passes
    the signal on to it (in its own process group, a Ctrl-C at the terminal does not reach it),
    waits for its graceful end (a training saves nothing more, its last.ckpt stays), then raises
    `Interrupted` naming the step. A signal whose raise Python swallowed while the process was
    being started (in an at-fork hook) is still pending here, and passed on the same way."""
    try:
        raise_pending()
        return process.wait()
    except KeyboardInterrupt as err:
        signum = as_interrupted(err).signum
        process.send_signal(signum)
        process.wait()
        raise Interrupted(signum, f"in step {name}, not marked done", "resume with") from None


def own_group_dying_with_parent() -> None:
    """In the step's process before it starts: its own process group (a signal reaches it once,
    from `wait_for`), and on Linux SIGKILL when reproduce dies (kill -9 included), so a re-run
    never meets a step still running from the killed one."""
    os.setpgid(0, 0)
    if sys.platform == "linux":
        import ctypes

        ctypes.CDLL(None, use_errno=True).prctl(1, signal.SIGKILL)  # 1 = PR_SET_PDEATHSIG


def result_file(path: Path, read: Optional[Callable[[Path], object]] = None) -> Missing:
    """A step whose result is the file `path` (k.json, poc.json, metrics.json, report.md), and with
    `read`, one that `read(path)` accepts: a file it refuses (ValueError) is damaged, and its step
    runs again."""
    def missing() -> Optional[str]:
        if not path.is_file():
            return f"it wrote no {path}"
        if read is not None:
            try:
                read(path)
            except ValueError as err:
                return f"its result is damaged ({err})"
        return None
    return missing


def trained(last: Path, max_epochs: int) -> Missing:
    """A training step, complete when its `last` (last.ckpt) holds its last epoch: `epoch`, which
    counts from 0, is max_epochs - 1."""
    def missing() -> Optional[str]:
        from solo_ncp.models.checkpoint import read_checkpoint  # torch: only when a step is checked

        if not last.is_file():
            return f"it wrote no {last}"
        try:
            done = int(read_checkpoint(last)["epoch"]) + 1
        except (KeyError, TypeError, ValueError) as err:  # CheckpointError among them
            return f"{last} is no complete training checkpoint ({err})"
        return None if done >= max_epochs else f"{last} holds {done} of its {max_epochs} epochs"
    return missing


TERMINAL_CONTROL = re.compile(r"\x1b\[[0-9;?]*[A-Za-z]|[\x00-\x08\x0b-\x1f\x7f]")
"""Cursor moves and colours (a progress bar's), and other control characters."""


def last_error(output: str) -> str:
    """The last `error:` line of a step's `output` (without the prefix), or its last non-empty
    line, as plain text: a carriage return (a progress bar's) ends a line too, and terminal control
    sequences (cursor moves, colours) are dropped."""
    lines = [TERMINAL_CONTROL.sub("", line).strip() for line in output.splitlines()]
    lines = [line for line in lines if line]
    errors = [line for line in lines if line.startswith("error:")]
    return (errors[-1][len("error:"):].strip() if errors else lines[-1] if lines else "no output")


def fixed(argv: List[str]) -> Callable[[], List[str]]:
    """An argv known when the plan is made."""
    return lambda: list(argv)


def say_now(line: str) -> None:
    print(line, flush=True)
