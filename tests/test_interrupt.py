"""Ctrl-C (SIGINT), SIGTERM and SIGHUP, sent to real processes: a training ends with exit 130 / 143 and one
last line naming its epoch and the command that resumes it; any other command with one line;
`reproduce` interrupted through its process group leaves the step unmarked, and the same command
resumes it."""
import json
import os
import shlex
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from tests.conftest import DIGITS_SIMCLR, DIGITS_STAGE2, ROOT, SMALL_BACKBONE, host_independent
from tests.test_reproduce import CONFIGS, OPTIONS, TINY_RESNET18, _epochs_of_the_last_attempt

MAX_EPOCHS = 1000
"""A training the test always interrupts long before its end."""


def _env() -> dict:
    return {**os.environ, "PYTHONPATH": str(ROOT)}


def _hangups_delivered() -> None:
    """In a child process before it starts: SIGHUP at its default, so that a suite run under
    `nohup` (which the child would inherit, and solo-ncp keeps) still tests its handling."""
    signal.signal(signal.SIGHUP, signal.SIG_DFL)


def _start(argv: list, logs: Path, **kwargs) -> subprocess.Popen:
    """`solo-ncp <argv>` in a process of its own, its stdout and stderr written to files in `logs`
    (a pipe nobody reads while the test waits could fill up and stop it)."""
    logs.mkdir(parents=True, exist_ok=True)
    with open(logs / "stdout", "w") as out, open(logs / "stderr", "w") as err:
        return subprocess.Popen([sys.executable, "-W", "ignore", "-m", "solo_ncp.cli", *argv], env=_env(),
                                cwd=ROOT, stdout=out, stderr=err, preexec_fn=_hangups_delivered, **kwargs)


def _finish(process: subprocess.Popen, logs: Path, timeout: int = 900) -> tuple:
    """(stdout, stderr) of the process once it ended. One still running after `timeout` s is
    killed (left alone, it would train on beside the rest of the suite) and fails the test."""
    try:
        process.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait()
        pytest.fail(f"still running {timeout} s after the signal, killed; its stderr ends with:\n"
                    f"{(logs / 'stderr').read_text()[-3000:]}")
    return (logs / "stdout").read_text(), (logs / "stderr").read_text()


def _wait_for(path: Path, process: subprocess.Popen) -> None:
    """Until `path` exists (the training finished an epoch); fails if the process ended first."""
    while not path.exists():
        assert process.poll() is None, f"it ended with exit code {process.returncode} first"
        time.sleep(0.05)


def _training_argv(command: str, run_dir: Path, teacher) -> list:
    if command == "pretrain":
        return ["pretrain", "--config", str(ROOT / "zoo_configs/fashionmnist/simclr.yaml"), *DIGITS_SIMCLR,
                f"checkpoint.dir={run_dir}", "name=run", f"max_epochs={MAX_EPOCHS}", "limit_train_batches=2"]
    return ["train", "--config", str(ROOT / "zoo_configs/fashionmnist/ncp.yaml"), *DIGITS_STAGE2,
            f"checkpoint.dir={run_dir}", f"method_kwargs.teacher_ckpt={teacher}", "name=run",
            f"max_epochs={MAX_EPOCHS}", "limit_train_batches=1"]


@pytest.mark.parametrize("command, signum", [("pretrain", signal.SIGINT), ("train", signal.SIGTERM)])
def test_an_interrupted_training_names_its_epoch_and_the_command_that_resumes_it(
        command, signum, tmp_path, digits_simclr_ckpt):
    """The signal arrives once the first last.ckpt exists (epoch 1 or later of 1000); the
    checkpoint left holds an earlier epoch than the last, and the line names the epoch after the
    one it holds and the same command plus --resume."""
    argv = _training_argv(command, tmp_path, digits_simclr_ckpt)
    last = tmp_path / "run" / "last.ckpt"
    victim = _start(argv, tmp_path / "logs")
    _wait_for(last, victim)
    victim.send_signal(signum)
    out, err = _finish(victim, tmp_path / "logs")
    assert victim.returncode == 128 + signum, err[-3000:]
    finished = torch.load(last, weights_only=True)["epoch"] + 1  # "epoch" counts from 0
    assert finished < MAX_EPOCHS
    assert err.strip().splitlines()[-1] == (
        f"interrupted: solo-ncp {command} stopped by {signal.Signals(signum).name} in epoch "
        f"{finished + 1} of {MAX_EPOCHS}, {finished} done in {last}; resume with: solo-ncp "
        f"{shlex.join([*argv, '--resume'])}")
    assert "Traceback" not in out + err


