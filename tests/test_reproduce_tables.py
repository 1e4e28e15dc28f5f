"""The launchers of the paper's Table 4, Table 5 and Fig. 3 (bash_files/reproduce/strategies.sh,
neighbor_rank.sh, k_sweep.sh): their steps evaluate with the paper's head, they add their rows to
the main table's folder (sharing stage 1 and select-k), and at tiny scale on digits they produce
their tables and Fig. 3's PNG; the ablations' bad settings are one error line each."""
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from solo_ncp.launch.reproduce import build_plan
from tests.conftest import DIGITS_STAGE2, ROOT, host_independent, train_stage2
from tests.test_reproduce import CONFIGS, OPTIONS, TINY
from tests.test_resume import error_lines

pytestmark = host_independent

LAUNCHERS = ROOT / "bash_files/reproduce"


def launch(script: str, *args: str, env=None) -> subprocess.CompletedProcess:
    """bash LAUNCHERS/script args, with this checkout's solo-ncp first on PATH and PYTHONPATH."""
    path = f"{Path(sys.executable).parent}:{os.environ['PATH']}"
    return subprocess.run(["bash", str(LAUNCHERS / script), *args], capture_output=True, text=True,
                          env={**os.environ, "PATH": path, "PYTHONPATH": str(ROOT), **(env or {})})


@pytest.mark.parametrize("script, rows", [("strategies.sh", ("ncp-i", "ncp-ii")),
                                          ("neighbor_rank.sh", ("ncp-n3", "ncp-n4", "ncp-n5")),
                                          ("k_sweep.sh", ("ncp-k10", "ncp-k200"))])
def test_each_launcher_lists_its_runs_evaluated_with_the_papers_head(script, rows, tmp_path):
    done = launch(script, "cifar10", "--dry-run", env={"OUT": str(tmp_path / "run")})
    assert done.returncode == 0, done.stderr
    evals = [line for line in done.stdout.splitlines() if " eval --ckpt " in line]
    assert evals and all("--mode slf --head paper" in line for line in evals)
    for row in ("ncp",) + rows:
        assert f"s4/eval-{row}-slf: " in done.stdout


def test_a_launcher_without_a_dataset_says_how_to_call_it():
    done = launch("k_sweep.sh")
    assert done.returncode != 0 and "usage: k_sweep.sh DATASET" in done.stderr


@pytest.mark.parametrize("script", ["strategies.sh", "neighbor_rank.sh", "k_sweep.sh"])
def test_a_launcher_given_an_override_for_its_dataset_says_how_to_call_it(script):
    """`strategies.sh data.train_path=/data` took the override for the dataset and reproduce said
    it had no bundled configs."""
    done = launch(script, "data.train_path=/data")
    assert (done.returncode, done.stdout) == (2, "")
    assert done.stderr == (f"error: the first argument is the dataset, not data.train_path=/data; usage: {script} "
                           "DATASET [key=value ...] (cifar10, cifar100 or stl10)\n")


def plan(out: Path, methods: str, *overrides: str):
    return build_plan(dataset="digits", seeds=[0], methods=methods.split(","), evals=["slf"], out=out,
                      overrides=[*TINY, *overrides], teacher=None, config_dir=CONFIGS)


def test_an_ablation_joins_the_main_folder_and_the_main_call_keeps_its_rows(tmp_path):
    """The record of the main table (ncp, deacl) admits the strategies' runs with their own
    overrides; their steps use that folder's stage 1 and select-k; the main call made again keeps
    them (with their overrides) instead of refusing the folder."""
    from solo_ncp.launch.reproduce import SETTINGS, compare_settings

    out = tmp_path / "run"
    out.mkdir()
    main_plan = plan(out, "ncp,deacl")
    (out / SETTINGS).write_text(json.dumps(main_plan.settings))
    ablation = plan(out, "ncp,ncp-i=ncp", "ncp-i:method_kwargs.strategy=i")
    compare_settings(main_plan.settings, ablation.settings, out / SETTINGS)
    steps = {step.name: step for step in ablation.steps}
    argv = steps["s0/ncp-i"].argv()
    assert "method_kwargs.strategy=i" in argv and f"method_kwargs.teacher_ckpt={out}/s0/simclr/last.ckpt" in argv
    assert f"method_kwargs.k_file={out}/s0/select-k/k.json" in argv
    assert {"s0/simclr", "s0/select-k", "s0/deacl", "s0/eval-deacl-slf"} <= set(steps)
    (out / SETTINGS).write_text(json.dumps(ablation.settings))
    again = plan(out, "ncp,deacl")
    compare_settings(ablation.settings, again.settings, out / SETTINGS)
    assert "method_kwargs.strategy=i" in {step.name: step for step in again.steps}["s0/ncp-i"].argv()
    with pytest.raises(ValueError, match="ncp-i:method_kwargs.strategy=i.*now 'ncp-i:method_kwargs.strategy=ii'"):
        compare_settings(ablation.settings, plan(out, "ncp-i=ncp", "ncp-i:method_kwargs.strategy=ii").settings,
                         out / SETTINGS)


def test_a_run_with_its_own_k_skips_the_select_k_file(tmp_path):
    steps = {s.name: s for s in plan(tmp_path / "run", "ncp,ncp-k7=ncp", "ncp-k7:method_kwargs.k=7").steps}
    own = steps["s0/ncp-k7"].argv()
    assert "method_kwargs.k=7" in own and not any(arg.startswith("method_kwargs.k_file") for arg in own)
    assert any(arg.startswith("method_kwargs.k_file") for arg in steps["s0/ncp"].argv())


