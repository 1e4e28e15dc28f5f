"""The baseline configs say what they are: `deacl.yaml` is DeACL as its public scripts run it,
`deacl_matched.yaml` is DeACL's perturbation inside NCP-ACL's recipe (`ncp.yaml`)."""
from pathlib import Path

import pytest

from solo_ncp.config import load_config, to_solo102_kwargs

ZOO = Path(__file__).resolve().parents[1] / "zoo_configs"
# pantheon5100/DeACL@3fb81e3 bash_files/DeACL_cifar{10,100}_resnet18.sh: --max_epochs 100,
# --precision 32 / 16, --lr 0.5 --classifier_lr 0.5 --weight_decay 5e-4 --batch_size 256,
# --scheduler warmup_cosine (solo-learn's defaults there: 10 warm-up epochs from 0.003),
# --trades_k 2; one BatchNorm (mocov2_distillation_AT.py forwards cat([x, x_adv]) once).
DEACL_SCRIPTS = {"cifar10": 32, "cifar100": 16}
DATASETS = ("cifar10", "cifar100", "stl10")


@pytest.mark.parametrize("dataset", DATASETS)
def test_deacl_config_is_deacl_as_published(dataset):
    cfg = load_config(ZOO / dataset / "deacl.yaml")
    kwargs = to_solo102_kwargs(cfg, (1, 0))
    assert cfg.method == "deacl" and kwargs["lam"] == 2.0 and kwargs["dual_bn"] is False
    assert kwargs["max_epochs"] == 100
    assert (kwargs["batch_size"], kwargs["lr"], kwargs["classifier_lr"]) == (256, 0.5, 0.5)
    assert (kwargs["optimizer"], kwargs["weight_decay"], kwargs["scheduler"]) == ("sgd", 5e-4,
                                                                                  "warmup_cosine")
    assert (kwargs["warmup_epochs"], kwargs["warmup_start_lr"]) == (10, 0.003)
    assert (kwargs["eps"], kwargs["alpha"], kwargs["pgd_steps"]) == (8 / 255, 2 / 255, 5)
    if dataset in DEACL_SCRIPTS:
        assert int(cfg.precision) == DEACL_SCRIPTS[dataset]
    assert not {"k", "k_file", "strategy", "cluster_bn"} & set(cfg.method_kwargs)


@pytest.mark.parametrize("dataset", (*DATASETS, "fashionmnist"))
def test_deacl_matched_is_ncps_recipe_with_deacls_perturbation(dataset):
    matched = load_config(ZOO / dataset / "deacl_matched.yaml")
    ncp = load_config(ZOO / dataset / "ncp.yaml")
    assert matched.method == "deacl" and ncp.method == "ncp"
    assert matched.name != load_config(ZOO / dataset / "deacl.yaml").name
    for key in ("optimizer", "scheduler", "max_epochs", "augmentations", "precision", "data"):
        assert matched[key] == ncp[key], key
    cluster_only = {"k", "k_file", "strategy", "neighbor_rank", "assign", "cluster_every",
                    "cluster_features", "cluster_bn"}
    shared = {k: v for k, v in ncp.method_kwargs.items() if k not in cluster_only}
    assert {k: v for k, v in matched.method_kwargs.items() if k != "teacher_ckpt"} == {
        k: v for k, v in shared.items() if k != "teacher_ckpt"}
    assert matched.method_kwargs.lam == 6.0 and matched.method_kwargs.dual_bn is True


@pytest.mark.parametrize("option", ["+method_kwargs.k=10", "+method_kwargs.strategy=i",
                                    "+method_kwargs.neighbor_rank=5", "+method_kwargs.kmeans_seed=3"])
def test_deacl_refuses_the_options_of_the_clustering_it_never_reads(option):
    """They were accepted and recorded in config.yaml (k: 10, strategy: i) though DeACL has no
    clusters; the shared ones (lam, eps, cluster_bn: its monitors' branch) stay."""
    from solo_ncp.config import ConfigError

    key = option.lstrip("+").split("=")[0]
    with pytest.raises(ConfigError) as caught:
        load_config(ZOO / "fashionmnist/deacl.yaml", [option])
    assert str(caught.value).startswith(f"`{key}` is not read by solo-ncp or deacl on solo-learn-"), caught.value
    cfg = load_config(ZOO / "fashionmnist/deacl.yaml", ["method_kwargs.lam=3", "+method_kwargs.cluster_bn=adv"])
    assert (cfg.method_kwargs.lam, cfg.method_kwargs.cluster_bn) == (3, "adv")
