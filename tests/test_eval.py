"""Tests for solo_ncp.eval on scikit-learn's digits (8x8, scaled to [0, 1], 3 channels)."""
import ast
import json
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from sklearn.datasets import load_digits
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

from solo_ncp.eval import (
    DEFAULT_BN,
    FineTuneConfig,
    aggregate,
    autoattack_accuracy,
    default_lr,
    eval_mode,
    evaluate,
    extract_features,
    fine_tune,
    format_poc_table,
    format_row,
    pad_crop_flip,
    poc_table,
)

PACKAGE_ROOT = Path(__file__).resolve().parents[1] / "solo_ncp"
NUM_CLASSES = 10
NUM_TRAIN = 1200
DEVICE = "cpu"


pytestmark = pytest.mark.usefixtures("single_thread")


@pytest.fixture(scope="module")
def digits():
    """(train, test) TensorDatasets of (3, 8, 8) images in [0, 1], split after a fixed shuffle."""
    data = load_digits()
    x = torch.tensor(data.data, dtype=torch.float32).div(16.0).reshape(-1, 1, 8, 8).repeat(1, 3, 1, 1)
    y = torch.tensor(data.target)
    order = torch.randperm(len(y), generator=torch.Generator().manual_seed(0))
    x, y = x[order], y[order]
    return TensorDataset(x[:NUM_TRAIN], y[:NUM_TRAIN]), TensorDataset(x[NUM_TRAIN:], y[NUM_TRAIN:])


