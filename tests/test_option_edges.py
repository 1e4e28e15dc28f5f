"""The edges of eval's, poc's, select-k's and plot's options: values past what float32 and C's int
hold, a batch size, PGD step, K sweep or K no run can use. Each is one `error:` line naming the
option, the value and the fix, before any work (the messages are written out here by hand). Only
the select-k run is host-independent (README, "Compatibility"): the rest is cheap on both hosts."""
import shutil
from pathlib import Path

import pytest
import torch

from solo_ncp.cli import build_parser, main, parse_args
from solo_ncp.models.checkpoint import META_KEY
from tests.conftest import host_independent

ARGV = {"eval": ["eval", "--ckpt", "missing.ckpt", "--dataset", "digits", "--out", "out"],
        "poc": ["poc", "--k", "5", "--ckpt", "missing.ckpt", "--dataset", "digits", "--out", "out"],
        "select-k": ["select-k", "--ckpt", "missing.ckpt", "--dataset", "digits", "--out", "out"],
        "plot": ["plot", "no-run", "--embedding"]}
"""Each command with a checkpoint or run that does not exist: an option refused before any work is
refused before it is looked for."""


def refused(argv, capsys) -> str:
    """The last line of a command run in tmp_path (the test's cwd) that stopped on bad input."""
    assert main(argv) == 2
    return capsys.readouterr().err.strip().splitlines()[-1]


def parse_error(argv, capsys) -> str:
    """argparse's error line of a value its type refused."""
    with pytest.raises(SystemExit) as stop:
        main(argv)
    assert stop.value.code == 2
    return capsys.readouterr().err.strip().splitlines()[-1]


@pytest.fixture(autouse=True)
def in_empty_folder(tmp_path, monkeypatch):
    """Each test runs in an empty folder, where ARGV's --out lies, and leaves it empty: nothing
    written, not even an .unfinished folder."""
    cwd = tmp_path / "cwd"
    cwd.mkdir()
    monkeypatch.chdir(cwd)
    yield
    assert list(cwd.iterdir()) == []


# ---------------------------------------------------------------- real values past float32


def test_the_written_out_float32_max_is_torchs():
    from solo_ncp.commands._encoder import FLOAT32_MAX

    assert FLOAT32_MAX == torch.finfo(torch.float32).max


@pytest.mark.parametrize("command, option", [("eval", "--lr"), ("eval", "--eps"), ("eval", "--alpha"),
                                             ("eval", "--beta"), ("poc", "--lr"), ("poc", "--eps"),
                                             ("poc", "--alpha")])
@pytest.mark.parametrize("text", ["1e300", "-1e300", "3.5e38", "1e400"])
def test_a_real_value_past_float32_is_refused_at_parse_time(command, option, text, capsys):
    """--lr 1e300 stopped torch's SGD with a traceback ("value cannot be converted to type float
    without overflow"), leaving an empty .unfinished folder."""
    line = parse_error([*ARGV[command], f"{option}={text}"], capsys)
    assert line == (f"solo-ncp {command}: error: argument {option}: '{text}' is outside float32's range "
                    "[-3.40282e+38, 3.40282e+38], which torch computes in: give a number within it")


def test_float32s_largest_value_is_taken():
    assert parse_args([*ARGV["eval"], "--lr", "3.4028234663852886e38"]).lr == 3.4028234663852886e38


# ---------------------------------------------------------------- whole numbers past C's int

WHOLE_NUMBER_OPTIONS = {
    "eval": ["--image-size", "--batch-size", "--epochs", "--train-n", "--test-n", "--pgd-steps",
             "--pgd-batch-size", "--aa-batch-size", "--aa-n"],
    "poc": ["--image-size", "--batch-size", "--epochs", "--train-n", "--test-n", "--k", "--n", "--steps"],
    "select-k": ["--image-size", "--batch-size", "--k-min", "--k-max", "--k-step", "--train-n"],
    "plot": ["--image-size", "--batch-size", "--k", "--test-n"],
}


@pytest.mark.parametrize("command, option", [(command, option) for command, options in
                                             WHOLE_NUMBER_OPTIONS.items() for option in options])
