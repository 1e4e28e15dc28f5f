"""A pipeline's steps (`solo_ncp.launch.steps`, run by `reproduce`) at their edges: a signal whose
raise Python swallowed still stops the plan, a step killed by a signal is named so, and a done step
whose input changed is not skipped."""
import contextlib
import json
import os
import signal
import sys
import time

import pytest

from solo_ncp.config.overrides import override_of
from solo_ncp.interrupt import Interrupted, interrupt_signals
from solo_ncp.io import file_sha256
from solo_ncp.launch.reproduce import Plan, run_plan
from solo_ncp.launch import steps
from solo_ncp.launch.steps import Step, fixed, result_file
from tests.conftest import host_independent

pytestmark = host_independent


def _version_steps(root, names):
    """Steps running `solo-ncp --version` (under a second), each needing a file it never writes."""
    return [Step(name, root / name, fixed(["--version"]), result_file(root / name / "result"), rerun="")
            for name in names]


def _quiet(line: str) -> None:
    pass


@pytest.mark.filterwarnings("ignore::pytest.PytestUnraisableExceptionWarning")  # the swallowed raise
def test_a_signal_swallowed_while_a_step_process_starts_stops_the_plan_in_that_step(tmp_path):
    """SIGTERM landing in an at-fork hook of subprocess.Popen: Python prints its raise as "Exception
    ignored" and goes on. The plan still stops in that step (before the fix it ran every step)."""
    fire = []

    def signal_while_forking():
        if fire:
            fire.clear()
            os.kill(os.getpid(), signal.SIGTERM)

    os.register_at_fork(after_in_parent=signal_while_forking)
    with interrupt_signals():
        fire.append(True)
        with pytest.raises(Interrupted) as caught:
            run_plan(Plan(tmp_path, _version_steps(tmp_path, ["first", "second"])), False, _quiet)
    assert (caught.value.signum, caught.value.where) == (signal.SIGTERM, "in step first, not marked done")
    assert not (tmp_path / "second").exists()


def test_a_signal_swallowed_between_steps_stops_the_plan_before_the_next(tmp_path):
    with interrupt_signals():
        try:
            os.kill(os.getpid(), signal.SIGINT)
            time.sleep(5)
        except KeyboardInterrupt:  # swallowed, as a finalizer's raise would be
            pass
        with pytest.raises(Interrupted) as caught:
            run_plan(Plan(tmp_path, _version_steps(tmp_path, ["first"])), False, _quiet)
    assert (caught.value.signum, caught.value.where, caught.value.again) == (
        signal.SIGINT, "before step first", "resume with")
    assert not (tmp_path / "first").exists()


class KilledProcess:
    """Stands for a step's process that the kernel killed with SIGKILL (Popen's returncode -9),
    having printed nothing."""

    def __init__(self, *args, **kwargs):
        self.stdout = open(os.devnull, "rb")

    def wait(self) -> int:
        return -signal.SIGKILL


def test_a_step_killed_by_a_signal_is_named_so_with_how_to_continue(tmp_path, monkeypatch):
    monkeypatch.setattr(steps.subprocess, "Popen", KilledProcess)
    (step,) = _version_steps(tmp_path, ["s0/ncp"])
    with pytest.raises(steps.StepFailed) as caught:
        step.run("todo")
    assert str(caught.value) == (
        "step s0/ncp was killed by SIGKILL (the out-of-memory killer sends it), not marked done: run "
        f"the same command again to continue it; its log: {tmp_path / 's0/ncp/step.log'}")


def test_the_error_taken_from_a_log_is_plain_text():
    """A progress bar's output (carriage returns, cursor moves, colours) does not garble the error
    reproduce prints: control sequences are dropped, and a carriage return ends a line."""
    assert steps.last_error("Epoch 0:  50%|#####     | 1/2 [00:01<00:00]\rEpoch 0: 100%|##########| 2/2\n"
                            "\x1b[A\x1b[31mlast words\x1b[0m\r      \x1b[A\n") == "last words"
    assert steps.last_error("\rEpoch 3:  10%|#\x1b[A\nerror: K=3 is larger than N=2 \x1b[0m\n\x1b[A\n") == \
        "K=3 is larger than N=2"


