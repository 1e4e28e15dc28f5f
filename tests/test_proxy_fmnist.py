"""The Fashion-MNIST proxy (`benchmarks/proxy_fmnist.py`): its paired-difference table, which
README's proxy sections quote (per pair, mode, head and BN branch, the mean over seeds of A - B and
its standard error, against numpy on the same numbers), and its evaluations under both heads."""
import numpy as np
import pytest

from benchmarks.proxy_fmnist import FULL, paired_differences, reproduce_argv
from tests.conftest import host_independent
from tests.test_eval import write_run

pytestmark = host_independent

SEEDS = (0, 1, 2)
HEADS = ("paper", "whitened")


def make_results() -> dict:
    """method -> (head, BN branch or None for a one-BN encoder, seed) -> [SA, RA, AA], drawn at
    random, except: under the paper head ncp's RA is deacl's + 5 +- 0.5 (beyond 2 SE), and deacl's
    AA of seed 2 is not measured (--aa-n 0), so that pair's AA mean is over seeds 0 and 1."""
    rng = np.random.default_rng(0)

    def cells(branches) -> dict:
        return {(head, bn, seed): [round(float(value), 2) for value in rng.uniform(40, 85, 3)]
                for head in HEADS for bn in branches for seed in SEEDS}

    results = {"ncp": cells(("adv", "clean")), "deacl": cells((None,)), "simclr": cells((None,))}
    for (head, _, seed), values in results["ncp"].items():
        if head == "paper":
            values[1] = results["deacl"][(head, None, seed)][1] + (5.0, 5.5, 4.5)[seed]
    for head in HEADS:
        results["deacl"][(head, None, 2)][2] = None
    return results


RESULTS = make_results()


@pytest.fixture(scope="module")
def proxy_folder(tmp_path_factory):
    """`s<seed>/eval-<method>-<head>-<bn>/metrics.json`, one BN branch each, as RESULTS holds."""
    out = tmp_path_factory.mktemp("proxy")
    for method, cells in RESULTS.items():
        for (head, bn, seed), (sa, ra, aa) in cells.items():
            write_run(out / f"s{seed}" / f"eval-{method}-{head}-{bn or 'one'}", method, "fashionmnist", "slf",
                      seed, sa, ra, aa, bn=bn, head=head, test_n=1000, aa_n=20)
    return out


def expected_cells(a: str, b: str, head: str, bn_a, bn_b) -> list:
    """numpy: per metric the mean of the per-seed differences and sd(ddof=1) / sqrt(n) over the
    seeds where both have it, as the table prints them, then the metrics beyond 2 SE."""
    cells, beyond = [], []
    for i, metric in enumerate(("SA", "RA", "AA")):
        diffs = np.array([RESULTS[a][(head, bn_a, s)][i] - RESULTS[b][(head, bn_b, s)][i] for s in SEEDS
                          if RESULTS[a][(head, bn_a, s)][i] is not None and RESULTS[b][(head, bn_b, s)][i] is not None])
        mean, se = diffs.mean(), diffs.std(ddof=1) / np.sqrt(len(diffs))
        cells.append(f"{mean:+.2f} ± {se:.2f}")
        beyond += [metric] if abs(mean) > 2 * se else []
    return cells + [", ".join(beyond) or "none"]


def table_row(table: str, prefix: str) -> list:
    (line,) = [line for line in table.splitlines() if line.startswith(prefix)]
    return [cell.strip() for cell in line[len(prefix):].strip(" |").split("|")]


@pytest.mark.parametrize("head", HEADS)
def test_each_head_has_its_own_rows_of_paired_differences(proxy_folder, head):
    table = paired_differences(proxy_folder, comparisons=(("ncp", "deacl"), ("deacl", "simclr")))
    for bn in ("adv", "clean"):  # a dual-BN encoder against a one-BN one: a row per branch
        assert table_row(table, f"| ncp - deacl | SLF | {head} | {bn} | 3 |") == expected_cells(
            "ncp", "deacl", head, bn, None)
    assert table_row(table, f"| deacl - simclr | SLF | {head} | one | 3 |") == expected_cells(
        "deacl", "simclr", head, None, None)
    assert len(table.splitlines()) == 2 + len(HEADS) * 3


def test_the_proxy_evaluates_every_encoder_under_both_heads(tmp_path):
    argv = reproduce_argv("0,1,2", tmp_path, FULL, alf=True)
    evals = [argv[i + 1] for i, arg in enumerate(argv) if arg == "--eval"]
    assert evals == ["slf", "slf-whitened", "alf=ncp,deacl"]


@pytest.mark.parametrize("scale, flags, stage1_epochs, aa_n, eval_options", [
    ((), (), 60, 20, "--epochs 25 --test-n 1000"),
    ((), ("--stage1-epochs", "30", "--aa-n", "0"), 30, 0, "--epochs 25 --test-n 1000"),
    (("--table4", "--quick"), ("--stage1-epochs", "3", "--aa-n", "0"), 3, 0, "--epochs 2 --test-n 100"),
])
def test_stage1_epochs_and_aa_n_change_only_those_settings(monkeypatch, tmp_path, scale, flags, stage1_epochs,
                                                           aa_n, eval_options):
    import benchmarks.proxy_fmnist as proxy

    commands = []
    monkeypatch.setattr(proxy, "solo_ncp", lambda argv: commands.append(argv) or 1)
    assert proxy.main(["--no-alf", "--out", str(tmp_path), *scale, *flags]) == 2
    (command,) = commands
    assert f"simclr:max_epochs={stage1_epochs}" in command
    (options,) = [arg for arg in command if arg.startswith("--eval-options=--epochs")]
    assert options == f"--eval-options={eval_options} --aa-n {aa_n} --batch-size 128 --cache-features"
    subset, stage2_epochs = (512, 2) if scale else (5000, 3)
    assert f"data.subset={subset}" in command and f"stage2:max_epochs={stage2_epochs}" in command