def make_encoder(seed: int = 0) -> nn.Module:
    """Fixed random projection with BatchNorm (whose running stats reveal any train-mode pass)."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        return nn.Sequential(nn.Flatten(), nn.Linear(192, 128), nn.BatchNorm1d(128), nn.ReLU())


def small_config(**overrides) -> FineTuneConfig:
    settings = dict(epochs=10, batch_size=64, lr=0.1, milestones=(7,), seed=0)
    settings.update(overrides)
    return FineTuneConfig(**settings)


def train_head(encoder: nn.Module, train_set, cfg: FineTuneConfig, **options) -> nn.Linear:
    return fine_tune(encoder, train_set, NUM_CLASSES, cfg, device=DEVICE, progress=False, **options).head


@pytest.fixture(scope="module")
def slf_classifier(digits):
    encoder = make_encoder()
    return nn.Sequential(encoder, train_head(encoder, digits[0], small_config(), cache_features=True))


def accuracy(classifier: nn.Module, dataset: TensorDataset) -> float:
    x, y = dataset.tensors
    with torch.no_grad(), eval_mode(classifier):
        return 100.0 * (classifier(x).argmax(1) == y).float().mean().item()


# --- features and modes -------------------------------------------------------------------------

def test_extract_features_shapes_dtype_and_restored_modes(digits):
    encoder = make_encoder().train()
    encoder[2].eval()
    features, labels = extract_features(encoder, DataLoader(digits[1], batch_size=100), device=DEVICE, progress=False)
    assert features.shape == (len(digits[1]), 128) and features.dtype == torch.float32
    assert torch.equal(labels, digits[1].tensors[1])
    assert not features.requires_grad
    assert [m.training for m in encoder.modules()] == [True, True, True, False, True]
    assert encoder[2].num_batches_tracked.item() == 0


# --- linear fine-tuning ---------------------------------------------------------------------------

def test_lr_table_and_config_validation():
    assert default_lr("cifar10", "slf", "paper") == 0.1
    assert default_lr("CIFAR100", "slf", "paper") == 10.0
    assert default_lr("stl10", "alf", "paper") == 10.0
    assert default_lr("digits", "slf", "paper") == 0.1
    assert default_lr("cifar100", "slf", "whitened") == default_lr("stl10", "alf", "standardized") == 0.1
    assert default_lr("cifar10", "aff", "paper") == default_lr("cifar100", "aff", "whitened") == 0.01
    defaults = FineTuneConfig()
    assert (defaults.epochs, defaults.batch_size, defaults.milestones, defaults.steps) == (25, 512, (15, 20), 10)
    assert (defaults.momentum, defaults.weight_decay, defaults.head, defaults.loss) == (0.9, 2e-4, "whitened", "ce")
    assert defaults.eps == pytest.approx(8 / 255) and defaults.alpha == pytest.approx(2 / 255)
    assert FineTuneConfig(mode="aff", loss="trades").beta == 6.0
    with pytest.raises(ValueError, match="mode"):
        FineTuneConfig(mode="full")


@pytest.mark.parametrize("image_size, padding", [(96, 4), (32, 4), (28, 4), (20, 3), (12, 2), (8, 1), (4, 1),
                                                 (3, 0)])
def test_the_heads_crop_padding_is_4_px_of_32_at_any_smaller_size(image_size, padding):
    """DeACL pads 4 px at 32 and at 96 px; a smaller image is padded the same eighth of its side,
    rounded half up (28 px: 3.5 -> 4, 20 px: 2.5 -> 3, 4 px: 0.5 -> 1), so an 8-px digit moves by
    at most 1 px, not half its width."""
    from solo_ncp.eval.protocol import head_crop_padding

    assert head_crop_padding(image_size) == padding


def test_pad_crop_flip_returns_a_crop_of_the_padded_image():
    x = torch.rand(16, 3, 5, 6, generator=torch.Generator().manual_seed(0))
    padding = 2
    out = pad_crop_flip(x, padding, torch.Generator().manual_seed(1))
    assert out.shape == x.shape
    padded = F.pad(x, (padding,) * 4)
    for image, crop in zip(padded, out):
        candidates = [
            view[:, top:top + 5, left:left + 6]
            for view in (image, image.flip(-1))
            for top in range(2 * padding + 1)
            for left in range(2 * padding + 1)
        ]
        assert any(torch.equal(crop, candidate) for candidate in candidates)
    flips = pad_crop_flip(x, 0, torch.Generator().manual_seed(2))
    flipped = [torch.equal(a, b.flip(-1)) for a, b in zip(flips, x)]
    assert all(torch.equal(a, b) or f for a, b, f in zip(flips, x, flipped)) and 0 < sum(flipped) < len(x)
    assert torch.equal(pad_crop_flip(x, padding, torch.Generator().manual_seed(1)), out)


def test_slf_beats_chance_and_leaves_the_encoder_untouched(digits, slf_classifier):
    assert accuracy(slf_classifier, digits[1]) > 70.0

    encoder = make_encoder().train()
    before = {k: v.clone() for k, v in encoder.state_dict().items()}
    head = train_head(encoder, digits[0], small_config(epochs=3, milestones=(2,)), augment=False)
    assert accuracy(nn.Sequential(encoder, head), digits[1]) > 70.0
    assert all(torch.equal(before[k], v) for k, v in encoder.state_dict().items())
    assert all(m.training for m in encoder.modules())
    assert all(p.requires_grad for p in encoder.parameters())


def test_linear_head_is_deterministic_under_the_seed(digits):
    cfg = small_config(epochs=2, milestones=(1,), crop_padding=1)
    heads = [train_head(make_encoder(), digits[0], cfg) for _ in range(2)]
    assert torch.equal(heads[0].weight, heads[1].weight)
    other = train_head(make_encoder(), digits[0], small_config(epochs=2, milestones=(1,), crop_padding=1, seed=1))
    assert not torch.equal(heads[0].weight, other.weight)
    unaugmented = train_head(make_encoder(), digits[0], cfg, augment=False)
    assert not torch.equal(heads[0].weight, unaugmented.weight)


def test_alf_head_is_more_robust_than_slf(digits):
    eps = 0.05
    settings = dict(epochs=5, milestones=(3,), eps=eps, alpha=eps / 4, steps=5)
    encoder = make_encoder()
    slf = train_head(encoder, digits[0], small_config(**settings), augment=False)
    alf = train_head(encoder, digits[0], small_config(mode="alf", **settings), augment=False)
    assert torch.isfinite(alf.weight).all() and torch.isfinite(alf.bias).all()
    robust = {
        name: evaluate(nn.Sequential(encoder, head), digits[1], eps=eps, alpha=eps / 4, steps=10,
                       device=DEVICE, seed=0, progress=False)["ra"]
        for name, head in (("slf", slf), ("alf", alf))
    }
    assert robust["alf"] > robust["slf"]


@pytest.mark.parametrize("mode", ["alf", "aff"])
def test_adversarial_fine_tuning_with_cached_features_is_refused(digits, mode):
    with pytest.raises(ValueError, match="SLF only"):
        train_head(make_encoder(), digits[0], small_config(mode=mode), cache_features=True)


# --- SA / RA / AA -----------------------------------------------------------------------------------

class ConstantClassifier(nn.Module):
    """Logits favouring class `label` whatever the image, with a zero gradient: no attack moves it."""

    def __init__(self, label: int):
        super().__init__()
        self.logits = F.one_hot(torch.tensor(label), NUM_CLASSES).float()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.logits.expand(len(x), -1) + 0.0 * x.flatten(1)[:, :1]


def test_a_constant_classifier_has_ra_equal_to_sa_equal_to_its_class_share(digits):
    labels = digits[1].tensors[1]
    metrics = evaluate(ConstantClassifier(3), digits[1], eps=0.05, alpha=0.0125, device=DEVICE, seed=0,
                       progress=False)
    share = 100.0 * (labels == 3).sum().item() / len(labels)
    assert metrics["sa"] == metrics["ra"] == share


def test_evaluate_reports_ra_below_sa_with_counts(digits, slf_classifier):
    """SA is a plain forward count; with no budget (eps 0) the attack cannot move an image, so RA
    is SA; with eps 0.05 it must break some of the right ones."""
    slf_classifier.train()
    metrics = evaluate(slf_classifier, digits[1], eps=0.05, alpha=0.0125, device=DEVICE, seed=0, progress=False)
    assert all(m.training for m in slf_classifier.modules())
    assert metrics["sa"] == pytest.approx(accuracy(slf_classifier, digits[1]))
    assert metrics["ra"] < metrics["sa"]
    assert metrics["sa_n"] == metrics["ra_n"] == len(digits[1])
    assert metrics["aa"] is None and metrics["aa_n"] == 0
    again = evaluate(slf_classifier, digits[1], eps=0.05, alpha=0.0125, device=DEVICE, seed=0, progress=False)
    assert again["ra"] == metrics["ra"]
    no_budget = evaluate(slf_classifier, digits[1], eps=0.0, alpha=0.0125, device=DEVICE, seed=0, progress=False)
    assert no_budget["ra"] == no_budget["sa"] == metrics["sa"]


def test_aa_n_larger_than_the_test_set_is_a_clear_error(digits, slf_classifier):
    with pytest.raises(ValueError, match="aa_n"):
        evaluate(slf_classifier, digits[1], aa_n=len(digits[1]) + 1, device=DEVICE, seed=0, progress=False)
    x, y = digits[1].tensors
    with pytest.raises(ValueError, match="n="):
        autoattack_accuracy(slf_classifier, x[:4], y[:4], eps=8 / 255, n=5, device=DEVICE, seed=0, progress=False)


def test_standard_autoattack_runs_quickly_on_eight_images(digits, slf_classifier, tmp_path):
    x, y = digits[1].tensors
    rng_state = torch.get_rng_state()
    start = time.monotonic()
    result = autoattack_accuracy(slf_classifier, x, y, eps=0.05, n=8, device=DEVICE, seed=0,
                                 log_path=tmp_path / "aa.log", progress=False)
    assert time.monotonic() - start < 30.0
    assert result.n == 8 and result.x_adv.shape == x[:8].shape
    clean = accuracy(slf_classifier, TensorDataset(x[:8], y[:8]))
    assert 0.0 <= result.accuracy <= clean
    assert any("robust accuracy" in line for line in result.log)
    assert (tmp_path / "aa.log").read_text().splitlines() == result.log
    assert torch.equal(torch.get_rng_state(), rng_state)


def test_evaluate_includes_autoattack_on_the_first_images(digits, slf_classifier, tmp_path):
    """AA is AutoAttack's accuracy on the first 8 test images, run here directly with the same seed."""
    aa = dict(version="custom", attacks=["apgd-ce"])
    metrics = evaluate(slf_classifier, digits[1], aa_n=8, aa_version=aa["version"], aa_attacks=aa["attacks"],
                       aa_log_path=tmp_path / "aa.log", device=DEVICE, seed=0, progress=False)
    x, y = digits[1].tensors
    direct = autoattack_accuracy(slf_classifier, x[:8], y[:8], eps=8 / 255, n=8, device=DEVICE, seed=0,
                                 progress=False, **aa)
    assert metrics["aa_n"] == 8 and metrics["aa"] == direct.accuracy
    assert "robust accuracy" in (tmp_path / "aa.log").read_text()


