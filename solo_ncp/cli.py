"""`solo-ncp <command> ...`: the console script. Bad input, unwritable outputs and a training that
stops (NaN loss) end with one `error:` line, the last line printed (exit 2); set SOLO_NCP_DEBUG=1
to see the traceback. Options may stand anywhere among a command's `key=value` overrides.
The options, `--help` and `--version` import neither torch nor solo-learn nor Lightning
(tests/test_startup.py): a command imports what it needs when it runs."""
import argparse
import errno
import importlib
import os
import sys
from typing import Dict, Optional, Sequence, Tuple

COMMANDS = {
    "pretrain": ("pretrain", "stage 1: SimCLR (or any solo-learn method) from a config"),
    "select-k": ("select_k", "choose K by the cosine silhouette of spherical k-means (Fig. 2)"),
    "train": ("train", "stage 2: ncp (NCP-ACL) or deacl from a stage-1 checkpoint"),
    "eval": ("eval", "SLF/ALF linear head on a frozen encoder, then SA, PGD-20 RA, AutoAttack AA"),
    "report": ("report", "mean ± std tables (paper's Tables 2 and 3) over eval run folders"),
    "demo": ("demo", "the whole pipeline at CPU scale on Fashion-MNIST (make demo)"),
    "poc": ("poc", "Table 1: random noise vs a perturbation toward the neighbouring cluster"),
    "reproduce": ("reproduce", "one results table over seeds: every step, resumable, then report"),
    "export": ("export", "an encoder (and its eval's classifier) for torchvision, solo-learn, RobustBench"),
    "plot": ("plot", "PNGs of a run: per-epoch training curves, or a 2-D embedding of its features"),
}
DESCRIPTION = (
    "NCP-ACL and its DeACL baseline on solo-learn: stage 1, K selection, stage 2, evaluation and "
    "the paper's tables. `solo-ncp <command> --help` lists a command's options. A command that "
    "stops on bad input, an unwritable output or a NaN loss prints one `error:` line last and "
    "exits 2; set SOLO_NCP_DEBUG=1 to see the traceback."
)
"""What `solo-ncp --help` says above the commands."""
TRAINING = ("pretrain", "train", "demo")
"""Commands that import solo-learn and Lightning in this process: `main` checks the host before
them (reproduce runs its trainings as `solo-ncp` subprocesses, which check it)."""
WRITES_AT_END = ("select-k", "eval", "poc", "export", "plot", "report")
"""Commands whose results are written (each file atomically) only once their work is done."""
USER_ERRORS = (ValueError, OSError, ImportError, ArithmeticError)
"""Bad input (ValueError, ImportError), files (OSError: missing, unwritable, locked) and a stopped
training (ArithmeticError: FloatingPointError for a NaN loss), raised in the command or inside
Lightning's training loop, which re-raises them as they are."""


def version_line() -> str:
    """`solo-ncp <version> (host <api>: solo-learn <version>, <Lightning module> <version>)`; the
    host's error in place of the host where there is none. From the installed distributions'
    metadata (`installed_host`): solo-learn and Lightning are not imported."""
    from solo_ncp import __version__
    from solo_ncp._host import HostError, installed_host

    try:
        host = installed_host()
    except HostError as err:
        return f"solo-ncp {__version__} (no host: {one_line(err)})"
    return (f"solo-ncp {__version__} (host {host.api}: solo-learn {host.solo_version}, "
            f"{host.lightning} {host.lightning_version})")


class VersionAction(argparse.Action):
    """`--version`: prints `version_line()` on one line (argparse's own "version" action wraps
    it at the terminal's width), then exits."""

    def __init__(self, option_strings, dest, **kwargs):
        super().__init__(option_strings, dest, nargs=0, default=argparse.SUPPRESS, **kwargs)

    def __call__(self, parser, namespace, values, option_string=None):
        print(version_line())
        parser.exit()


def build_parser() -> Tuple[argparse.ArgumentParser, Dict[str, argparse.ArgumentParser]]:
    """The top-level parser and each command's own parser."""
    parser = argparse.ArgumentParser(prog="solo-ncp", description=DESCRIPTION)
    parser.add_argument("--version", action=VersionAction,
                        help="print the version and the solo-learn host, then exit")
    sub = parser.add_subparsers(dest="command", required=True)
    commands = {}
    for name, (module, help_text) in COMMANDS.items():
        commands[name] = sub.add_parser(name, help=help_text, description=help_text)
        importlib.import_module(f"solo_ncp.commands.{module}").add_arguments(commands[name])
    return parser, commands


