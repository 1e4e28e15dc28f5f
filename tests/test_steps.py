"""A pipeline's steps (`solo_ncp.launch.steps`, run by `reproduce`) at their edges: a signal whose
raise Python swallowed still stops the plan, a step killed by a signal is named so, and a done step
whose input changed is not skipped."""
import os
import signal
import time

import pytest

from solo_ncp.interrupt import Interrupted, interrupt_signals
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
    """Stands for a step's process that the kernel killed with SIGKILL (Popen's returncode -9)."""

    def __init__(self, *args, **kwargs):
        pass

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


def test_the_error_taken_from_a_log_is_plain_text(tmp_path):
    """A progress bar's output (carriage returns, cursor moves, colours) does not garble the error
    reproduce prints: control sequences are dropped, and a carriage return ends a line."""
    log = tmp_path / "step.log"
    log.write_text("Epoch 0:  50%|#####     | 1/2 [00:01<00:00]\rEpoch 0: 100%|##########| 2/2\n"
                   "\x1b[A\x1b[31mlast words\x1b[0m\r      \x1b[A\n")
    assert steps.last_error(log) == "last words"
    log.write_text("\rEpoch 3:  10%|#\x1b[A\nerror: K=3 is larger than N=2 \x1b[0m\n\x1b[A\n")
    assert steps.last_error(log) == "K=3 is larger than N=2"