# --- reports ----------------------------------------------------------------------------------------

def write_run(directory: Path, method: str, dataset: str, mode: str, seed: int, sa, ra, aa, bn=None,
              head="paper", test_n: int = 10000, aa_n: int = 1000, pgd_steps: int = 20,
              encoder=None) -> Path:
    """A run folder with a metrics.json: SA and RA (PGD-`pgd_steps`) on `test_n` test images, AA
    (when given, AutoAttack standard) on aa_n."""
    directory.mkdir(parents=True)
    record = {
        "method": method, "dataset": dataset, "mode": mode, "seed": seed, "bn": bn, "head": head,
        "metrics": {"sa": sa, "ra": ra, "aa": aa, "sa_n": test_n, "ra_n": test_n,
                    "aa_n": aa_n if aa else 0},
        "settings": {"ra": {"eps": 8 / 255, "alpha": 2 / 255, "steps": pgd_steps},
                     "aa": {"version": "standard", "attacks": None, "eps": 8 / 255}},
        "checkpoint": {"path": "x.ckpt", "sha256": f"{method} {dataset} {seed}".encode().hex()},  # one per seed
        "encoder": encoder or {},
    }
    (directory / "metrics.json").write_text(json.dumps(record))
    return directory


SEED_TEST_IMAGES = (100, 300, 1000)
"""Test images behind seeds 0, 1, 2 where a test needs them unequal."""


def seed_cell(values) -> str:
    """numpy's mean and sample std (ddof=1, as the tables' legend says) over seeds, as a cell."""
    return f"{np.mean(values):.2f} ± {np.std(values, ddof=1):.2f} (n={len(values)})"


def table_rows(table: str, title: str) -> list:
    """The cells of each body row of the markdown table under the heading `title`."""
    lines = table[table.index(title):].split("\n\n")[1].splitlines()[2:]
    return [[cell.strip() for cell in line.strip("|").split("|")] for line in lines]


def test_format_row():
    assert format_row("DeACL", {"sa": 80.17, "ra": 53.951, "aa": None}) == "| DeACL | 80.17 | 53.95 | n/a |"


def test_aggregate_builds_mean_and_sample_std_tables(tmp_path):
    runs = [
        write_run(tmp_path / "a", "NCP-ACL", "cifar10", "slf", 0, 80.0, 50.0, 45.0),
        write_run(tmp_path / "b", "NCP-ACL", "cifar10", "slf", 1, 82.0, 51.0, 46.0),
        write_run(tmp_path / "c", "NCP-ACL", "cifar10", "slf", 2, 84.0, 55.0, None),
        write_run(tmp_path / "d", "DeACL", "stl10", "slf", 0, 80.87, 65.86, 58.5),
        write_run(tmp_path / "e", "NCP-ACL", "cifar10", "alf", 0, 80.4, 54.61, 49.23),
    ]
    table = aggregate(runs)
    # SA: mean 82, sample std sqrt((4 + 0 + 4) / 2) = 2. RA: mean 52, std sqrt((4 + 1 + 9) / 2) = 2.65.
    # AA: (45, 46) -> mean 45.5, std sqrt(0.5) = 0.71 over n=2 (the third run has no AA).
    slf_row = next(line for line in table.splitlines() if line.startswith("| NCP-ACL | 82.00"))
    assert slf_row.split(" | ")[1:4] == ["82.00 ± 2.00 (n=3)", "52.00 ± 2.65 (n=3)", "45.50 ± 0.71 (n=2)"]
    assert slf_row.endswith("| n/a | n/a | n/a |")
    assert "| DeACL | n/a | n/a | n/a | 80.87 (n=1) | 65.86 (n=1) | 58.50 (n=1) |" in table
    assert "± 0.00" not in table
    assert "CIFAR-10 SA (%) [n=10000]" in table and "STL-10 AA (%) [n=1000]" in table
    assert "## Table 2: standard linear fine-tuning (SLF)" in table  # the paper's head: its title
    assert "Head: the paper's head (Appendix A.3" in table
    assert "RA: PGD-20, L-inf eps 8/255, step 2/255. AA: AutoAttack standard, L-inf eps 8/255." in table
    table3 = table[table.index("Table 3"):]
    assert "| NCP-ACL | 82.00 ± 2.00 (n=3) | 52.00 ± 2.65 (n=3) | 45.50 ± 0.71 (n=2) | " \
           "80.40 (n=1) | 54.61 (n=1) | 49.23 (n=1) |" in table3
    assert "Table 3: CIFAR-10, SLF vs ALF (CE)" in table3
    assert "DeACL" not in table3


@pytest.mark.parametrize("mode, title", [("slf", "Table 2"), ("alf", "Table 3")])
def test_table_cells_are_the_mean_and_sample_std_over_seeds(tmp_path, mode, title):
    per_seed = {"sa": [80.0, 90.0, 84.0], "ra": [40.0, 52.0, 47.0], "aa": [30.0, 45.0, 38.0]}
    runs = [write_run(tmp_path / f"seed{seed}", "NCP-ACL", "cifar10", mode, seed,
                      *(per_seed[metric][seed] for metric in ("sa", "ra", "aa")))
            for seed in range(3)]
    assert table_rows(aggregate(runs), title) == [
        ["NCP-ACL"] + [seed_cell(per_seed[metric]) for metric in ("sa", "ra", "aa")]]