def parse_args(argv: Sequence[str]) -> argparse.Namespace:
    """The command, then its arguments parsed intermixed: `--resume` may follow overrides."""
    parser, commands = build_parser()
    command = parser.parse_known_args(argv)[0].command
    before, rest = list(argv)[:list(argv).index(command)], list(argv)[list(argv).index(command) + 1:]
    if before:
        parser.error(f"unrecognized arguments before the command: {' '.join(before)} (a command's options "
                     f"follow it: solo-ncp {command} {' '.join(before)} ...)")
    args = commands[command].parse_intermixed_args(rest)
    args.command = command
    return args


def parse_command(parser: argparse.ArgumentParser, argv: Sequence[str]) -> argparse.Namespace:
    """`argv` parsed by a command's parser (from `build_parser`) as `parse_args` parses it, but a
    usage error (an unknown option, a value of the wrong type) raises ValueError with argparse's
    message instead of printing the usage and exiting."""
    def refuse(message: str):
        raise ValueError(f"{parser.prog}: {message}")

    parser.error = refuse
    return parser.parse_intermixed_args(list(argv))


def close_progress_bars() -> bool:
    """Closes the open tqdm bars (Lightning's, solo-ncp's), so none redraws itself at interpreter
    exit, after the error line; True if there were any (the cursor may then be mid-line)."""
    from tqdm import tqdm

    bars = list(getattr(tqdm, "_instances", ()))
    for bar in bars:
        bar.close()
    return bool(bars)


def one_line(err: BaseException) -> str:
    """The error's message on one line; for an error re-raised from a DataLoader worker, the
    original error's own message (the last line of the traceback it carries, without its type,
    which the worker re-raises as)."""
    lines = [line.strip() for line in str(err).splitlines() if line.strip()]
    if any(line.startswith("Original Traceback") for line in lines):
        kind = type(err)
        for prefix in (f"{kind.__module__}.{kind.__qualname__}: ", f"{kind.__qualname__}: "):
            if lines[-1].startswith(prefix):
                return lines[-1][len(prefix):]
        return lines[-1]
    return " ".join(lines) or type(err).__name__


def print_last_line(text: str) -> None:
    """Prints `text` to stderr as the last line, on a line of its own (after a newline when progress
    bars were open: they may have left the cursor mid-line)."""
    start = "\n" if close_progress_bars() else ""
    if sys.stdout is not None:  # None: started with stdout closed (`>&-`)
        sys.stdout.flush()
    print(f"{start}{text}", file=sys.stderr, flush=True)


def debugging() -> bool:
    """SOLO_NCP_DEBUG set to anything but "", "0", "false" or "no": errors end in their traceback."""
    return os.environ.get("SOLO_NCP_DEBUG", "").strip().lower() not in ("", "0", "false", "no")


def report_error(command: str, err: BaseException) -> None:
    """Prints `error: ... (solo-ncp <command>)` as the last line."""
    print_last_line(f"error: {one_line(err)} (solo-ncp {command})")


def interrupted_line(command: str, argv: Sequence[str], err) -> str:
    """`interrupted: solo-ncp <command> stopped by <SIGNAL> <where>; <again>: solo-ncp <argv>
    [<option>]` of an `Interrupted` (the part after ';' when there is something to continue)."""
    import shlex

    line = f"interrupted: solo-ncp {command} stopped by {err.signal_name}"
    line += f" {err.where}" if err.where else ""
    if err.again is not None:
        rerun = [*argv, err.option] if err.option and err.option not in argv else list(argv)
        line += f"; {err.again}: solo-ncp {shlex.join(rerun)}"
    return line


def report_interrupted(err: KeyboardInterrupt, argv: Sequence[str], outermost: bool) -> int:
    """Prints an interruption (SIGINT, SIGTERM, SIGHUP) as the last line and returns 128 + the signal's
    number; a command run in-process by another (`demo`) passes it on with its line composed, which
    the outer one then prints."""
    from solo_ncp.interrupt import as_interrupted

    interrupted = as_interrupted(err)
    if interrupted.line is None:
        command = next((arg for arg in argv if arg in COMMANDS), "")
        interrupted.line = interrupted_line(command, argv, interrupted)
    if not outermost or debugging():
        raise interrupted
    print_last_line(interrupted.line)
    return interrupted.exit_code