CASES = [  # command, argv, signal, what becomes of the handler's raise
    ("select-k", ["select-k", "--ckpt", "x.ckpt", "--dataset", "digits", "--out", "k"], "SIGINT", "raised"),
    ("eval", ["eval", "--ckpt", "x.ckpt", "--dataset", "digits", "--out", "e"], "SIGTERM", "raised"),
    ("poc", ["poc", "--ckpt", "x.ckpt", "--dataset", "digits", "--k", "5", "--out", "p"], "SIGINT", "raised"),
    ("report", ["report", "runs"], "SIGINT", "raised"),
    ("export", ["export", "--ckpt", "x.ckpt", "--out", "x"], "SIGINT", "raised"),
    ("plot", ["plot", "runs/ncp"], "SIGTERM", "raised"),
    ("report", ["report", "runs"], "SIGTERM", "swallowed"),
    ("poc", ["poc", "--ckpt", "x.ckpt", "--dataset", "digits", "--k", "5", "--out", "p"], "SIGTERM", "swallowed-written"),
    ("eval", ["eval", "--ckpt", "x.ckpt", "--dataset", "digits", "--out", "e"], "SIGINT", "converted"),
    ("select-k", ["select-k", "--ckpt", "x.ckpt", "--dataset", "digits", "--out", "k"], "SIGHUP", "raised"),
    ("report", ["report", "runs"], "SIGHUP", "swallowed"),
]
LOST_RAISES = """
import os, sys
import torch
swallowed = []
sys.unraisablehook = lambda unraisable: swallowed.append(type(unraisable.exc_value).__name__)


class Swallowing:
    \"\"\"Sends its signal as it is freed: the handler's raise lands in `__del__`, where Python
    hands it to sys.unraisablehook (recorded in `swallowed`) and goes on.\"\"\"

    def __init__(self, signum):
        self.signum = signum

    def __del__(self):
        os.kill(os.getpid(), self.signum)
        for _ in range(100):
            pass


class FirstItemSignals:
    \"\"\"A sequence that sends its signal as its first item is read: in `torch.as_tensor(...)` the
    handler's raise lands in C code that turns it into a ValueError ("could not determine the
    shape"), as with solo-learn main's Normalize of an omegaconf ListConfig.\"\"\"

    def __init__(self, signum):
        self.signum = signum

    def __len__(self):
        return 3

    def __getitem__(self, i):
        if i >= 3:
            raise IndexError(i)
        if i == 0:
            os.kill(os.getpid(), self.signum)
        return 0.5


def convert_a_signal(signum):
    \"\"\"Sends `signum` where torch turns its raise into a ValueError, and raises that.\"\"\"
    torch.as_tensor(FirstItemSignals(signum))
    raise AssertionError("torch.as_tensor no longer turns the raise into an error of its own")
"""
SIGNAL_EACH = LOST_RAISES + """
import contextlib, importlib, io, json, signal
from solo_ncp import cli
from solo_ncp.interrupt import results_written
results = []
for command, argv, name, raise_ in json.loads(sys.argv[1]):
    module = importlib.import_module(f"solo_ncp.commands.{cli.COMMANDS[command][0]}")
    signum = getattr(signal, name)
    module.run = {"swallowed": lambda args: Swallowing(signum) and 0,
                  "swallowed-written": lambda args: results_written("p") or Swallowing(signum) and 0,
                  "converted": lambda args: convert_a_signal(signum),
                  "raised": lambda args: os.kill(os.getpid(), signum)}[raise_]
    err = io.StringIO()
    with contextlib.redirect_stderr(err):
        results.append([cli.main(argv), err.getvalue(), swallowed[:]])
    swallowed.clear()
print(json.dumps(results))
"""


