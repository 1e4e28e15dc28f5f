"""The console script: options anywhere among the overrides, and one `error:` line (the last line,
on its own line, exit 2, no traceback) for bad input, unwritable outputs, failed writes and a
training stopped by a NaN loss, on either host's Lightning."""
import errno
import itertools
import json
import os
import pty
import subprocess
import sys

import pytest

from solo_ncp.cli import build_parser, main, one_line, parse_args
from tests.conftest import ROOT, host_independent, pretrain, train_stage2

TINY = ["max_epochs=1", "limit_train_batches=1"]


def error_line(captured) -> str:
    """The single `error:` line, which is stderr's last line, of a command without traceback."""
    assert "Traceback" not in captured.err
    lines = [line for line in captured.err.splitlines() if "error:" in line]
    assert len(lines) == 1 and captured.err.splitlines()[-1] == lines[0]
    return lines[0]


def test_options_may_follow_the_overrides():
    args = parse_args(["pretrain", "--config", "c.yaml", "max_epochs=2", "--resume", "+a=1",
                       "--trust-checkpoint", "~b"])
    assert (args.command, args.config, args.resume, args.trust_checkpoint) == (
        "pretrain", "c.yaml", True, True)
    assert args.overrides == ["max_epochs=2", "+a=1", "~b"]


def test_an_option_before_the_command_is_refused_not_dropped(capsys):
    """`solo-ncp --bogus export ...` exported and never mentioned --bogus."""
    with pytest.raises(SystemExit) as exit_:
        parse_args(["--overwrite", "export", "--ckpt", "c.ckpt", "--out", "o"])
    assert exit_.value.code == 2
    assert capsys.readouterr().err.strip().splitlines()[-1] == (
        "solo-ncp: error: unrecognized arguments before the command: --overwrite (a command's options follow it: "
        "solo-ncp export --overwrite ...)")


def test_the_top_level_help_says_what_the_tool_is_and_how_a_command_fails(capsys):
    with pytest.raises(SystemExit) as stop:
        main(["--help"])
    assert stop.value.code == 0
    text = " ".join(capsys.readouterr().out.split())
    for words in ("NCP-ACL", "`solo-ncp <command> --help`", "one `error:` line", "exits 2",
                  "SOLO_NCP_DEBUG=1 to see the traceback."):
        assert words in text


def test_every_option_of_every_command_says_what_it_does():
    _, commands = build_parser()
    silent = [(name, action.option_strings or action.dest) for name, command in commands.items()
              for action in command._actions if not action.help]
    assert silent == []


PATH_OPTIONS = {  # command -> (its arguments without the path options, the path options)
    "eval": (["--ckpt", "c", "--dataset", "digits", "--out", "o"], ["--ckpt", "--out", "--data-dir", "--train-path",
                                                                   "--val-path"]),
    "select-k": (["--ckpt", "c", "--dataset", "digits", "--out", "o"], ["--ckpt", "--out"]),
    "poc": (["--ckpt", "c", "--dataset", "digits", "--k", "2", "--out", "o"], ["--ckpt", "--out"]),
    "export": (["--ckpt", "c", "--out", "o"], ["--ckpt", "--out", "--head"]),
    "plot": (["r"], ["--out", "--ckpt", "run"]),  # a positional argument: the first given, replaced by ''
    "report": (["r"], ["--out", "runs"]),
    "reproduce": (["--dataset", "digits", "--out", "o"], ["--out", "--teacher", "--config-dir"]),
    "pretrain": (["--config", "c"], ["--config"]),
    "train": (["--config", "c"], ["--config"]),
    "demo": ([], ["--out"]),
}


@pytest.mark.parametrize("command, option", [(command, option) for command, (_, options) in PATH_OPTIONS.items()
                                             for option in options])
