"""A step of a pipeline: one `solo-ncp` command run in a subprocess, its output in
`<folder>/step.log`, done when `<folder>/.step-done.json` exists (written atomically after the
command succeeded, with its argv and the hashes of its input files). A step with a folder but no
valid marker was interrupted: run again, a training resumes from its last.ckpt (`--resume`), other
commands replace what they may have written (`--overwrite`)."""
import json
import shlex
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Dict, List, Tuple

from solo_ncp.io import atomic_write_json, file_sha256

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
    rerun: str = "--overwrite"
    """What an interrupted step adds when run again: "--resume" (a training: when its last.ckpt
    exists), "--overwrite" (replaces a result written just before the interruption) or ""."""
    inputs: Tuple[Path, ...] = ()
    """Files whose contents the step's result depends on beyond its argv (the report's inputs)."""

    def state(self) -> str:
        """"done" (marker present, same argv and inputs), "partial" (interrupted: folder present,
        no valid marker) or "todo"."""
        marker = self.folder / DONE
        if marker.is_file():
            recorded = json.loads(marker.read_text())
            if recorded.get("argv") == self.argv() and recorded.get("inputs") == self._input_hashes():
                return "done"
        return "partial" if self.folder.is_dir() and any(self.folder.iterdir()) else "todo"

    def _input_hashes(self) -> Dict[str, str]:
        return {str(path): file_sha256(path) for path in self.inputs if path.is_file()}

    def command(self, state: str) -> List[str]:
        """The argv to run from `state`: an interrupted training resumes its last.ckpt, other
        interrupted steps overwrite what they may have written."""
        argv = self.argv()
        if state == "partial" and self.rerun == "--resume":
            argv += ["--resume"] if (self.folder / "last.ckpt").is_file() else []
        elif state == "partial" and self.rerun:
            argv += [self.rerun]
        return argv

    def run(self, state: str) -> float:
        """Runs the command (output appended to the step's log); marks the step done; seconds."""
        argv = self.command(state)
        self.folder.mkdir(parents=True, exist_ok=True)
        log = self.folder / LOG
        start = time.perf_counter()
        with open(log, "a") as stream:
            stream.write(f"\n=== {time.strftime('%Y-%m-%d %H:%M:%S')} solo-ncp {shlex.join(argv)}\n")
            stream.flush()
            code = subprocess.run([sys.executable, "-m", "solo_ncp.cli", *argv], stdout=stream,
                                  stderr=subprocess.STDOUT,
                                  preexec_fn=die_with_parent if sys.platform == "linux" else None
                                  ).returncode
        if code != 0:
            raise StepFailed(f"step {self.name} failed (exit {code}): {last_error(log)}; its log: {log}")
        seconds = time.perf_counter() - start
        atomic_write_json(self.folder / DONE, {"argv": self.argv(), "ran": argv, "seconds": seconds,
                                               "inputs": self._input_hashes()})
        return seconds


def die_with_parent() -> None:
    """Linux, in the step's process before it starts: SIGKILL it when reproduce dies (kill -9
    included), so a re-run never meets a step still running from the killed one."""
    import ctypes
    import signal

    ctypes.CDLL(None, use_errno=True).prctl(1, signal.SIGKILL)  # 1 = PR_SET_PDEATHSIG


def last_error(log: Path) -> str:
    """The log's last `error:` line (without the prefix), or its last non-empty line."""
    lines = [line.strip() for line in log.read_text(errors="replace").splitlines() if line.strip()]
    errors = [line for line in lines if line.startswith("error:")]
    return (errors[-1][len("error:"):].strip() if errors else lines[-1] if lines else "no output")


def fixed(argv: List[str]) -> Callable[[], List[str]]:
    """An argv known when the plan is made."""
    return lambda: list(argv)


def say_now(line: str) -> None:
    print(line, flush=True)