@pytest.mark.skipif(not os.path.exists("/dev/full"), reason="needs /dev/full (Linux)")
def test_a_step_whose_log_cannot_be_written_still_reports_its_error_line(tmp_path):
    """On a full disk the step's error line ("no room left ... last.ckpt is kept") went to a log
    that could not hold it, and reproduce reported whatever line the log last held. The log here
    is /dev/full, where every write fails with ENOSPC."""
    folder = tmp_path / "s0" / "eval"
    folder.mkdir(parents=True)
    (folder / steps.LOG).symlink_to("/dev/full")
    missing = tmp_path / "missing.ckpt"
    argv = ["eval", "--ckpt", str(missing), "--dataset", "digits", "--out", str(tmp_path / "out")]
    with pytest.raises(steps.StepFailed) as caught:
        Step("s0/eval", folder, fixed(argv), lambda: None).run("todo")
    message = str(caught.value)
    assert message.startswith(f"step s0/eval failed (exit 2): checkpoint {missing} does not exist")
    assert message.endswith(f"its log: {folder / steps.LOG} (incomplete: writing it failed with No space left on "
                            "device, and the rest of the step's output is lost: free space there before running "
                            "reproduce again)")


def test_a_step_with_more_output_than_a_pipe_holds_runs_to_its_end(tmp_path, monkeypatch):
    """The step's output now passes through a pipe that a thread drains: a step printing more than
    a pipe buffers (64 KiB on Linux) must not block, and its whole output reaches the log."""
    script = tmp_path / "chatty.py"
    script.write_text("import sys\nsys.stdout.write('x' * 300000 + '\\nerror: the last line\\n')\nsys.exit(2)\n")
    popen = steps.subprocess.Popen

    def chatty(argv, **kwargs):
        process = popen([sys.executable, str(script)], **kwargs)
        wait = process.wait
        process.wait = lambda: wait(timeout=120)  # a blocked process fails the test (TimeoutExpired)
        return process

    monkeypatch.setattr(steps.subprocess, "Popen", chatty)
    with pytest.raises(steps.StepFailed) as caught:
        Step("s0/chatty", tmp_path / "chatty", fixed(["--version"]), lambda: None).run("todo")
    assert "failed (exit 2): the last line;" in str(caught.value)
    assert (tmp_path / "chatty" / steps.LOG).read_text().count("x") == 300000


def test_a_process_of_the_step_outliving_it_does_not_hold_reproduce(tmp_path, monkeypatch):
    """The step's output passes through a pipe: a process the step started that outlives it (a
    stray DataLoader worker, a logger's service) holds the pipe open. reproduce goes on once the
    step has ended, with its error line."""
    script = tmp_path / "forks.py"
    script.write_text("import os, sys, time\nif os.fork() == 0:\n    time.sleep(60)\n    os._exit(0)\n"
                      "print('error: the step failed', flush=True)\nsys.exit(2)\n")
    popen, started = steps.subprocess.Popen, []
    monkeypatch.setattr(steps.subprocess, "Popen",
                        lambda argv, **kwargs: started.append(popen([sys.executable, str(script)], **kwargs)) or started[-1])
    begin = time.monotonic()
    try:
        with pytest.raises(steps.StepFailed) as caught:
            Step("s0/forks", tmp_path / "forks", fixed(["--version"]), lambda: None).run("todo")
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(started[0].pid, signal.SIGKILL)  # the step's own process group: the sleeper
    assert time.monotonic() - begin < 40
    assert "failed (exit 2): the step failed;" in str(caught.value)


def _done_step(tmp_path, rerun=""):
    """A step reading `input.ckpt`, run once (marked done with that file's hash)."""
    source = tmp_path / "input.ckpt"
    source.write_bytes(b"first")
    step = Step("s0/eval", tmp_path / "eval", fixed(["--version"]), lambda: None, rerun=rerun, inputs=(source,))
    step.run("todo")
    return step, source


def test_a_done_step_whose_input_changed_runs_again(tmp_path):
    step, source = _done_step(tmp_path)
    assert step.state() == "done"
    source.write_bytes(b"other")
    assert (step.state(), step.changed_inputs()) == ("stale", [str(source)])
    said = []
    run_plan(Plan(tmp_path, [step]), False, said.append)
    assert said[0] == (f"[reproduce] running s0/eval, again: {source} changed since it ran "
                       f"(log: {step.folder / 'step.log'})")
    assert step.state() == "done"


def test_a_training_done_from_an_input_that_changed_is_refused(tmp_path):
    """Resuming it would keep what it learnt from the old input: reproduce stops and says so."""
    step, source = _done_step(tmp_path, rerun="--resume")
    source.write_bytes(b"other")
    with pytest.raises(steps.StepFailed) as caught:
        run_plan(Plan(tmp_path, [step]), False, _quiet)
    assert str(caught.value) == (
        f"step s0/eval was trained from other inputs than those there now ({source} changed since): "
        f"move {step.folder} away to train it again from them, or restore them")


def test_a_marker_written_before_steps_recorded_their_inputs_is_trusted(tmp_path):
    step, source = _done_step(tmp_path)
    marker = step.folder / steps.DONE
    marker.write_text(json.dumps({**json.loads(marker.read_text()), "inputs": {}}))
    source.write_bytes(b"other")
    assert step.state() == "done"