def test_an_empty_path_is_refused_as_its_options_usage_error(command, option, capsys):
    """The defect: Path('') is the current folder: `eval --out ''` wrote its result there, `report
    --out ''` wrote nothing and exited 0."""
    given = PATH_OPTIONS[command][0]
    argv = [command, "", *given[1:]] if not option.startswith("--") else [command, *given, option, ""]
    with pytest.raises(SystemExit) as stop:
        parse_args(argv)
    assert stop.value.code == 2
    assert capsys.readouterr().err.strip().splitlines()[-1] == (
        f"solo-ncp {command}: error: argument {option}: '' names no file or folder: give a path ('.' for the "
        "current folder)")


def test_multi_line_messages_become_one_line():
    assert one_line(ValueError("Could not override 'x'.\nTo append use +x=1")) == (
        "Could not override 'x'. To append use +x=1")
    worker = ValueError("Caught ValueError in DataLoader worker process 0.\nOriginal Traceback "
                        "(most recent call last):\n  File \"x.py\", line 1\nValueError: bad image")
    assert one_line(worker) == "bad image"
    from solo_ncp.data.registry import DatasetNotFoundError

    worker = DatasetNotFoundError("Caught DatasetNotFoundError in DataLoader worker process 1.\nOriginal "
                                  "Traceback (most recent call last):\n  File \"x.py\", line 1\n"
                                  "solo_ncp.data.registry.DatasetNotFoundError: custom data: image a.png is empty")
    assert one_line(worker) == "custom data: image a.png is empty"
    assert one_line(ValueError("Caught KeyError in DataLoader worker process 0.\nOriginal Traceback "
                               "(most recent call last):\nKeyError: 'x'")) == "KeyError: 'x'"


@pytest.mark.parametrize("bar", [True, False])
def test_the_error_starts_a_line_of_its_own_after_an_open_progress_bar(bar):
    code = ("import sys; from tqdm import tqdm; from solo_ncp.cli import report_error\n"
            f"bars = [tqdm(total=2, file=sys.stdout, bar_format='Epoch 0 {{n}}') for _ in range({bar})]\n"
            "for bar in bars: bar.update(1)\n"
            "report_error('pretrain', FloatingPointError('loss is nan'))")
    proc = subprocess.run([sys.executable, "-c", code], stdout=subprocess.PIPE,
                          stderr=subprocess.STDOUT, env={**os.environ, "PYTHONPATH": str(ROOT)})
    out, line = proc.stdout.decode(), "error: loss is nan (solo-ncp pretrain)"
    assert out.endswith(f"\n{line}\n") if bar else out == f"{line}\n"  # nothing redrawn after it


def test_an_offline_dataset_names_the_config_key(tmp_path, capsys):
    assert pretrain(tmp_path, "data.dataset=cifar10", f"data.train_path={tmp_path / 'none'}",
                    "name=c", *TINY) == 2
    line = error_line(capsys.readouterr())
    assert "data.train_path=<folder>" in line and "--data-dir" not in line


def test_a_failed_checkpoint_write_is_one_error_line(tmp_path, capsys, monkeypatch):
    from solo_ncp.launch import callbacks

    def disk_full(obj, path):
        raise OSError(errno.ENOSPC, "No space left on device", str(path))

    monkeypatch.setattr(callbacks, "atomic_torch_save", disk_full)
    assert pretrain(tmp_path, "name=full", *TINY) == 2
    assert error_line(capsys.readouterr()) == (
        f"error: no room left on the disk of {tmp_path / 'full'} for last.ckpt: free space there, or write to a folder "
        "on a larger disk; no checkpoint was written before it stopped: with room again, start it again "
        "(solo-ncp pretrain)")


def nan_loss_from(call: int, monkeypatch) -> None:
    """Stage-2 steps return a NaN loss from their `call`-th call on (0: the first)."""
    from solo_ncp.methods import stage2_hooks

    real, calls = stage2_hooks.stage2_step, itertools.count()

    def step(*args, **kwargs):
        out = real(*args, **kwargs)
        if next(calls) >= call:
            out.losses["loss"] = out.losses["loss"] * float("nan")
        return out

    monkeypatch.setattr(stage2_hooks, "stage2_step", step)