@pytest.mark.parametrize("metric", ["sa", "aa"])
def test_a_column_over_different_test_images_is_refused(tmp_path, metric):
    sizes = {"test_n": [10000, 500]} if metric == "sa" else {"aa_n": [1000, 200]}
    runs = [write_run(tmp_path / f"seed{seed}", "ncp", "cifar10", "slf", seed, 80.0, 50.0, 40.0,
                      **{key: values[seed] for key, values in sizes.items()}) for seed in range(2)]
    with pytest.raises(ValueError, match=rf"column CIFAR-10 {metric.upper()} mixes runs on "
                                         rf"\d+ and \d+ test images .*seed0.*seed1.*--test-n"):
        aggregate(runs)


def test_a_column_over_different_attacks_is_refused(tmp_path):
    runs = [write_run(tmp_path / f"seed{seed}", "ncp", "cifar10", "slf", seed, 80.0, 50.0, None,
                      pgd_steps=steps) for seed, steps in enumerate((20, 10))]
    with pytest.raises(ValueError, match="column CIFAR-10 RA mixes attacks \\(PGD-10.*; PGD-20"):
        aggregate(runs)


def test_each_head_gets_its_own_tables_the_papers_under_the_papers_titles(tmp_path):
    runs = [write_run(tmp_path / head, "ncp", "cifar10", "slf", 0, sa, 50.0, None, bn="adv", head=head)
            for head, sa in (("whitened", 90.0), ("paper", 80.0))]
    table = aggregate(runs)
    paper = table[:table.index("## Table 2 (whitened head")]
    whitened = table[table.index("## Table 2 (whitened head"):]
    assert paper.startswith("## Table 2: standard linear fine-tuning (SLF)")
    assert "| ncp (adv BN) | 80.00 (n=1) |" in paper and "90.00" not in paper
    assert "| ncp (adv BN) | 90.00 (n=1) |" in whitened and "80.00" not in whitened
    assert "Head: whitened head" in whitened and "not the paper's protocol" in whitened


def test_a_legend_says_which_column_measured_with_which_attack(tmp_path):
    """Table 2 of CIFAR-10 with AutoAttack standard beside CIFAR-100 with its rand version said 'AA:
    AutoAttack rand, ...; AutoAttack standard, ...', naming no column; one version stays one text."""
    runs = [write_run(tmp_path / dataset, "ncp", dataset, "slf", 0, 80.0, 50.0, 40.0) for dataset in ("cifar10", "cifar100")]
    record = json.loads((runs[1] / "metrics.json").read_text())
    record["settings"]["aa"]["version"] = "rand"
    (runs[1] / "metrics.json").write_text(json.dumps(record))
    assert ("RA: PGD-20, L-inf eps 8/255, step 2/255. AA: CIFAR-10: AutoAttack standard, L-inf eps 8/255; CIFAR-100: "
            "AutoAttack rand, L-inf eps 8/255. Counting:") in aggregate(runs)
    assert "AA: AutoAttack standard, L-inf eps 8/255. Counting:" in aggregate([runs[0]])


def ncp_settings(strategy="iii", rank=2, k=10, k_source="k_file", **others) -> dict:
    """What eval records of an NCP encoder's checkpoint (`encoder_settings`); `others`: its other
    stage-2 settings (an older checkpoint's record has none)."""
    return {"k": k, "strategy": strategy, "neighbor_rank": rank, "k_source": k_source, **others}


OURS = {"lam": 6.0, "norm": "Linf", "eps": 8 / 255, "alpha": 2 / 255, "steps": 5, "assign": "nearest",
        "dual_bn": True, "cluster_bn": "clean"}
"""The other stage-2 settings of zoo_configs/*/ncp.yaml, as a checkpoint records them."""


def test_a_variant_of_ncp_is_a_row_of_table_2_not_of_an_ablation(tmp_path):
    """`--methods ncp,ncp-advbn=ncp` beside strategies.sh's runs: ncp-advbn (cluster_bn adv) recorded
    strategy iii, rank 2 and K from select-k as ncp did, so Tables 4, 5 and Fig. 3 saw two encoders of
    one row and seed and the whole report failed (after every training of reproduce)."""
    variants = {"ncp": ncp_settings(**OURS), "ncp-advbn": ncp_settings(**{**OURS, "cluster_bn": "adv"}),
                "ncp-lam3": ncp_settings(**{**OURS, "lam": 3.0}), "ncp-i": ncp_settings("i", **OURS),
                "ncp-old": ncp_settings("ii")}
    runs = [write_run(tmp_path / f"{label}-s{seed}", label, "cifar10", "slf", seed, 80.0 + i + seed, 50.0, None,
                      bn="adv", encoder=encoder) for seed in range(2) for i, (label, encoder) in enumerate(variants.items())]
    table = aggregate(runs)
    assert [row[0] for row in table_rows(table, "Table 2")] == [f"{label} (adv BN)" for label in variants]
    assert [(row[0], row[1]) for row in table_rows(table, "Table 4")] == [
        ("strategy (i) (adv BN)", "83.50 ± 0.71 (n=2)"), ("strategy (ii) (adv BN)", "84.50 ± 0.71 (n=2)"),
        ("strategy (iii) (ours) (adv BN)", "80.50 ± 0.71 (n=2)")]


