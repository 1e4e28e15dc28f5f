"""`solo-ncp eval`, `report` and `poc` end to end on digits checkpoints made by the real stages."""
import json

import pytest

from solo_ncp.cli import main

QUICK = ["--dataset", "digits", "--epochs", "2", "--test-n", "64", "--cache-features"]


@pytest.fixture(scope="module")
def ncp_eval_dir(tmp_path_factory, digits_ncp_ckpt):
    out = tmp_path_factory.mktemp("eval")
    assert main(["eval", "--ckpt", str(digits_ncp_ckpt), "--out", str(out), "--aa-n", "8",
                 "--bn", "clean", *QUICK]) == 0
    return out


def test_eval_writes_metrics_with_counts_settings_and_hash(ncp_eval_dir, digits_ncp_ckpt, capsys):
    record = json.loads((ncp_eval_dir / "metrics.json").read_text())
    metrics = record["metrics"]
    assert (record["method"], record["dataset"], record["mode"], record["bn"]) == (
        "ncp", "digits", "slf", "clean")
    assert (metrics["sa_n"], metrics["ra_n"], metrics["aa_n"]) == (64, 64, 8)
    assert 0 <= metrics["ra"] <= metrics["sa"] <= 100 and 0 <= metrics["aa"] <= 100
    assert record["settings"]["ra"]["steps"] == 20 and record["settings"]["linear"]["epochs"] == 2
    assert len(record["checkpoint"]["sha256"]) == 64


def test_eval_refuses_to_overwrite_and_checks_its_input(ncp_eval_dir, digits_ncp_ckpt, tmp_path, capsys):
    before = (ncp_eval_dir / "metrics.json").read_text()
    assert main(["eval", "--ckpt", str(digits_ncp_ckpt), "--out", str(ncp_eval_dir), *QUICK]) == 2
    assert "--overwrite" in capsys.readouterr().err
    assert (ncp_eval_dir / "metrics.json").read_text() == before

    assert main(["eval", "--ckpt", str(digits_ncp_ckpt), "--out", str(tmp_path / "a"),
                 "--aa-n", "65", *QUICK]) == 2
    assert "--aa-n=65 is larger than the test set (64 images)" in capsys.readouterr().err
    assert main(["eval", "--ckpt", str(tmp_path / "none.ckpt"), "--out", str(tmp_path / "b"), *QUICK]) == 2
    assert "does not exist" in capsys.readouterr().err
    assert not (tmp_path / "a").exists() and not (tmp_path / "b").exists()


def test_report_aggregates_eval_runs(ncp_eval_dir, tmp_path, capsys):
    out = tmp_path / "table.md"
    assert main(["report", str(ncp_eval_dir), "--out", str(out)]) == 0
    record = json.loads((ncp_eval_dir / "metrics.json").read_text())["metrics"]
    assert f"{record['sa']:.2f} ± 0.00 (n=1)" in out.read_text()
    assert main(["report", str(tmp_path / "nothing")]) == 2
    assert "metrics.json" in capsys.readouterr().err


def test_poc_writes_the_two_row_table(digits_simclr_ckpt, tmp_path):
    assert main(["poc", "--ckpt", str(digits_simclr_ckpt), "--k", "10", "--out", str(tmp_path),
                 *QUICK]) == 0
    result = json.loads((tmp_path / "poc.json").read_text())
    assert result["random_noise"]["n"] == result["nbr"]["n"] == result["n_correct"] > 0
    for row in ("random_noise", "nbr"):
        assert 0 <= result[row]["attack_success"] <= 100
    assert result["settings"]["k"] == 10
    assert "δ_nbr (n=2)" in (tmp_path / "poc.md").read_text()