@pytest.mark.parametrize("text", ["2147483648", "99999999999999999999999"])
def test_a_whole_number_past_2_to_the_31_is_refused_at_parse_time(command, option, text, capsys):
    """eval --epochs 99999999999999999999999 stopped after the feature extraction with "Python int
    too large to convert to C ssize_t", naming no option."""
    line = parse_error([*ARGV[command], option, text], capsys)
    assert line == (f"solo-ncp {command}: error: argument {option}: {text} is above 2**31 - 1 = 2147483647, "
                    "the largest whole number solo-ncp takes: pass a smaller one")


@pytest.mark.parametrize("command, option", [(command, option) for command, options in
                                             WHOLE_NUMBER_OPTIONS.items() for option in options])
def test_2_to_the_31_minus_1_is_taken(command, option):
    assert getattr(parse_args([*ARGV[command], option, "2147483647"]),
                   option.lstrip("-").replace("-", "_")) == 2147483647


def test_no_option_of_these_commands_is_a_plain_int():
    """The list above is every whole-number option: none is parsed by int (unbounded)."""
    commands = build_parser()[1]
    plain = [(command, action.option_strings) for command in WHOLE_NUMBER_OPTIONS
             for action in commands[command]._actions if action.type is int]
    assert plain == []


def test_a_whole_number_option_that_is_no_integer_is_named(capsys):
    assert parse_error([*ARGV["select-k"], "--k-min", "1.5"], capsys) == (
        "solo-ncp select-k: error: argument --k-min: '1.5' is not a whole number")


# ---------------------------------------------------------------- --batch-size


@pytest.mark.parametrize("command", ["eval", "poc", "select-k", "plot"])
@pytest.mark.parametrize("value", ["0", "-3"])
def test_every_command_refuses_a_batch_size_below_1_naming_it(command, value, capsys):
    """select-k and plot --embedding ended in torch's "batch_size should be a positive integer
    value", naming no option."""
    assert refused([*ARGV[command], "--batch-size", value], capsys) == (
        f"error: --batch-size must be >= 1, got {value} (solo-ncp {command})")


# ---------------------------------------------------------------- --alpha 0


@pytest.mark.parametrize("command", ["eval", "poc"])
@pytest.mark.parametrize("value", ["0", "0/255"])
def test_a_pgd_step_of_0_is_refused(command, value, capsys):
    """eval and poc took --alpha 0: a "PGD-20 step 0/255" RA of the random start alone."""
    assert refused([*ARGV[command], "--alpha", value], capsys) == (
        "error: --alpha must be > 0 (the PGD step: at 0 the attack stays at its random start), got 0: "
        f"leave --alpha out for its default (solo-ncp {command})")


def test_an_l2_budget_of_0_keeps_its_default_step():
    """eps / 4 of --norm L2 --eps 0 is 0 too, and was not asked for: no attack moves in a 0 ball."""
    from solo_ncp.commands import eval as eval_command

    args = parse_args([*ARGV["eval"], "--norm", "L2", "--eps", "0", "--device", "cpu"])
    eval_command.check_arguments(args)
    assert args.alpha == 0


# ---------------------------------------------------------------- select-k's sweep


@pytest.mark.parametrize("k_range, message", [
    (["--k-min", "2", "--k-max", "6"], "--k-min 2 --k-max 6 --k-step 5 sweeps only K=2: the silhouette chooses "
                                       "among two or more K: lower --k-step to 4 or less, or widen --k-min..--k-max"),
    (["--k-min", "4", "--k-max", "4", "--k-step", "1"], "--k-min 4 --k-max 4 --k-step 1 sweeps only K=4: the "
                                                        "silhouette chooses among two or more K: widen "
                                                        "--k-min..--k-max"),
])
def test_a_sweep_of_one_k_is_refused(k_range, message, capsys):
    """--k-min 2 --k-max 6 swept K = 2 alone and printed "best K = 2 ... over K = 2..6 step 5"."""
    assert refused([*ARGV["select-k"], *k_range], capsys) == f"error: {message} (solo-ncp select-k)"


def test_a_sweep_of_two_k_is_taken():
    from solo_ncp.commands import select_k

    select_k.check_arguments(parse_args([*ARGV["select-k"], "--k-min", "2", "--k-max", "7", "--device", "cpu"]))