def test_a_nan_loss_in_the_first_epoch_says_no_checkpoint_exists(tmp_path, capsys, monkeypatch,
                                                                 digits_simclr_ckpt):
    nan_loss_from(0, monkeypatch)
    assert train_stage2(tmp_path, digits_simclr_ckpt, "name=nan", *TINY) == 2
    line = error_line(capsys.readouterr())
    assert line.startswith("error: stage-2 loss is nan")
    assert "no checkpoint was written before it stopped" in line
    assert "last good checkpoint" not in line and not (tmp_path / "nan" / "last.ckpt").exists()


def test_a_nan_loss_later_names_the_checkpoint_kept(tmp_path, capsys, monkeypatch, digits_simclr_ckpt):
    nan_loss_from(1, monkeypatch)  # the one step of epoch 1
    assert train_stage2(tmp_path, digits_simclr_ckpt, "name=nan", "max_epochs=2",
                        "limit_train_batches=1") == 2
    line = error_line(capsys.readouterr())
    assert f"{tmp_path / 'nan' / 'last.ckpt'} (the last completed checkpoint) is kept" in line


def test_a_nan_loss_of_a_solo_learn_method_stops_before_its_checkpoint(tmp_path, capsys, monkeypatch):
    """Stage 1 (SimCLR) whose loss turns NaN in its second epoch: it ran on and wrote NaN weights
    with exit 0 (solo-learn does not check); now it stops with one error line, and last.ckpt is
    the first epoch's, every weight finite."""
    import solo.methods.simclr as simclr
    import torch

    real, calls = simclr.simclr_loss_func, itertools.count()
    monkeypatch.setattr(simclr, "simclr_loss_func",
                        lambda *args, **kwargs: real(*args, **kwargs) * (float("nan") if next(calls) >= 1 else 1.0))
    assert pretrain(tmp_path, "name=nan", "max_epochs=2", "limit_train_batches=1") == 2
    last = tmp_path / "nan" / "last.ckpt"
    assert error_line(capsys.readouterr()) == (
        f"error: SimCLR loss is nan at epoch 1, step 0: training stopped. Lower optimizer.lr, or check the method's "
        f"options; {last} (the last completed checkpoint) is kept (solo-ncp pretrain)")
    ckpt = torch.load(last, weights_only=True)
    assert ckpt["epoch"] == 0 and all(torch.isfinite(t).all() for t in ckpt["state_dict"].values()
                                      if t.is_floating_point())


def test_select_k_checks_its_output_before_loading(tmp_path, capsys):
    (tmp_path / "file").write_text("")
    argv = ["select-k", "--ckpt", str(tmp_path / "none.ckpt"), "--dataset", "digits"]
    assert main([*argv, "--out", str(tmp_path / "file" / "k")]) == 2
    assert "is a file, not a folder" in error_line(capsys.readouterr())

    (tmp_path / "k").mkdir()
    (tmp_path / "k" / "k.json").write_text(json.dumps({"k": 7}))
    assert main([*argv, "--out", str(tmp_path / "k")]) == 2
    assert "--overwrite" in error_line(capsys.readouterr())
    assert json.loads((tmp_path / "k" / "k.json").read_text()) == {"k": 7}
    assert main([*argv, "--out", str(tmp_path / "k"), "--overwrite"]) == 2  # on to the checkpoint
    assert "does not exist" in error_line(capsys.readouterr())


@pytest.mark.parametrize("value, traceback", [("1", True), ("yes", True), ("0", False), ("false", False), ("", False)])
def test_solo_ncp_debug_set_to_0_shows_no_traceback(value, traceback, tmp_path, monkeypatch, capsys):
    """Any value, "0" too, turned the one error line into a traceback."""
    monkeypatch.setenv("SOLO_NCP_DEBUG", value)
    argv = ["export", "--ckpt", str(tmp_path / "missing.ckpt"), "--out", str(tmp_path / "x")]
    if traceback:
        from solo_ncp.models.checkpoint import CheckpointError

        with pytest.raises(CheckpointError):
            main(argv)
    else:
        assert main(argv) == 2
        assert capsys.readouterr().err.strip().splitlines()[-1].startswith("error: checkpoint ")