def test_a_runs_own_k_may_be_written_with_plus_but_not_deleted(tmp_path):
    steps = {s.name: s for s in plan(tmp_path / "run", "ncp,ncp-k7=ncp", "ncp-k7:++method_kwargs.k=7").steps}
    assert not any(arg.startswith("method_kwargs.k_file") for arg in steps["s0/ncp-k7"].argv())
    with pytest.raises(ValueError, match="reproduce sets method_kwargs.k itself"):
        plan(tmp_path / "other", "ncp,ncp-k7=ncp", "ncp-k7:~method_kwargs.k")


def test_method_kwargs_k_stays_reproduces_own_outside_a_methods_scope(tmp_path):
    with pytest.raises(ValueError, match="reproduce sets method_kwargs.k itself"):
        plan(tmp_path / "run", "ncp", "method_kwargs.k=7")


@pytest.mark.parametrize("override, message", [
    ("method_kwargs.strategy=iv", "method_kwargs.strategy='iv' must be one of i, ii, iii"),
    ("method_kwargs.neighbor_rank=11", "method_kwargs.neighbor_rank=11 targets the 11-th nearest of K "
                                       "centroids (1 is the sample's own), but K = 10"),
])
def test_a_bad_ablation_setting_is_one_error_line(override, message, tmp_path, capsys, digits_simclr_ckpt):
    assert "method_kwargs.k=10" in DIGITS_STAGE2
    assert train_stage2(tmp_path, digits_simclr_ckpt, "name=t", "max_epochs=1", override) == 2
    (line,) = error_lines(capsys.readouterr())
    assert message in line


def test_the_three_launchers_share_one_folder_and_print_tables_4_5_and_fig_3(tmp_path):
    """digits, one seed, tiny scale: strategies.sh, neighbor_rank.sh (RANKS=3) and k_sweep.sh (KS=3,
    outside select-k's 5..10, so Fig. 3 has two K whichever the silhouette picks) into one folder;
    the report has the three tables (rows read from the checkpoints) and Fig. 3's PNG."""
    out = tmp_path / "run"
    tiny = ["--seeds", "0", "--config-dir", str(CONFIGS), *OPTIONS, *TINY]
    for script in ("strategies.sh", "neighbor_rank.sh", "k_sweep.sh"):
        done = launch(script, "digits", *tiny, env={"OUT": str(out), "KS": "3", "RANKS": "3"})
        assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    report = (out / "report" / "report.md").read_text()
    silhouette_k = json.loads((out / "s0" / "select-k" / "k.json").read_text())["k"]
    k_rows = [f"K = {k}" + (" (silhouette)" if own else "")
              for k, own in sorted([(3, False), (silhouette_k, True)], key=lambda row: (row[0], not row[1]))]
    for title, rows in (("Table 4", ["strategy (i)", "strategy (ii)", "strategy (iii) (ours)"]),
                        ("Table 5", ["n = 2 (NCP-ACL)", "n = 3"]),
                        ("Fig. 3", k_rows)):
        body = report[report.index(f"## {title}"):].split("\n\n")[1].splitlines()[2:]
        assert [line.split(" | ")[0].lstrip("| ") for line in body] == [
            label for row in rows for label in (f"{row} (adv BN)", f"{row} (clean BN) †")], title
    assert (out / "report" / "report_fig3_digits_paper.png").is_file() and (out / "report" / "report_fig2.png").is_file()
    assert sorted(p.name for p in out.iterdir()) == ["report", "reproduce.json", "s0"]
    assert (out / "s0" / "simclr" / ".step-done.json").is_file()


@pytest.mark.parametrize("script, env, message", [
    ("neighbor_rank.sh", {"RANKS": "2 3"}, "error: RANKS holds 2, the paper's own n: its row is `ncp`, which this "
                                           "table runs already; give the other ranks (RANKS=\"3 4 5\")"),
    ("neighbor_rank.sh", {"RANKS": "3 4 3"}, "error: RANKS holds 3 twice: give each rank once"),
    ("k_sweep.sh", {"KS": "10 20 10"}, "error: KS holds 10 twice: give each K once"),
])
def test_a_launchers_row_given_twice_is_refused_before_reproduce(script, env, message, tmp_path):
    """n = 2 duplicated `ncp`, a repeated K or rank a run of its own: report refused them as duplicate
    runs after every training, or reproduce suggested a label of a config that does not exist."""
    done = launch(script, "cifar10", "--dry-run", env={"OUT": str(tmp_path / "run"), **env})
    assert (done.returncode, done.stderr.strip(), done.stdout) == (2, message, "")


@pytest.mark.parametrize("dataset", ["cifar10", "cifar100", "stl10", "fashionmnist"])
def test_the_eval_launcher_evaluates_with_the_papers_head(dataset, tmp_path):
    """bash_files/eval/DATASET.sh's command, read from a stand-in `solo-ncp` that prints its
    arguments; without a checkpoint it prints its usage."""
    stand_in = tmp_path / "solo-ncp"
    stand_in.write_text('#!/usr/bin/env bash\nprintf "%s\\n" "$@"\n')
    stand_in.chmod(0o755)
    script = str(ROOT / "bash_files/eval" / f"{dataset}.sh")
    env = {**os.environ, "PATH": f"{tmp_path}:{os.environ['PATH']}"}
    run = subprocess.run(["bash", script, "my run/last.ckpt", "alf", "", "--aa-n", "0"], capture_output=True,
                         text=True, env=env)
    assert run.stdout.splitlines() == ["eval", "--ckpt", "my run/last.ckpt", "--dataset", dataset, "--mode", "alf",
                                       "--head", "paper", "--out", f"runs/eval-{dataset}-alf", "--aa-n", "0"]
    bare = subprocess.run(["bash", script], capture_output=True, text=True, env=env)
    assert bare.returncode != 0 and f"usage: bash_files/eval/{dataset}.sh CKPT" in bare.stderr
