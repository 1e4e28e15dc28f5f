"""Ctrl-C (SIGINT), SIGTERM and SIGHUP (the terminal or SSH session closed): `interrupt_signals()`
turns each into `Interrupted`, a KeyboardInterrupt (so Lightning's graceful shutdown runs for
any), which the command that was running may fill in (where it stopped, how to continue) before
`solo_ncp.cli` prints it as one line and exits with 128 + the signal's number (130, 143, 129). A
SIGHUP the process started with ignored stays ignored (`nohup`). A raise Python swallows (one that lands in a
finalizer, `__del__` or a weakref callback, is printed as "Exception ignored" and lost) is not
lost here: the signal stays pending, and `raise_pending()` raises it again where a training
batch starts or ends and where the command ends. Nor is a raise that C code turned into an error
of its own (`interruption`)."""
import signal
import threading
from contextlib import contextmanager
from typing import Iterable, Iterator, List, Optional

SIGNALS = (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)
_depth = 0
"""How many `interrupt_signals` blocks are open (a command running another in-process: demo)."""
_pending: Optional[int] = None
"""The signal that arrived while the outermost block is open, None before any."""
_written: Optional[List[str]] = None
"""The results the running command has finished writing (`results_written`), None outside a
`command_results` block."""


class Interrupted(KeyboardInterrupt):
    """Signal `signum` arrived. `where`: what it stopped, e.g. "in epoch 2 of 3 (...)" ("": not
    known); `again`: how to continue, "resume with" / "start again with" (None: nothing to
    continue), by the same command plus `option` ("--resume", or "" for none); `line`: the whole
    message once a command running in-process under another has composed it."""

    def __init__(self, signum: int = signal.SIGINT, where: str = "", again: Optional[str] = None,
                 option: str = ""):
        super().__init__(signal.Signals(signum).name)
        self.signum = signum
        self.where = where
        self.again = again
        self.option = option
        self.line: Optional[str] = None

    @property
    def exit_code(self) -> int:
        """The shell's code of a process ended by the signal: 130 (SIGINT), 143 (SIGTERM), 129 (SIGHUP)."""
        return 128 + self.signum

    @property
    def signal_name(self) -> str:
        return signal.Signals(self.signum).name


def as_interrupted(err: KeyboardInterrupt) -> Interrupted:
    """`err` itself, or, for a KeyboardInterrupt raised by Python's own SIGINT handler, the same
    as an Interrupted of SIGINT."""
    return err if isinstance(err, Interrupted) else Interrupted(signal.SIGINT)


def interruption(err: BaseException) -> Optional[Interrupted]:
    """The interruption behind `err`, None if none: `err` itself for a KeyboardInterrupt; for any
    other error, the signal that arrived before it in the open block. C code that calls Python
    code turns the handler's raise there into an error of its own: torch.as_tensor of an omegaconf
    ListConfig (solo-learn main's Normalize of a dataset without built-in statistics) raises
    ValueError "could not determine the shape" when the signal lands in its first item."""
    if isinstance(err, KeyboardInterrupt):
        return as_interrupted(err)
    return None if _pending is None else Interrupted(_pending)


def _handled() -> List[int]:
    """The `SIGNALS` handled here: all but a SIGHUP ignored (`nohup solo-ncp train ...` must go on
    when its terminal closes). SIGINT and SIGTERM are handled even where ignored (a script's
    background job starts with SIGINT ignored): `reproduce` passes them on to its step, which
    inherits what its parent ignored and must stop on them."""
    hangup_ignored = signal.getsignal(signal.SIGHUP) == signal.SIG_IGN
    return [signum for signum in SIGNALS if not (signum == signal.SIGHUP and hangup_ignored)]


def _raise_interrupted(signum: int, frame) -> None:
    global _pending
    _pending = signum
    raise Interrupted(signum)


def raise_pending(where: str = "") -> None:
    """Raises `Interrupted` (its `where`: `where`) if a signal arrived in the open block: called
    where a raise that was swallowed must not let the work go on (a training batch's start and end,
    a command's end)."""
    if _pending is not None:
        raise Interrupted(_pending, where=where)


def finished_where(paths: Iterable[object]) -> str:
    """`Interrupted.where` of a command stopped once its results at `paths` were complete."""
    return f"as it finished (its results are written to {', '.join(map(str, paths))})"


def results_written(path: object) -> None:
    """Records that the running command's results at `path` (a folder or a file) are complete: a
    signal from then on is reported as `finished_where`, not as stopping it before it wrote them.
    Outside a `command_results` block (the core called from Python) nothing is recorded."""
    if _written is not None:
        _written.append(str(path))


@contextmanager
def command_results() -> Iterator[List[str]]:
    """Yields the list `results_written` fills while the block runs one command (a new list per
    block: a command that another runs in-process records its own)."""
    global _written
    outer, _written = _written, []
    try:
        yield _written
    finally:
        _written = outer


@contextmanager
def signals_held(done: str) -> Iterator[None]:
    """Within the block the `SIGNALS` are held, so that its work (one result replacing another)
    is never cut in half: the first that arrives is raised as `Interrupted` once the block is over,
    its `where` being `done` (what the block did: "as it finished (its results are written to
    ...)"). In the main thread (elsewhere Python's handlers do not run)."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    arrived = []
    previous = {signum: signal.signal(signum, lambda signum, frame: arrived.append(signum)) for signum in _handled()}
    try:
        yield
    finally:
        for signum, handler in previous.items():
            signal.signal(signum, handler)
    if arrived:
        raise Interrupted(arrived[0], where=done)


@contextmanager
def interrupt_signals() -> Iterator[bool]:
    """Within the block the `SIGNALS` not ignored (`_handled`) raise `Interrupted` (in the main
    thread; elsewhere Python cannot handle signals); the previous handlers come back at the end. Yields True for the
    outermost block, whose caller reports an interruption (an inner one passes it on)."""
    global _depth, _pending
    install = _depth == 0 and threading.current_thread() is threading.main_thread()
    previous = {signum: signal.signal(signum, _raise_interrupted) for signum in _handled()} if install else {}
    _depth += 1
    try:
        yield _depth == 1
    finally:
        _depth -= 1
        for signum, handler in previous.items():
            signal.signal(signum, handler)
        if install:
            _pending = None