@pytest.fixture(scope="module")
def interrupted_commands() -> list:
    """[exit code, stderr, the exceptions Python swallowed] of each command of CASES signalled
    while it runs (its `run` sends the signal to its own process), all in one process."""
    done = subprocess.run([sys.executable, "-c", SIGNAL_EACH, json.dumps(CASES)], env=_env(), cwd=ROOT,
                          capture_output=True, text=True, timeout=600, preexec_fn=_hangups_delivered)
    assert done.returncode == 0, done.stderr[-3000:]
    return json.loads(done.stdout.strip().splitlines()[-1])


@pytest.mark.parametrize("case", range(len(CASES)), ids=[
    f"{command}-{name}{'' if raise_ == 'raised' else '-' + raise_}" for command, _, name, raise_ in CASES])
def test_any_other_command_interrupted_is_one_line(interrupted_commands, case):
    """It says that nothing was written and how to start again. Also when the handler's raise was
    swallowed (it landed in a finalizer): the command's end raises the pending signal, and the exit
    code is the signal's, not the command's 0; where the command recorded its results as written,
    the line says so. And when C code turned the raise into a ValueError: the line is the
    interruption's, not `error:`."""
    command, argv, name, raise_ = CASES[case]
    code, err, swallowed = interrupted_commands[case]
    assert swallowed == (["Interrupted"] if raise_.startswith("swallowed") else [])
    assert code == 128 + getattr(signal, name)
    where = {"swallowed": "", "swallowed-written": " as it finished (its results are written to p)"}.get(
        raise_, f" before writing its results (earlier ones in its output are kept); start again with: solo-ncp "
                f"{shlex.join(argv)}")
    assert err.splitlines() == [f"interrupted: solo-ncp {command} stopped by {name}{where}"]


SIGNAL_IN_EPOCH_2 = LOST_RAISES + """
import signal
from solo_ncp import cli
from solo_ncp.launch import callbacks

where = sys.argv.pop(1)
start_epoch = callbacks.EpochSeeds.on_train_epoch_start
zero_grad = torch.optim.Optimizer.zero_grad
armed = []


def signal_in_epoch_2(self, lightning_trainer, pl_module):
    start_epoch(self, lightning_trainer, pl_module)
    if lightning_trainer.current_epoch == 1:
        if where == "finalizer":
            Swallowing(signal.SIGINT)
        elif where == "converted":
            convert_a_signal(signal.SIGINT)
        else:
            armed.append(True)


def signalling_zero_grad(self, *args, **kwargs):
    if armed:
        armed.clear()
        os.kill(os.getpid(), signal.SIGINT)
    return zero_grad(self, *args, **kwargs)


callbacks.EpochSeeds.on_train_epoch_start = signal_in_epoch_2
torch.optim.Optimizer.zero_grad = signalling_zero_grad
code = cli.main(sys.argv[1:])
print("swallowed:", *swallowed)
sys.exit(code)
"""


@pytest.mark.parametrize("where", ["finalizer", "zero_grad", "converted"])
def test_a_training_whose_interrupt_was_swallowed_still_stops_in_that_epoch(where, tmp_path):
    """SIGINT as epoch 2 of 3 starts, its raise lost: in a finalizer (Python prints it and goes
    on), in `optimizer.zero_grad`, whose raise solo-learn main's `optimizer_zero_grad` swallows
    with a bare `except:` (a CI run trained on for 15 minutes after such a Ctrl-C), or in C code
    that turns it into a ValueError (torch.as_tensor, as solo-learn main's Normalize of a
    ListConfig did in a CI run: its line was the bare "stopped by SIGINT"). The training still
    stops in that epoch, with exit 130 and the line naming epoch 2 and --resume."""
    argv = ["pretrain", "--config", str(ROOT / "zoo_configs/fashionmnist/simclr.yaml"), *DIGITS_SIMCLR,
            *SMALL_BACKBONE, f"checkpoint.dir={tmp_path}", "name=run", "max_epochs=3", "limit_train_batches=1"]
    last = tmp_path / "run" / "last.ckpt"
    done = subprocess.run([sys.executable, "-W", "ignore", "-c", SIGNAL_IN_EPOCH_2, where, *argv], env=_env(),
                          cwd=ROOT, capture_output=True, text=True, timeout=900)
    if where == "finalizer":
        assert done.stdout.strip().splitlines()[-1] == "swallowed: Interrupted", done.stderr[-3000:]
    assert done.returncode == 130, done.stderr[-3000:]
    assert torch.load(last, weights_only=True)["epoch"] == 0
    assert done.stderr.strip().splitlines()[-1] == (
        f"interrupted: solo-ncp pretrain stopped by SIGINT in epoch 2 of 3, 1 done in {last}; "
        f"resume with: solo-ncp {shlex.join([*argv, '--resume'])}")


