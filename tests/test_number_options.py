"""The real-valued options of eval and poc (--eps, --alpha, --lr, --beta) take decimals and
fractions and refuse nan and inf at parse time (a NaN budget passed every range check: eval wrote
RA 6.00 for an encoder whose RA is 36); a head whose last step diverged is refused, not saved."""
import argparse
import math

import pytest
import torch
from torch import nn
from torch.utils.data import TensorDataset

from solo_ncp.cli import main, parse_args
from solo_ncp.commands._encoder import finite_number


@pytest.mark.parametrize("text, value", [("8/255", 8 / 255), ("2/255", 2 / 255), ("0.5", 0.5), ("1e-3", 0.001),
                                         (" 3 ", 3.0), ("-1", -1.0)])
def test_a_decimal_or_a_fraction_is_its_value(text, value):
    assert finite_number(text) == value


@pytest.mark.parametrize("text", ["nan", "NaN", "inf", "-inf", "Infinity", "abc", "8/0", "", "1/2/3"])
def test_anything_but_a_finite_number_is_refused(text):
    with pytest.raises(argparse.ArgumentTypeError, match="is not a finite number"):
        finite_number(text)


OPTIONS = [("eval", option) for option in ("--eps", "--alpha", "--lr", "--beta")] + \
          [("poc", option) for option in ("--eps", "--alpha", "--lr")]


def argv(command, *extra):
    base = {"eval": ["eval", "--out", "x"], "poc": ["poc", "--k", "5", "--out", "x"]}[command]
    return [*base, "--ckpt", "c.ckpt", "--dataset", "digits", *extra]


@pytest.mark.parametrize("command, option", OPTIONS)
@pytest.mark.parametrize("text", ["nan", "inf"])
def test_the_commands_refuse_a_non_finite_value_before_any_work(command, option, text, tmp_path, capsys,
                                                                 monkeypatch):
    monkeypatch.chdir(tmp_path)
    with pytest.raises(SystemExit) as stop:
        main(argv(command, option, text))
    assert stop.value.code == 2
    assert f"error: argument {option}: '{text}' is not a finite number" in capsys.readouterr().err
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize("command, option", OPTIONS)
def test_the_commands_read_a_fraction(command, option):
    args = parse_args(argv(command, option, "8/255"))
    assert getattr(args, option.lstrip("-")) == 8 / 255


def test_a_head_whose_last_step_diverged_is_refused():
    """One epoch of one batch: the loss before the step is finite, the step at lr 3e38 (float32's
    largest is 3.4e38) times gradients of pixels up to 100 overflows into inf; no later loss shows it."""
    from solo_ncp.eval.linear import FineTuneConfig, fine_tune

    generator = torch.Generator().manual_seed(0)
    images = 100 * torch.rand(16, 3, 4, 4, generator=generator)
    data = TensorDataset(images, torch.arange(16) % 4)

    def tune(lr):
        cfg = FineTuneConfig(epochs=1, batch_size=16, head="paper", lr=lr, seed=0)
        return fine_tune(nn.Flatten(), data, 4, cfg, device="cpu", cache_features=True, progress=False)

    with pytest.raises(FloatingPointError) as err:
        tune(3e38)
    assert str(err.value) == ("the fine-tuned weights hold NaN or inf after the last step: lower --lr, or use "
                              "--head whitened")
    assert math.isfinite(tune(1e-3).history[0]["loss"])


@pytest.mark.parametrize("head, fix", [("paper", "lower --lr, or use --head whitened"),
                                       ("standardized", "lower --lr, or use --head whitened"),
                                       ("whitened", "lower --lr")])
def test_the_fix_of_a_diverged_head_names_the_whitened_head_only_where_another_ran(head, fix):
    from solo_ncp.eval.linear import FineTuneConfig, _divergence_fix

    assert _divergence_fix(FineTuneConfig(head=head)) == fix


@pytest.mark.parametrize("options, message", [
    (["--steps", "0"], "--steps must be >= 1 (the paper's delta_nbr takes 5 PGD steps), got 0"),
    (["--k", "1"], "--k=1: K must be >= 2 clusters (select-k's K)"),
    (["--n", "1"], "--n=1 must be in [2, --k=5]: the rank of the neighbouring centroid (1 is the image's own)"),
    (["--n", "6"], "--n=6 must be in [2, --k=5]"),
    (["--eps", "-0.1"], "--eps and --alpha are L-inf sizes in [0, 1] pixel units and must be >= 0, got -0.1"),
    (["--alpha", "2"], "--alpha=2 is an L-inf size in [0, 1] pixel units"),
])
def test_poc_refuses_what_no_run_can_use_before_reading_anything(options, message):
    """poc.check_arguments reads no file: these were refused only after the head was trained
    (`--steps 0` not at all: a Table 1 of a push that never moved)."""
    from solo_ncp.commands import poc

    args = parse_args(argv("poc", *options))
    with pytest.raises(ValueError) as err:
        poc.check_arguments(args)
    assert str(err.value).startswith(message)


@pytest.mark.parametrize("command", ["eval", "poc"])
@pytest.mark.parametrize("text, reason", [("99999999999999999999", "99999999999999999999 is outside [0, 2**63 - 1]"),
                                          ("-1", "-1 is outside [0, 2**63 - 1]"),
                                          ("1.5", "'1.5' is not a whole number")])
def test_a_seed_outside_what_torch_and_numpy_take_is_refused_at_parse_time(command, text, reason, capsys):
    with pytest.raises(SystemExit) as stop:
        main(argv(command, "--seed", text))
    assert stop.value.code == 2
    assert f"error: argument --seed: {reason}" in capsys.readouterr().err


def test_the_largest_seed_is_taken():
    assert parse_args(argv("eval", "--seed", str(2 ** 63 - 1))).seed == 2 ** 63 - 1


def test_poc_help_names_no_mode_it_lacks(capsys):
    """poc trains an SLF head only: its --lr help names no `--mode aff` (eval's does)."""
    for command, has_aff in (("poc", False), ("eval", True)):
        with pytest.raises(SystemExit):
            main([command, "--help"])
        text = " ".join(capsys.readouterr().out.split())
        assert ("--mode aff" in text) == has_aff and "10 CIFAR-100/STL-10" in text