@host_independent
@pytest.mark.parametrize("options, fix", [
    (["--train-n", "1", "--k-min", "2", "--k-max", "6", "--k-step", "4"],
     "the sweep reaches K=6, and the silhouette needs K <= N-1 = 0 for the 1 training images: pass --train-n 3 "
     "or more (the sweep starts at --k-min 2)"),
    (["--train-n", "3", "--k-min", "3", "--k-max", "5", "--k-step", "2"],
     "the sweep reaches K=5, and the silhouette needs K <= N-1 = 2 for the 3 training images: pass --train-n 4 "
     "or more (the sweep starts at --k-min 3)"),
    (["--train-n", "4", "--k-min", "2", "--k-max", "6", "--k-step", "4"],
     "the sweep reaches K=6, and the silhouette needs K <= N-1 = 3 for the 4 training images: pass --k-max <= 3, "
     "or more images (--train-n)"),
])
def test_too_few_images_for_the_sweep_asks_for_what_works(options, fix, digits_small_simclr_ckpt, tmp_path,
                                                          capsys):
    """--train-n 1 was told "pass --k-max <= 0": no K below --k-min (>= 2) is swept; only more images
    help there."""
    argv = ["select-k", "--ckpt", str(digits_small_simclr_ckpt), "--dataset", "digits", "--out",
            str(tmp_path / "k"), "--device", "cpu", *options]
    assert refused(argv, capsys) == f"error: {fix} (solo-ncp select-k)"


# ---------------------------------------------------------------- plot --embedding's K


def test_plot_refuses_a_k_below_2_before_reading_anything(capsys):
    assert refused([*ARGV["plot"], "--k", "1"], capsys) == (
        "error: --k must be >= 2 (clusters to mark), got 1 (solo-ncp plot)")


def run_with_k(stage1: Path, folder: Path, k: int) -> Path:
    """A copy of `stage1`'s run folder whose last.ckpt records that it was trained with K = `k`."""
    folder.mkdir()
    shutil.copy(stage1.parent / "config.yaml", folder / "config.yaml")
    ckpt = torch.load(stage1, map_location="cpu", weights_only=True)
    ckpt[META_KEY]["k"] = k
    torch.save(ckpt, folder / "last.ckpt")
    return folder


@pytest.mark.parametrize("test_n, fix", [("1", "raise --test-n to 5 or more"),
                                         ("3", "raise --test-n to 5 or more, or pass --k 3 or less")])
@pytest.mark.parametrize("source", ["--k", "checkpoint"])
def test_plot_names_where_k_came_from_and_a_fix_that_works(source, test_n, fix, digits_small_simclr_ckpt, tmp_path,
                                                         capsys):
    """plot --embedding --test-n 1 said "K=5 must be in [2, 1] (the test images embedded)"."""
    if source == "--k":
        run, options, named = digits_small_simclr_ckpt.parent, ["--k", "5"], "--k 5"
    else:
        run = run_with_k(digits_small_simclr_ckpt, tmp_path / "run", 5)
        options, named = [], f"K=5, the K {run / 'last.ckpt'} was trained with,"
    argv = ["plot", str(run), "--embedding", "--test-n", test_n, "--device", "cpu", "--out", str(tmp_path / "pngs"),
            *options]
    assert refused(argv, capsys) == (f"error: {named} is more clusters than the {test_n} test images embedded "
                                     f"(--test-n {test_n}): {fix} (solo-ncp plot)")


# ---------------------------------------------------------------- data options digits does not read


@pytest.mark.parametrize("command", ["eval", "poc", "select-k"])
def test_data_dir_with_digits_is_refused_and_customs_options_ask_for_no_folder(command, capsys):
    """digits comes with scikit-learn: --data-dir /nonexistent ran and exited 0 with no note, and
    --image-size was told to "pass --data-dir, the folder holding digits"."""
    assert refused([*ARGV[command], "--data-dir", "/nonexistent"], capsys) == (
        f"error: --data-dir is not read for digits, whose images come installed with its Python package: drop it "
        f"(solo-ncp {command})")
    assert refused([*ARGV[command], "--image-size", "16"], capsys) == (
        f"error: --image-size is for --dataset custom: drop it (solo-ncp {command})")
    fashion = [arg if arg != "digits" else "fashionmnist" for arg in ARGV[command]]
    assert refused([*fashion, "--image-size", "16"], capsys) == (
        "error: --image-size is for --dataset custom: drop it, or pass --data-dir, the folder holding fashionmnist "
        f"(solo-ncp {command})")