def _spelled_step(root):
    """A done eval step whose argv names its input, its folder and an override of a path as the
    plan now builds them: absolute (reproduce resolves --out and --teacher)."""
    source = root / "s0" / "simclr" / "last.ckpt"
    source.parent.mkdir(parents=True)
    source.write_bytes(b"weights")
    folder = root / "s0" / "eval"
    argv = ["eval", "--ckpt", str(source), "--seed", "0", override_of("checkpoint.dir", root / "s0"), "--out",
            str(folder)]
    step = Step("s0/eval", folder, fixed(argv), lambda: None, inputs=(source,))
    folder.mkdir()
    return step, source


def _write_marker(step, argv, inputs) -> None:
    (step.folder / steps.DONE).write_text(json.dumps({"argv": argv, "ran": argv, "seconds": 1.0, "inputs": inputs}))


def test_a_marker_that_records_paths_as_spelled_relative_to_this_folder_is_done(tmp_path, monkeypatch):
    """A marker of a version that did not resolve --out holds `runs/s0/...` where the plan now has
    `/abs/runs/s0/...`: from the folder it ran in it is the same step, and its recorded input the
    same file (before: every step partial, run again with --overwrite or --resume)."""
    step, source = _spelled_step(tmp_path / "runs")
    monkeypatch.chdir(tmp_path)
    digest = file_sha256(source)
    spelled = ["eval", "--ckpt", "runs/s0/simclr/last.ckpt", "--seed", "0", "checkpoint.dir=runs/s0/", "--out",
               "./runs/s0/../s0/eval"]
    _write_marker(step, spelled, {"runs/s0/simclr/last.ckpt": digest})
    assert step.state() == "done"
    source.write_bytes(b"other weights")
    assert (step.state(), step.changed_inputs()) == ("stale", [str(source)])


@pytest.mark.parametrize("position, spelled", [
    (2, "runs/s1/simclr/last.ckpt"),  # another file
    (4, "1"),  # another seed
    (5, "checkpoint.dir=runs/s1"),  # an override of another folder
    (5, "name=runs/s0"),  # another key
])
def test_a_marker_naming_another_path_or_value_is_not_done(tmp_path, monkeypatch, position, spelled):
    step, source = _spelled_step(tmp_path / "runs")
    monkeypatch.chdir(tmp_path)
    argv = ["eval", "--ckpt", "runs/s0/simclr/last.ckpt", "--seed", "0", "checkpoint.dir=runs/s0", "--out",
            "runs/s0/eval"]
    _write_marker(step, argv, {})
    assert step.state() == "done"
    argv[position] = spelled
    _write_marker(step, argv, {})
    assert step.state() == "partial"


def test_a_relative_marker_read_from_another_folder_is_not_done(tmp_path, monkeypatch):
    step, source = _spelled_step(tmp_path / "runs")
    (tmp_path / "elsewhere").mkdir()
    monkeypatch.chdir(tmp_path / "elsewhere")
    _write_marker(step, ["eval", "--ckpt", "runs/s0/simclr/last.ckpt", "--seed", "0", "checkpoint.dir=runs/s0",
                         "--out", "runs/s0/eval"], {})
    assert step.state() == "partial"


@pytest.mark.parametrize("inputs", [["runs/s0/simclr/last.ckpt"], {"runs/s0/simclr/last.ckpt": 7},
                                    {"runs/s0\0/last.ckpt": "ab"}])
def test_a_marker_whose_inputs_are_no_record_of_hashes_is_damaged(tmp_path, monkeypatch, inputs):
    step, source = _spelled_step(tmp_path / "runs")
    monkeypatch.chdir(tmp_path)
    _write_marker(step, step.argv(), inputs)
    assert step.state() == "partial"


@pytest.mark.parametrize("damage", [b"", b"PK\x03\x04 half a zip"])
def test_an_interrupted_training_whose_last_checkpoint_is_damaged_says_to_delete_it(tmp_path, damage):
    step = Step("s0/simclr", tmp_path / "simclr", fixed(["--version"]), lambda: "not trained", rerun="--resume")
    step.folder.mkdir()
    (step.folder / "last.ckpt").write_bytes(damage)
    with pytest.raises(steps.StepFailed) as caught:
        run_plan(Plan(tmp_path, [step]), False, _quiet)
    message = str(caught.value)
    assert message.startswith(f"step s0/simclr cannot resume: cannot read {step.folder / 'last.ckpt'}: not a "
                              "PyTorch checkpoint, or a truncated or corrupt one (") and message.endswith(
        f"Delete {step.folder / 'last.ckpt'} to train the step from its start (or restore it), then run "
        "the same command again") and "Pass a" not in message, message