def test_tables_4_5_and_fig_3_are_read_from_the_encoders_recorded_settings(tmp_path):
    """Labels say nothing (`run<i>`): rows come from the settings the checkpoints recorded; each
    ablation holds the others at the paper's values, and the main ncp run joins each as its row."""
    settings = [ncp_settings(), ncp_settings("i"), ncp_settings("ii"), ncp_settings(rank=3),
                ncp_settings(k=40, k_source="k"), ncp_settings("i", k=40, k_source="k")]
    runs = [write_run(tmp_path / f"s{seed}-{i}", f"run{i}", "cifar10", "slf", seed, 80.0 + i + seed,
                      50.0 + i, None, bn="adv", encoder=encoder)
            for seed in range(2) for i, encoder in enumerate(settings)]
    runs.append(write_run(tmp_path / "deacl", "deacl", "cifar10", "slf", 0, 70.0, 40.0, None))
    table = aggregate(runs)
    rows = lambda title: [(row[0], row[1]) for row in table_rows(table, title)]
    assert rows("Table 4") == [("strategy (i) (adv BN)", "81.50 ± 0.71 (n=2)"),
                               ("strategy (ii) (adv BN)", "82.50 ± 0.71 (n=2)"),
                               ("strategy (iii) (ours) (adv BN)", "80.50 ± 0.71 (n=2)")]
    assert rows("Table 5") == [("n = 2 (NCP-ACL) (adv BN)", "80.50 ± 0.71 (n=2)"),
                               ("n = 3 (adv BN)", "83.50 ± 0.71 (n=2)")]
    assert rows("Fig. 3") == [("K = 10 (silhouette) (adv BN)", "80.50 ± 0.71 (n=2)"),
                              ("K = 40 (adv BN)", "84.50 ± 0.71 (n=2)")]
    assert "Table 4, SLF: perturbation strategies" in table and "deacl" not in table[table.index("Table 4"):]


@pytest.mark.parametrize("layout", [
    (("cifar10", 0, 15), ("cifar10", 1, 10)),  # one dataset, each seed its own K
    (("cifar10", 0, 10), ("cifar100", 0, 70)),  # one seed, each dataset its own K
])
def test_each_runs_own_silhouette_k_is_not_a_k_sweep(tmp_path, layout):
    """Two NCP encoders of one setting (ncp and an ncp-advbn) per (dataset, seed), each at that
    run's silhouette K: Tables 2 only, no Fig. 3 (whose rows would collide or mix two Ks in one)."""
    runs = [write_run(tmp_path / f"{dataset}-s{seed}-{label}", label, dataset, "slf", seed, 80.0 + seed, 50.0, None,
                      bn="adv", encoder=ncp_settings(k=k))
            for dataset, seed, k in layout for label in ("ncp", "ncp-advbn")]
    table = aggregate(runs)
    assert [row[0] for row in table_rows(table, "Table 2")] == ["ncp (adv BN)", "ncp-advbn (adv BN)"]
    assert "Fig. 3" not in table


def test_two_encoders_of_one_ablation_row_and_seed_are_refused(tmp_path):
    runs = [write_run(tmp_path / label, label, "cifar10", "slf", 0, 80.0, 50.0, None, bn="adv",
                      encoder=ncp_settings(strategy)) for label, strategy in
            (("ncp", "iii"), ("ncp-iii", "iii"), ("ncp-i", "i"))]
    with pytest.raises(ValueError, match="duplicate run.*strategy \\(iii\\)"):
        aggregate(runs)


def write_selection(directory: Path, dataset: str, seed: int, scores: dict) -> Path:
    """A select-k folder: k.json with the silhouette per K and the best K."""
    directory.mkdir(parents=True)
    best = max(scores, key=scores.get)
    (directory / "k.json").write_text(json.dumps({"k": best, "scores": {str(k): v for k, v in scores.items()},
                                                  "dataset": dataset, "seed": seed, "n": 500}))
    return directory


def test_fig_2_names_the_encoder_of_each_sweep(tmp_path, monkeypatch):
    """Two sweeps of one dataset and seed (two encoders) were two rows and two lines of one name."""
    from solo_ncp.eval import figures

    folders = [write_selection(tmp_path / name, "cifar10", 0, {10: 0.1, 20: 0.3}) for name in ("a", "b", "c")]
    for folder, about in zip(folders, ({"ckpt": "runs/s0/simclr/last.ckpt", "ckpt_sha256": "ab" * 32},
                                       {"ckpt": None, "ckpt_sha256": "cd" * 32}, {"ckpt": "x|y.ckpt"})):
        record = json.loads((folder / "k.json").read_text())
        (folder / "k.json").write_text(json.dumps({**record, **about}))
    labels = []
    monkeypatch.setattr(figures, "save_figure", lambda figure, path: labels.extend(
        text.get_text() for text in figure.axes[0].get_legend().get_texts()))
    from solo_ncp.eval.report import tables
    from solo_ncp.eval.results import read_inputs

    inputs = read_inputs(folders)
    rows = tables(inputs).split("## Fig. 2")[1].split("\n\n")[1].splitlines()[2:]
    assert [row.rsplit(" | ", 1)[1] for row in rows] == ["runs/s0/simclr/last.ckpt |", "sha256 cdcdcdcdcdcd |",
                                                        "x\\|y.ckpt |"]
    figures.figure2(inputs.selections, tmp_path / "fig2.png")
    assert labels[::2] == ["cifar10, seed 0, runs/s0/simclr/last.ckpt", "cifar10, seed 0, sha256 cdcdcdcdcdcd",
                           "cifar10, seed 0, x|y.ckpt"]


def test_report_draws_fig_2_and_fig_3_and_tabulates_them(tmp_path, capsys):
    from PIL import Image

    from solo_ncp.cli import main

    folders = [write_selection(tmp_path / f"k{seed}", "cifar10", seed, {10: 0.1, 20: 0.3 + seed / 10, 30: 0.2})
               for seed in range(2)]
    for seed in range(2):
        for k, source in ((20, "k_file"), (10, "k"), (30, "k")):
            folders.append(write_run(tmp_path / f"s{seed}-k{k}", f"ncp-k{k}", "cifar10", "slf", seed,
                                     80.0 + k / 10, 50.0 + seed, 40.0, bn="adv",
                                     encoder=ncp_settings(k=k, k_source=source)))
    out = tmp_path / "report" / "report.md"
    out.parent.mkdir()
    assert main(["report", *map(str, folders), "--out", str(out)]) == 0
    table = out.read_text()
    assert [row[:4] + row[6:] for row in table_rows(table, "Fig. 2")] == [
        ["cifar10", "0", "10..30 (3)", "20", "not recorded"], ["cifar10", "1", "10..30 (3)", "20", "not recorded"]]
    assert [(row[0], row[2]) for row in table_rows(table, "Fig. 3")] == [
        ("K = 10 (adv BN)", "50.50 ± 0.71 (n=2)"), ("K = 20 (silhouette) (adv BN)", "50.50 ± 0.71 (n=2)"),
        ("K = 30 (adv BN)", "50.50 ± 0.71 (n=2)")]
    printed = capsys.readouterr().out
    for name in ("report_fig2.png", "report_fig3_cifar10_paper.png"):
        assert Image.open(out.parent / name).size[0] > 500
        assert f"wrote {out.parent / name}" in printed

    (out.parent / "notes.png").write_bytes(b"the user's")
    assert main(["report", str(folders[-1]), "--out", str(out)]) == 0  # no K sweep, no select-k
    assert sorted(path.name for path in out.parent.iterdir()) == ["notes.png", "report.md"]
    assert "removed " + str(out.parent / "report_fig2.png") + ": an earlier report's figure" in capsys.readouterr().out