@host_independent
def test_ctrl_c_on_reproduce_leaves_the_step_unmarked_and_the_same_command_resumes_it(tmp_path):
    """SIGINT to reproduce's process group once stage 1 (3 epochs) wrote its first last.ckpt:
    exit 130, one line naming the step and the same command, no marker; the same command then
    resumes stage 1 at the next epoch and marks it done (the test stops it there with a SIGHUP,
    as a closed terminal sends: exit 129)."""
    out = tmp_path / "run"
    argv = ["reproduce", "--dataset", "digits", "--config-dir", str(CONFIGS), "--out", str(out),
            "--seeds", "0", "--methods", "deacl", *OPTIONS, *TINY_RESNET18, "simclr:max_epochs=3"]
    stage1 = out / "s0" / "simclr"
    victim = _start(argv, tmp_path / "first", start_new_session=True)
    _wait_for(stage1 / "last.ckpt", victim)
    os.killpg(victim.pid, signal.SIGINT)
    printed, err = _finish(victim, tmp_path / "first")
    assert victim.returncode == 130, err[-3000:]
    assert err.strip().splitlines()[-1] == (
        f"interrupted: solo-ncp reproduce stopped by SIGINT in step s0/simclr, not marked done; "
        f"resume with: solo-ncp {shlex.join(argv)}")
    assert "Traceback" not in printed + err
    assert not (stage1 / ".step-done.json").exists()
    killed_at = torch.load(stage1 / "last.ckpt", weights_only=True)["epoch"]
    assert killed_at < 2
    assert (stage1 / "step.log").read_text().strip().splitlines()[-1].startswith(
        f"interrupted: solo-ncp pretrain stopped by SIGINT in epoch {killed_at + 2} of 3")

    rerun = _start(argv, tmp_path / "rerun", start_new_session=True)
    _wait_for(stage1 / ".step-done.json", rerun)
    os.killpg(rerun.pid, signal.SIGHUP)  # its terminal closed: reproduce passes it on to the step
    printed, err = _finish(rerun, tmp_path / "rerun")
    assert rerun.returncode == 129, err[-3000:]
    assert err.strip().splitlines()[-1].startswith("interrupted: solo-ncp reproduce stopped by SIGHUP")
    assert "[reproduce] resuming s0/simclr" in printed
    assert (stage1 / ".step-done.json").is_file()
    assert torch.load(stage1 / "last.ckpt", weights_only=True)["epoch"] == 2
    assert _epochs_of_the_last_attempt(stage1) == list(range(killed_at + 1, 3))


def signalling_before(function, signum: int):
    """`function` that first sends `signum` to this process (its handler runs at once)."""
    def signalled(*args, **kwargs):
        os.kill(os.getpid(), signum)
        return function(*args, **kwargs)

    return signalled