def run_command(args: argparse.Namespace) -> int:
    """Runs the parsed command; a bad input, file or stopped training is one `error:` line, exit 2
    (a full disk behind the error, wherever a write met it, is said as one: `io.disk_full_in`; a
    file the user may not open too: `io.access_denied_in`)."""
    from solo_ncp.interrupt import interruption

    try:
        if args.command in TRAINING:
            from solo_ncp._host import current_host

            current_host()  # without a host: its error as the one `error:` line, before any work
        command = importlib.import_module(f"solo_ncp.commands.{COMMANDS[args.command][0]}")
        return command.run(args)
    except Exception as err:
        interrupted = interruption(err)  # a signal's raise that C code turned into this error
        if interrupted is not None:
            raise interrupted from None
        if not isinstance(err, USER_ERRORS) or debugging():
            raise
        from solo_ncp.io import access_denied_in, disk_full_in

        report_error(args.command, disk_full_in(err) or access_denied_in(err) or err)
        return 2


def main(argv: Optional[Sequence[str]] = None) -> int:
    """`solo-ncp <argv>`: the command's exit code; 130 (SIGINT), 143 (SIGTERM) or 129 (SIGHUP) with
    one `interrupted:` line when a signal stops it."""
    from solo_ncp.interrupt import command_results, finished_where, interrupt_signals, raise_pending

    argv = list(sys.argv[1:] if argv is None else argv)
    with interrupt_signals() as outermost:
        try:
            args = parse_args(argv)
            with command_results() as written:
                try:
                    code = run_command(args)
                except KeyboardInterrupt as err:
                    raise unfinished(err, args.command, written) from None
                raise_pending(finished_where(written) if written else "")
            return code
        except KeyboardInterrupt as err:
            return report_interrupted(err, argv, outermost)


def unfinished(err: KeyboardInterrupt, command: str, written: Sequence[str]) -> KeyboardInterrupt:
    """An interruption of a command that writes its results only at its end (select-k, eval,
    poc, export, plot, report) says whether it came once they were written (`written`: where;
    `interrupt.results_written`) or before, and then that the same command starts it again; a
    training's or reproduce's names where it stopped itself."""
    from solo_ncp.interrupt import as_interrupted, finished_where

    interrupted = as_interrupted(err)
    if interrupted.again is None and not interrupted.where and interrupted.line is None:
        if written:
            interrupted.where = finished_where(written)
        elif command in WRITES_AT_END:
            interrupted.where = "before writing its results (earlier ones in its output are kept)"
            interrupted.again = "start again with"
    return interrupted


READER_GONE = (errno.EPIPE, errno.EIO)
"""What writing to a stream whose reader went away fails with: a pipe's (`| head` once head
ended), a terminal's that hung up (EIO)."""


class ReaderSafeStream:
    """sys.stdout or sys.stderr for a command whose reader may go away (`solo-ncp report ... | head`,
    a closed terminal): on a write that fails with READER_GONE the stream's descriptor is pointed at
    os.devnull and the command goes on to write its results; what it prints after that is dropped.
    Everything but write and flush is the wrapped stream's."""

    def __init__(self, stream):
        self._stream = stream

    def write(self, text: str) -> int:
        try:
            return self._stream.write(text)
        except OSError as err:
            self._to_devnull(err)
            return len(text)

    def flush(self) -> None:
        try:
            self._stream.flush()
        except OSError as err:
            self._to_devnull(err)

    def _to_devnull(self, err: OSError) -> None:
        """Later writes, and the flush of what the stream still buffers, go to os.devnull; `err`
        raised again unless its reader went away (READER_GONE)."""
        if err.errno not in READER_GONE:
            raise err
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, self._stream.fileno())
        os.close(devnull)

    def __getattr__(self, name: str):
        return getattr(self._stream, name)


def console_main() -> None:
    """The `solo-ncp` program: exits with `main`'s code. A SIGINT, SIGTERM or SIGHUP that arrives once
    main has returned (its results written, the interpreter shutting down, which takes a while after
    torch) is ignored: it ended the process with 130, 143 or 129 and no `interrupted:` line, the work
    done. A reader of its output that goes away stops nothing (`ReaderSafeStream`)."""
    import signal

    from solo_ncp.interrupt import SIGNALS

    for name in ("stdout", "stderr"):
        if getattr(sys, name) is not None:
            setattr(sys, name, ReaderSafeStream(getattr(sys, name)))
    code = main()
    for signum in SIGNALS:
        signal.signal(signum, signal.SIG_IGN)
    sys.exit(code)


if __name__ == "__main__":
    console_main()