@pytest.mark.parametrize("field, value, says", [
    ("encoder", {"k": [15]}, "encoder.k must be a whole number or null, not [15]"),
    ("encoder", {"k": "15"}, "encoder.k must be a whole number or null, not '15'"),
    ("encoder", {"neighbor_rank": True}, "encoder.neighbor_rank must be a whole number or null, not True"),
    ("encoder", {"strategy": 3}, "encoder.strategy must be a string or null, not 3"),
    ("encoder", {"lam": "6"}, "encoder.lam must be a finite number or null, not '6'"),
    ("encoder", {"dual_bn": 1}, "encoder.dual_bn must be true or false or null, not 1"),
    ("sa", 150.0, "metrics.sa must be a percentage in [0, 100]"),
    ("aa", -1.0, "metrics.aa must be a percentage in [0, 100] or null"),
])
def test_a_metrics_json_of_impossible_values_is_one_error_naming_the_field(field, value, says, tmp_path):
    """report sorted and grouped such values into a TypeError traceback, or tabulated 150% SA."""
    encoder = value if field == "encoder" else None
    numbers = {"sa": 80.0, "ra": 40.0, "aa": 30.0, **({field: value} if field != "encoder" else {})}
    folder = write_run(tmp_path / "run", "ncp", "cifar10", "slf", 0, numbers["sa"], numbers["ra"], numbers["aa"],
                       encoder=encoder)
    with pytest.raises(ValueError) as caught:
        aggregate([folder])
    assert str(caught.value) == f"{folder / 'metrics.json'}: {says}"


def test_a_k_json_that_is_no_selection_is_one_error(tmp_path):
    (tmp_path / "k").mkdir()
    (tmp_path / "k" / "k.json").write_text('{"k": 3}')
    with pytest.raises(ValueError, match="k.json: not a k.json of `solo-ncp select-k`"):
        aggregate([tmp_path / "k"])


def test_the_adv_branch_row_comes_first_and_the_clean_one_is_marked(tmp_path):
    runs = [write_run(tmp_path / f"{bn}{method}", method, "cifar10", "slf", 0, sa, 50.0, None, bn=bn)
            for method, bn, sa in (("ncp", "clean", 81.0), ("deacl", None, 79.0), ("ncp", "adv", 80.0))]
    rows = [row[0] for row in table_rows(aggregate(runs), "Table 2")]
    assert rows == ["ncp (adv BN)", "ncp (clean BN) †", "deacl"]


def write_poc(directory: Path, seed: int, n_correct: int, random_noise, nbr, head="paper") -> Path:
    """A `solo-ncp poc` folder; random_noise, nbr: (Prob. Dec., Attk. Succ.) in %, each over
    `n_correct` test images; head: its SLF head (None: not recorded, as before poc recorded it)."""
    directory.mkdir(parents=True)
    rows = {key: {"prob_dec": prob_dec, "attack_success": success, "n": n_correct}
            for key, (prob_dec, success) in (("random_noise", random_noise), ("nbr", nbr))}
    record = {**rows, "n_correct": n_correct, "n_total": 2000,
              "settings": {"eps": 8 / 255, "alpha": 2 / 255, "steps": 5, "n": 2, "seed": seed,
                           "k": 10, "dataset": "cifar10", **({"head": head} if head else {})}}
    (directory / "poc.json").write_text(json.dumps(record))
    return directory


def test_poc_table_cells_are_the_mean_over_seeds_not_over_test_images(tmp_path):
    random_noise = [(1.0, 2.0), (3.0, 8.0), (2.0, 4.0)]
    nbr = [(15.0, 20.0), (25.0, 34.0), (18.0, 25.0)]
    folders = [write_poc(tmp_path / f"seed{seed}", seed, n, random_noise[seed], nbr[seed])
               for seed, n in enumerate(SEED_TEST_IMAGES)]
    assert table_rows(aggregate(folders), "Table 1") == [
        ["CIFAR-10", "8/255", "2nd nearest cluster", label, seed_cell([prob_dec for prob_dec, _ in per_seed]),
         seed_cell([success for _, success in per_seed]), "100, 300, 1000 of 2000"]
        for label, per_seed in (("random noise", random_noise), ("δ_nbr", nbr))]


def test_poc_table_gives_each_seeds_correct_images_in_seed_order_and_names_each_blocks_rank(tmp_path):
    """The column was the sorted set of counts, "3/1"-like: read as a fraction, out of seed order
    and with two seeds of one count shown once; two blocks of two ranks had the same row labels."""
    counts = {2: 7, 0: 30, 1: 7}  # seeds, passed out of order; two seeds of one count
    folders = [write_poc(tmp_path / f"seed{seed}", seed, n, (1.0, 1.0), (5.0, 6.0)) for seed, n in counts.items()]
    rank_3 = write_poc(tmp_path / "rank3", 0, 12, (1.0, 1.0), (5.0, 6.0))
    record = json.loads((rank_3 / "poc.json").read_text())
    record["settings"]["n"] = 3
    (rank_3 / "poc.json").write_text(json.dumps(record))
    report = aggregate([*folders, rank_3])
    assert [row[2:4] + row[6:] for row in table_rows(report, "Table 1")] == [
        ["2nd nearest cluster", "random noise", "30, 7, 7 of 2000"], ["2nd nearest cluster", "δ_nbr", "30, 7, 7 of 2000"],
        ["3rd nearest cluster", "random noise", "12 of 2000"], ["3rd nearest cluster", "δ_nbr", "12 of 2000"]]
    assert "CIFAR-10 8/255 δ_nbr toward the 2nd nearest cluster: seeds 0, 1, 2; K 10;" in report