def test_a_signal_while_a_result_replaces_another_is_raised_once_the_new_one_is_in(tmp_path, monkeypatch):
    """SIGTERM as staged_outputs removes the earlier result: before, the raise landed there and left
    the folder without either result; now the new one is moved in whole, then the signal is raised
    saying so. A file of the user's stays."""
    from solo_ncp import io as solo_io
    from solo_ncp.interrupt import Interrupted, interrupt_signals

    folder = tmp_path / "out"
    folder.mkdir()
    for name in ("table.md", "record.json", "notes.txt"):
        (folder / name).write_text(f"earlier {name}")
    monkeypatch.setattr(solo_io, "remove_outputs", signalling_before(solo_io.remove_outputs, signal.SIGTERM))
    with interrupt_signals(), pytest.raises(Interrupted) as err:
        with solo_io.staged_outputs(folder, ["table.md", "record.json"], "record.json") as staging:
            for name in ("table.md", "record.json"):
                (staging / name).write_text(f"new {name}")
    assert (err.value.signum, err.value.where) == (signal.SIGTERM, f"as it finished (its results are written to {folder})")
    assert {path.name: path.read_text() for path in folder.iterdir()} == {
        "table.md": "new table.md", "record.json": "new record.json", "notes.txt": "earlier notes.txt"}


def test_select_k_overwrite_signalled_as_it_replaces_the_earlier_sweep_leaves_the_new_one_whole(
        digits_simclr_ckpt, tmp_path, monkeypatch, capsys):
    """select-k removed the earlier sweep's files, then wrote csv, png and k.json one by one: a
    SIGINT in between left a folder with no k.json, and a line saying the earlier one was kept."""
    from solo_ncp import io as solo_io
    from solo_ncp.cli import main

    out = tmp_path / "k"
    argv = ["select-k", "--ckpt", str(digits_simclr_ckpt), "--dataset", "digits", "--train-n", "100",
            "--k-min", "2", "--k-step", "2", "--out", str(out)]
    assert main([*argv, "--k-max", "4"]) == 0
    monkeypatch.setattr(solo_io, "remove_outputs", signalling_before(solo_io.remove_outputs, signal.SIGINT))
    assert main([*argv, "--k-max", "6", "--overwrite"]) == 130
    assert capsys.readouterr().err.strip().splitlines()[-1] == (
        f"interrupted: solo-ncp select-k stopped by SIGINT as it finished (its results are written to {out})")
    assert sorted(path.name for path in out.iterdir()) == ["k.json", "silhouette.csv", "silhouette.png"]
    assert set(json.loads((out / "k.json").read_text())["scores"]) == {"2", "4", "6"}
    assert (out / "silhouette.csv").read_text().splitlines()[1:] == [
        f"{k},{score:.8f}" for k, score in sorted((int(k), s) for k, s in
                                                  json.loads((out / "k.json").read_text())["scores"].items())]


def signalling_after(function, signum: int):
    """`function` that sends `signum` to this process once it has returned."""
    def signalled(*args, **kwargs):
        value = function(*args, **kwargs)
        os.kill(os.getpid(), signum)
        return value

    return signalled


def test_a_signal_after_the_results_are_written_says_so(tmp_path, monkeypatch, capsys):
    """A signal between staged_outputs' last rename and the command's return (report's print of
    its path) was reported as stopping it "before writing its results", with the advice to start
    it again; the new report was there, complete."""
    from contextlib import contextmanager

    from solo_ncp import io as solo_io
    from solo_ncp.cli import main
    from tests.test_report_consistency import write_metrics

    staged = solo_io.staged_outputs

    @contextmanager
    def then_signal(*args, **kwargs):
        with staged(*args, **kwargs) as staging:
            yield staging
        os.kill(os.getpid(), signal.SIGTERM)

    monkeypatch.setattr(solo_io, "staged_outputs", then_signal)
    out = tmp_path / "report"
    assert main(["report", str(write_metrics(tmp_path / "eval", 0, "ncp-s0")), "--out", str(out / "report.md")]) == 143
    assert capsys.readouterr().err.strip().splitlines()[-1] == (
        f"interrupted: solo-ncp report stopped by SIGTERM as it finished (its results are written to {out})")
    assert (out / "report.md").read_text().startswith("## Table 2")