def _closed_pipe() -> int:
    """The write end of a pipe whose reader has gone (`| true`): writing to it fails with EPIPE."""
    read_end, write_end = os.pipe()
    os.close(read_end)
    return write_end


def _hung_up_terminal() -> int:
    """A terminal whose other side has gone (an SSH session closed): writing to it fails with EIO."""
    master, terminal = pty.openpty()
    os.close(master)
    return terminal


def _closed_stdout() -> None:
    os.close(1)


@host_independent
@pytest.mark.parametrize("stdout", ["reader gone", "terminal hung up", "closed"])
def test_a_reader_gone_or_a_closed_stdout_stops_no_command(stdout, tmp_path, capsys):
    """`solo-ncp report RUN --out r.md | head`: once head had gone, report's table met a broken pipe,
    which stopped report (exit 2, `error: [Errno 32] Broken pipe`) before it wrote r.md; a terminal
    that hung up failed the same way with EIO; with stdout closed (`>&-`) an error line became a
    traceback (sys.stdout is None). Now report writes the file it writes with a terminal, exits 0,
    and a bad input is still its one error line, exit 2."""
    from tests.test_report_consistency import write_metrics

    evaluation = write_metrics(tmp_path / "eval", 0, "ncp-s0")
    assert main(["report", str(evaluation), "--out", str(tmp_path / "terminal.md")]) == 0
    capsys.readouterr()

    def solo_ncp(*argv: str) -> subprocess.CompletedProcess:
        pipe = {"reader gone": _closed_pipe, "terminal hung up": _hung_up_terminal}.get(stdout, lambda: None)()
        try:
            return subprocess.run([sys.executable, "-m", "solo_ncp.cli", *argv], cwd=ROOT, stdout=pipe,
                                  stderr=subprocess.PIPE, text=True, timeout=300,
                                  preexec_fn=_closed_stdout if stdout == "closed" else None)
        finally:
            if pipe is not None:
                os.close(pipe)

    done = solo_ncp("report", str(evaluation), "--out", str(tmp_path / "piped.md"))
    assert (done.returncode, done.stderr) == (0, "")
    assert (tmp_path / "piped.md").read_bytes() == (tmp_path / "terminal.md").read_bytes()
    refused = solo_ncp("report", str(tmp_path / "absent"))
    assert refused.returncode == 2 and "Traceback" not in refused.stderr
    assert refused.stderr.splitlines()[-1].startswith(f"error: {tmp_path / 'absent'}")


@host_independent
@pytest.mark.parametrize("command", [["report", "{eval}", "--out", "{tmp}/report.md"], ["plot", "{tmp}/run"],
                                     ["select-k", "--ckpt", "{tmp}/run/last.ckpt", "--dataset", "digits", "--out",
                                      "{tmp}/k"]])
def test_an_unknown_mplbackend_is_one_error_before_the_work(command, tmp_path):
    """matplotlib reads MPLBACKEND as it loads, which the commands that draw did after their work
    (select-k's sweep, then no k.json), in a line naming neither the variable nor the fix."""
    from tests.test_report_consistency import write_metrics

    evaluation = write_metrics(tmp_path / "eval", 0, "ncp-s0")
    argv = [arg.format(eval=evaluation, tmp=tmp_path) for arg in command]
    done = subprocess.run([sys.executable, "-m", "solo_ncp.cli", *argv], cwd=ROOT, capture_output=True, text=True,
                          env={**os.environ, "MPLBACKEND": "no-such-backend"}, timeout=300)
    assert (done.returncode, done.stderr.strip().splitlines()[-1]) == (
        2, f"error: MPLBACKEND='no-such-backend' is no backend matplotlib knows: unset it, or set MPLBACKEND=Agg "
           f"(solo-ncp {command[0]})")
    assert sorted(path.name for path in tmp_path.iterdir()) == ["eval"]