def test_poc_tables_are_one_per_head_the_papers_first_and_titled_by_protocol(tmp_path):
    """Seeds with the paper's head are averaged apart from those with the whitened head and from
    poc.json files that do not say which head they trained (poc's default was whitened)."""
    heads = ["whitened", "paper", None, "paper", "whitened", None]
    folders = [write_poc(tmp_path / f"p{i}", i, 100, (float(i), float(i)), (10.0 + i, 20.0 + i), head=head)
               for i, head in enumerate(heads)]
    report = aggregate(folders)
    titles = [line for line in report.splitlines() if line.startswith("## Table 1")]
    assert titles == [
        "## Table 1: proof of concept (stage-1 encoder with an SLF head)",
        "## Table 1 (whitened head: a second evaluation, not the paper's protocol): proof of concept "
        "(stage-1 encoder with an SLF head)",
        "## Table 1 (SLF head not recorded: a poc.json of before it was; not known to be the paper's "
        "protocol): proof of concept (stage-1 encoder with an SLF head)"]
    for title, seeds in zip(titles, ([1, 3], [0, 4], [2, 5])):
        rows = table_rows(report[report.index(title):], "Table 1")
        assert rows[0][4] == seed_cell([float(seed) for seed in seeds]), (title, rows)


def test_a_poc_json_naming_no_known_head_is_refused(tmp_path):
    folder = write_poc(tmp_path / "p", 0, 100, (1.0, 2.0), (3.0, 4.0), head="linear")
    with pytest.raises(ValueError, match=r"poc.json: settings.head 'linear' is none of the heads"):
        aggregate([folder])


def test_aggregate_rejects_missing_malformed_and_duplicate_runs(tmp_path):
    (tmp_path / "empty").mkdir()
    with pytest.raises(FileNotFoundError, match="metrics.json"):
        aggregate([tmp_path / "empty"])
    broken = tmp_path / "broken"
    broken.mkdir()
    (broken / "metrics.json").write_text("{not json")
    with pytest.raises(ValueError, match="not valid JSON"):
        aggregate([broken])
    no_ra = write_run(tmp_path / "no_ra", "X", "cifar10", "slf", 0, 80.0, None, None)
    with pytest.raises(ValueError, match="metrics.ra"):
        aggregate([no_ra])
    first = write_run(tmp_path / "first", "X", "cifar10", "slf", 0, 80.0, 50.0, None)
    second = write_run(tmp_path / "second", "X", "cifar10", "slf", 0, 81.0, 51.0, None)
    with pytest.raises(ValueError, match="duplicate"):
        aggregate([first, second])
    other_bn = write_run(tmp_path / "other_bn", "X", "cifar10", "slf", 0, 81.0, 51.0, None, bn="clean")
    assert "| X (clean BN) † |" in aggregate([first, other_bn])
    with pytest.raises(ValueError, match="at least one"):
        aggregate([])


# --- proof of concept (Table 1) ---------------------------------------------------------------------

def test_poc_table_counts_correct_samples_and_reports_sane_rates(digits, slf_classifier):
    encoder = slf_classifier[0]
    features, labels = extract_features(encoder, DataLoader(digits[0], batch_size=256), device=DEVICE, progress=False)
    centroids = F.normalize(torch.stack([F.normalize(features[labels == c], dim=1).mean(0)
                                         for c in range(NUM_CLASSES)]), dim=1)
    result = poc_table(slf_classifier, encoder, centroids, digits[1], eps=0.05, alpha=0.0125, steps=5, n=2,
                       seed=0, device=DEVICE, batch_size=128, progress=False)
    x, y = digits[1].tensors
    with torch.no_grad(), eval_mode(slf_classifier):
        num_correct = (slf_classifier(x).argmax(1) == y).sum().item()
    assert result["n_correct"] == num_correct and result["n_total"] == len(y)
    assert result["random_noise"]["n"] == result["nbr"]["n"] == num_correct
    assert result["nbr"]["prob_dec"] > result["random_noise"]["prob_dec"]
    assert result["nbr"]["attack_success"] >= result["random_noise"]["attack_success"]
    table = format_poc_table(result)
    assert len(table.strip().splitlines()) == 4 and "random noise" in table and "δ_nbr toward the 2nd nearest cluster" in table


class InkDetector(nn.Module):
    """Two classes: logits (0, 1e4 * (max pixel - 0.001)), so class 1 iff some pixel is above 0.001.
    A blank image of class 0 is right when clean and wrong once any pixel rises (a certain flip
    under noise in the eps-ball: its negative half is clamped to 0, its positive half is not); a
    gray (0.5) image of class 1 stays right anywhere in the ball."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        ink = x.flatten(1).amax(1) - 0.001
        return torch.stack([torch.zeros_like(ink), 1e4 * ink], dim=1)


class RecordingClassifier(InkDetector):
    """InkDetector that keeps every batch it classifies."""

    def __init__(self):
        super().__init__()
        self.inputs = []

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self.inputs.append(x.detach().clone())
        return super().forward(x)


class ConstantEncoder(nn.Module):
    """Features (1, 0) for every image, with a zero gradient: PGD's sign steps do not move, so both
    PoC rows are their uniform random start (projected)."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.tensor([1.0, 0.0]).expand(len(x), 2) + 0.0 * x.flatten(1)[:, :1]


POC_CENTROIDS = torch.eye(2)