def test_a_signal_after_plot_wrote_its_png_says_so(digits_simclr_ckpt, tmp_path, monkeypatch, capsys):
    """plot's result is one PNG written by atomic_write (no staging folder): a signal once it was
    renamed into place was reported as stopping plot before it wrote it."""
    from solo_ncp.cli import main
    from solo_ncp.eval import figures

    monkeypatch.setattr(figures, "atomic_write", signalling_after(figures.atomic_write, signal.SIGINT))
    out = tmp_path / "plots"
    assert main(["plot", str(digits_simclr_ckpt.parent), "--out", str(out)]) == 130
    assert capsys.readouterr().err.strip().splitlines()[-1] == (
        f"interrupted: solo-ncp plot stopped by SIGINT as it finished (its results are written to {out / 'curves.png'})")
    assert sorted(path.name for path in out.iterdir()) == ["curves.png"]


def test_a_file_where_the_staging_folder_goes_is_replaced(tmp_path):
    """A file named .unfinished in the output folder failed with `[Errno 17] File exists`."""
    from solo_ncp.io import UNFINISHED, staged_outputs

    (tmp_path / UNFINISHED).write_text("not a folder")
    with staged_outputs(tmp_path, ["r.json"], "r.json") as staging:
        (staging / "r.json").write_text("{}")
    assert sorted(path.name for path in tmp_path.iterdir()) == ["r.json"]


def test_a_failed_staged_block_removes_its_staged_files_and_the_folder_it_made(tmp_path):
    """A first run that failed left an empty result folder holding only `.unfinished`; a later one,
    its staged files beside the earlier result (cleared only by the next run)."""
    from solo_ncp.io import staged_outputs

    new = tmp_path / "new" / "out"
    with pytest.raises(ValueError, match="bad input"):
        with staged_outputs(new, ["r.json"], "r.json") as staging:
            (staging / "r.json").write_text("{}")
            raise ValueError("bad input")
    assert not new.exists() and (tmp_path / "new").is_dir()

    earlier = tmp_path / "earlier"
    earlier.mkdir()
    (earlier / "r.json").write_text('{"old": 1}')
    with pytest.raises(KeyboardInterrupt):
        with staged_outputs(earlier, ["r.json"], "r.json") as staging:
            (staging / "r.json").write_text("{}")
            raise KeyboardInterrupt
    assert [(path.name, path.read_text()) for path in earlier.iterdir()] == [("r.json", '{"old": 1}')]


def test_a_hangup_ignored_at_start_stays_ignored():
    """`nohup solo-ncp train ...`: nohup starts the command with SIGHUP ignored, so that closing the
    terminal leaves it running; a handler installed over that would stop it at the hangup."""
    script = ("import os, signal, sys\n"
              "signal.signal(signal.SIGHUP, signal.SIG_IGN)\n"
              "from solo_ncp import cli\n"
              "from solo_ncp.commands import report\n"
              "def run(args):\n"
              "    os.kill(os.getpid(), signal.SIGHUP)\n"
              "    print('went on')\n"
              "    return 0\n"
              "report.run = run\n"
              "code = cli.main(['report', 'runs'])\n"
              "print(signal.getsignal(signal.SIGHUP) == signal.SIG_IGN)\n"
              "sys.exit(code)\n")
    proc = subprocess.run([sys.executable, "-c", script], env=_env(), cwd=ROOT, capture_output=True, text=True,
                          timeout=120)
    assert (proc.returncode, proc.stdout, proc.stderr) == (0, "went on\nTrue\n", "")


@pytest.mark.parametrize("signum", [signal.SIGINT, signal.SIGTERM, signal.SIGHUP])
def test_a_signal_once_the_command_has_returned_changes_no_exit_code(signum):
    """The signal lands as the interpreter shuts down (an atexit hook sends it): `solo-ncp plot` and
    `select-k`, their results written, exited 130 or 143 without an `interrupted:` line."""
    script = ("import atexit, os\n"
              f"atexit.register(lambda: os.kill(os.getpid(), {int(signum)}))\n"
              "from solo_ncp import cli\n"
              "cli.main = lambda: 0\n"
              "cli.console_main()\n")
    proc = subprocess.run([sys.executable, "-c", script], env=_env(), cwd=ROOT, capture_output=True, text=True,
                          timeout=120, preexec_fn=_hangups_delivered)
    assert (proc.returncode, proc.stderr) == (0, "")