def test_poc_random_noise_fills_the_linf_ball_uniformly():
    """On gray images (no clamping) each perturbed pixel is x + U(-eps, eps): its largest size is
    eps (up to 1 part in 100 over 960 pixels), its mean size eps / 2 and its mean 0."""
    eps, x = 8 / 255, torch.full((20, 3, 4, 4), 0.5)
    classifier = RecordingClassifier()
    poc_table(classifier, ConstantEncoder(), POC_CENTROIDS, TensorDataset(x, torch.ones(20, dtype=torch.long)),
              eps=eps, alpha=2 / 255, steps=5, n=2, seed=0, device=DEVICE, batch_size=20, progress=False)
    clean, *perturbed = classifier.inputs
    assert torch.equal(clean, x) and len(perturbed) == 2  # random noise, delta_nbr
    for x_perturbed in perturbed:
        delta = x_perturbed - x
        assert delta.abs().max() <= eps + 1e-7 and delta.abs().max() >= 0.99 * eps
        assert delta.abs().mean().item() == pytest.approx(eps / 2, rel=0.05)
        assert abs(delta.mean().item()) < 0.05 * eps


def test_poc_rates_are_over_the_correctly_classified_images():
    """12 test images: 3 blank of class 0 (right, then flipped by any noise), 5 gray of class 1
    (right, never flipped), 2 blank of class 1 and 2 gray of class 0 (wrong when clean, left out).
    Both rows: 3 flipped of 8 right = 37.5 %; each flip drops the true-class probability from
    sigmoid(10) to 0, so Prob. Dec. = 100 * 3 * sigmoid(10) / 8."""
    blank, gray = torch.zeros(3, 4, 4), torch.full((3, 4, 4), 0.5)
    images_and_labels = [(blank, 0)] * 3 + [(gray, 1)] * 5 + [(blank, 1)] * 2 + [(gray, 0)] * 2
    order = torch.randperm(12, generator=torch.Generator().manual_seed(0))
    x = torch.stack([images_and_labels[i][0] for i in order])
    y = torch.tensor([images_and_labels[i][1] for i in order])
    result = poc_table(InkDetector(), ConstantEncoder(), POC_CENTROIDS, TensorDataset(x, y), eps=8 / 255,
                       alpha=2 / 255, steps=5, n=2, seed=0, device=DEVICE, batch_size=5, progress=False)
    assert (result["n_correct"], result["n_total"]) == (8, 12)
    for key in ("random_noise", "nbr"):
        assert result[key]["n"] == 8
        assert result[key]["attack_success"] == 100.0 * 3 / 8
        assert result[key]["prob_dec"] == pytest.approx(100.0 * 3 * torch.sigmoid(torch.tensor(10.0)).item() / 8)


# --- structure --------------------------------------------------------------------------------------

def module_level_imports(path: Path):
    """Root names imported by statements that run at import time (not inside functions/classes)."""
    roots = []
    pending = list(ast.parse(path.read_text()).body)
    while pending:
        node = pending.pop()
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
            continue
        if isinstance(node, ast.Import):
            roots += [alias.name.split(".")[0] for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.level == 0:
            roots.append(node.module.split(".")[0])
        pending += [child for child in ast.iter_child_nodes(node) if isinstance(child, ast.stmt)]
    return roots


def test_core_packages_import_only_torch_numpy_tqdm_and_the_standard_library():
    allowed = {"torch", "numpy", "tqdm", "solo_ncp"} | set(sys.stdlib_module_names)
    files = sorted((PACKAGE_ROOT / "attacks").glob("*.py")) + sorted((PACKAGE_ROOT / "eval").glob("*.py"))
    assert len(files) >= 10
    for path in files:
        roots = module_level_imports(path)
        assert not {"lightning", "pytorch_lightning", "solo", "pyautoattack"} & set(roots), path
        assert set(roots) <= allowed, (path, set(roots) - allowed)


def test_default_bn_is_a_known_branch():
    assert DEFAULT_BN in ("clean", "adv")


def test_a_mean_that_rounds_to_zero_prints_as_zero_not_minus_zero(tmp_path):
    """A probability drop of -0.001 points (the true class slightly more likely under noise)."""
    from solo_ncp.eval.poc import format_poc_table

    result = {"random_noise": {"prob_dec": -0.001, "attack_success": 0.0, "n": 9},
              "nbr": {"prob_dec": -0.05, "attack_success": 1.0, "n": 9}, "settings": {"n": 2}}
    assert format_poc_table(result).splitlines()[2:] == ["| random noise | 0.00 | 0.00 | 9 |",
                                                         "| δ_nbr toward the 2nd nearest cluster | -0.05 | 1.00 | 9 |"]
    folders = [write_poc(tmp_path / f"s{seed}", seed, 100, (value, 1.0), (5.0, 6.0))
               for seed, value in enumerate((-0.001, -0.003))]
    assert table_rows(aggregate(folders), "Table 1")[0][4] == "0.00 ± 0.00 (n=2)"


@pytest.mark.parametrize("holds, fix", [
    ("export.json", "it is an export, which report does not read: evaluate it (solo-ncp eval --ckpt {folder} --out "
                    "<folder>) and pass that folder"),
    ("last.ckpt", "it is a training run, which report does not read: evaluate it (solo-ncp eval --ckpt "
                  "{folder}/last.ckpt --out <folder>) and pass that folder"),
    ("notes.txt", "pass the --out folder of a finished run of one of them (an interrupted one writes none; run it "
                  "again)"),
])
def test_report_of_a_folder_it_does_not_read_says_what_to_do_with_it(holds, fix, tmp_path):
    """An export or a training run was told it was interrupted and to run it again."""
    from solo_ncp.eval.results import read_inputs

    (tmp_path / holds).write_text("{}")
    with pytest.raises(FileNotFoundError) as err:
        read_inputs([tmp_path])
    assert str(err.value) == (f"{tmp_path} holds no metrics.json (`solo-ncp eval`), poc.json (`solo-ncp poc`) or "
                              f"k.json (`solo-ncp select-k`): {fix.format(folder=tmp_path)}")
