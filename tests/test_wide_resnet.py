"""WideResNet-28-10 / 34-10, the backbones of TRADES and RobustBench's Linf leaderboard.

The oracle is RobustBench's own `WideResNet` (robustbench/model_zoo/architectures/wide_resnet.py,
from TRADES), loaded from its file: `import robustbench` itself needs the `autoattack` module,
which the `pyautoattack` distribution does not provide. Every run goes through the CLI at width 1
on digits, on whichever host runs this file (`make test`, `make test-solo-main`)."""
import copy
import importlib.util
import json
from pathlib import Path

import pytest
import torch
from torch import nn

from solo_ncp.cli import main
from solo_ncp.config import load_config
from solo_ncp.launch.methods import backbone_meta, build_method
from solo_ncp.models import BackboneSpec, build_backbone, load_encoder
from solo_ncp.models.backbones import infer_backbone_spec
from solo_ncp.models.checkpoint import encoder_state_dict, read_checkpoint
from solo_ncp.models.dual_bn import BRANCHES, bn_branch, collapse_dual_bn, convert_dual_bn, has_dual_bn
from tests.conftest import DIGITS_SIMCLR, ROOT, SMALL_BACKBONE, train_stage2
from tests.test_two_hosts import ENCODER_PREFIX, HOST

DEPTHS = {"wide_resnet28_10": 28, "wide_resnet34_10": 34}
EVAL = ["eval", "--dataset", "digits", "--epochs", "1", "--test-n", "20", "--aa-n", "0"]


@pytest.fixture(scope="module")
def robustbench():
    """robustbench.model_zoo.architectures.wide_resnet, imported from its file alone."""
    package = importlib.util.find_spec("robustbench")
    if package is None:
        pytest.skip("robustbench is not installed (a test dependency of both hosts' setup)")
    path = Path(package.submodule_search_locations[0]) / "model_zoo/architectures/wide_resnet.py"
    spec = importlib.util.spec_from_file_location("robustbench_wide_resnet", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def randomise_batchnorms(model: nn.Module, seed: int) -> nn.Module:
    """Gives every BatchNorm random affine parameters and running statistics (else BN in eval
    mode is nearly the identity and a swapped or skipped BN would go unnoticed)."""
    generator = torch.Generator().manual_seed(seed)
    for m in model.modules():
        if isinstance(m, nn.BatchNorm2d):
            n = m.num_features
            m.weight.data = 0.5 + torch.rand(n, generator=generator)
            m.bias.data = torch.randn(n, generator=generator) * 0.1
            m.running_mean = torch.randn(n, generator=generator) * 0.1
            m.running_var = 0.5 + torch.rand(n, generator=generator)
    return model


def robustbench_features(rb_model: nn.Module, x: torch.Tensor) -> torch.Tensor:
    """RobustBench's pooled features, the input of its `fc`."""
    seen = []
    handle = rb_model.fc.register_forward_pre_hook(lambda module, args: seen.append(args[0]))
    rb_model(x)
    handle.remove()
    return seen[0]


def load_into_robustbench(robustbench, encoder_state, depth: int, widen_factor: int) -> nn.Module:
    """RobustBench's WideResNet holding our encoder weights (its own `fc` kept): a strict load,
    so every name must be one of RobustBench's and every RobustBench name but `fc.*` ours."""
    rb_model = robustbench.WideResNet(depth=depth, num_classes=10, widen_factor=widen_factor)
    fc = {k: v for k, v in rb_model.state_dict().items() if k.startswith("fc.")}
    rb_model.load_state_dict({**encoder_state, **fc}, strict=True)
    return rb_model


@pytest.mark.parametrize("name", sorted(DEPTHS))
@pytest.mark.parametrize("train", [False, True], ids=["eval", "train"])
def test_tiny_encoder_is_robustbench_wideresnet_before_its_fc(robustbench, name, train):
    torch.manual_seed(0)
    ours = randomise_batchnorms(build_backbone(BackboneSpec(name, widen_factor=1)), seed=1)
    theirs = load_into_robustbench(robustbench, ours.state_dict(), DEPTHS[name], 1)
    ours.train(train)
    theirs.train(train)
    x = torch.rand(6, 3, 32, 32)  # RobustBench pools with a fixed 8x8 window: 32x32 inputs
    features = ours(x)
    assert features.shape == (6, 64)
    torch.testing.assert_close(features, robustbench_features(theirs, x), atol=1e-5, rtol=1e-6)


@pytest.mark.parametrize("name, published", [("wide_resnet28_10", 36.5), ("wide_resnet34_10", 46.2)])
def test_full_size_has_robustbench_parameters(robustbench, name, published):
    ours = build_backbone(BackboneSpec(name))
    theirs = robustbench.WideResNet(depth=DEPTHS[name], num_classes=10, widen_factor=10)
    shapes = {k: v.shape for k, v in theirs.state_dict().items() if not k.startswith("fc.")}
    assert {k: v.shape for k, v in ours.state_dict().items()} == shapes
    count = sum(p.numel() for p in ours.parameters()) + 640 * 10 + 10  # + RobustBench's fc
    assert count == sum(p.numel() for p in theirs.parameters())
    assert round(count / 1e6, 1) == published


@pytest.mark.parametrize("name, widen_factor", [("wide_resnet28_10", 1), ("wide_resnet34_10", 2)])
def test_spec_is_inferred_from_robustbench_weights(robustbench, name, widen_factor):
    rb_model = robustbench.WideResNet(depth=DEPTHS[name], widen_factor=widen_factor)
    encoder = {k: v for k, v in rb_model.state_dict().items() if not k.startswith("fc.")}
    expected = BackboneSpec(name, widen_factor=widen_factor)
    assert infer_backbone_spec(encoder) == expected
    dual = convert_dual_bn(robustbench.WideResNet(depth=DEPTHS[name], widen_factor=widen_factor))
    assert infer_backbone_spec(dual.state_dict()) == expected  # a stage-2 encoder


def single_bn_state(dual_state, branch: str):
    """A dual-BN state dict as the single-BN network of `branch` names it: `x.bn1.<branch>.w`
    becomes `x.bn1.w`, the other branch's entries are dropped."""
    other = next(b for b in BRANCHES if b != branch)
    return {k.replace(f".{branch}.", "."): v for k, v in dual_state.items() if f".{other}." not in k}


@pytest.mark.parametrize("branch", BRANCHES)
def test_dual_bn_collapses_to_the_single_bn_wideresnet_of_that_branch(branch):
    torch.manual_seed(0)
    dual = convert_dual_bn(build_backbone(BackboneSpec("wide_resnet28_10", widen_factor=1)))
    for seed, b in enumerate(BRANCHES):
        with bn_branch(dual, b):
            randomise_batchnorms(dual, seed)
    reference = build_backbone(BackboneSpec("wide_resnet28_10", widen_factor=1))
    reference.load_state_dict(single_bn_state(dual.state_dict(), branch), strict=True)
    x = torch.rand(4, 3, 8, 8)
    expected = reference.eval()(x)
    with bn_branch(dual.eval(), branch):
        through_branch = dual(x)
    with bn_branch(dual, next(b for b in BRANCHES if b != branch)):
        assert not torch.allclose(dual(x), expected, atol=1e-3)  # the branches differ
    collapsed = collapse_dual_bn(copy.deepcopy(dual), branch)
    assert not has_dual_bn(collapsed)
    torch.testing.assert_close(through_branch, expected, atol=1e-6, rtol=0)
    torch.testing.assert_close(collapsed(x), expected, atol=1e-6, rtol=0)


@pytest.mark.parametrize("dataset", ["digits", "stl10"])  # STL-10: the ResNet stem default is ImageNet's
def test_a_config_builds_the_wideresnet_on_this_host(dataset):
    cfg = load_config(ROOT / "zoo_configs/fashionmnist/simclr.yaml",
                      [f"data.dataset={dataset}", *SMALL_BACKBONE])
    model = build_method(cfg)
    encoder = model.backbone if HOST.is_main else model.encoder
    reference = build_backbone(BackboneSpec("wide_resnet28_10", widen_factor=1)).state_dict()
    assert {k: v.shape for k, v in encoder.state_dict().items()} == {
        k: v.shape for k, v in reference.items()}
    assert model.classifier.in_features == 64
    assert backbone_meta(model) == {"name": "wide_resnet28_10", "cifar": True,
                                    "zero_init_residual": False, "widen_factor": 1}


@pytest.fixture(scope="module")
def wrn_runs(tmp_path_factory, digits_small_simclr_ckpt):
    """A WRN-28-1 on digits through the CLI: the suite's SimCLR run on it (`SMALL_BACKBONE`), then 1
    epoch of `ncp` and of `deacl` from it. Returns {run name: last.ckpt}."""
    out = tmp_path_factory.mktemp("wrn")
    runs = {"simclr": digits_small_simclr_ckpt}
    for method in ("ncp", "deacl"):
        assert train_stage2(out, runs["simclr"], "max_epochs=1", f"name={method}", *SMALL_BACKBONE,
                            method=method) == 0
        runs[method] = out / method / "last.ckpt"
    return runs


def test_stage1_checkpoint_is_a_robustbench_wideresnet(wrn_runs, robustbench):
    ckpt = read_checkpoint(wrn_runs["simclr"])
    assert ckpt["solo_ncp"]["backbone"] == {"name": "wide_resnet28_10", "cifar": True,
                                            "zero_init_residual": False, "widen_factor": 1}
    weights = encoder_state_dict(ckpt)
    rb_model = load_into_robustbench(robustbench, weights, 28, 1).eval()
    encoder = load_encoder(wrn_runs["simclr"])
    x = torch.rand(4, 3, 32, 32)
    mean, std = (torch.tensor(encoder.normalization[k]).view(1, 3, 1, 1) for k in ("mean", "std"))
    torch.testing.assert_close(encoder.model(x), robustbench_features(rb_model, (x - mean) / std),
                               atol=1e-5, rtol=0)


def dual_bn_names(single_bn_names):
    """The keys of a network whose BatchNorms (RobustBench's `bn1`, `bn2`) are clean/adv pairs."""
    out = set()
    for key in single_bn_names:
        module, param = key.rsplit(".", 1)
        is_bn = module.rsplit(".", 1)[-1] in ("bn1", "bn2")
        out |= {f"{module}.{b}.{param}" for b in BRANCHES} if is_bn else {key}
    return out


@pytest.mark.parametrize("method, dual_bn", [("ncp", True), ("deacl", False)])
def test_stage2_trains_a_wideresnet_student_from_the_wideresnet_teacher(wrn_runs, method, dual_bn):
    ckpt = read_checkpoint(wrn_runs[method])
    assert ckpt["solo_ncp"]["backbone"] == {"name": "wide_resnet28_10", "cifar": True,
                                            "zero_init_residual": False, "widen_factor": 1}
    assert ckpt["solo_ncp"]["dual_bn"] is dual_bn
    stage1 = encoder_state_dict(read_checkpoint(wrn_runs["simclr"]))
    state = ckpt["state_dict"]
    teacher = {k[len("teacher.backbone."):]: v for k, v in state.items()
               if k.startswith("teacher.backbone.")}
    assert teacher.keys() == stage1.keys()
    assert all(torch.equal(teacher[k], stage1[k]) for k in stage1)  # frozen
    student = {k[len(ENCODER_PREFIX):]: v for k, v in state.items() if k.startswith(ENCODER_PREFIX)}
    assert set(student) == (dual_bn_names(stage1) if dual_bn else set(stage1))
    convs = [k for k in stage1 if k.endswith("conv1.weight")]
    assert len(convs) == 1 + 12 and all(not torch.equal(student[k], stage1[k]) for k in convs)


def test_eval_reads_a_wideresnet_stage2_checkpoint(wrn_runs, tmp_path):
    assert main([*EVAL, "--ckpt", str(wrn_runs["ncp"]), "--out", str(tmp_path), "--bn", "both"]) == 0
    record = json.loads((tmp_path / "metrics.json").read_text())
    assert {b["bn"] for b in record["branches"]} == set(BRANCHES)
    assert all(b["metrics"]["sa_n"] == 20 for b in record["branches"])


def resnet18_checkpoint(path: Path) -> Path:
    """A stage-1 checkpoint of a CIFAR-stem ResNet-18, as `solo-ncp pretrain` writes one."""
    weights = build_backbone(BackboneSpec("resnet18")).state_dict()
    torch.save({"state_dict": {ENCODER_PREFIX + k: v for k, v in weights.items()},
                "solo_ncp": {"format": 1, "backbone": BackboneSpec("resnet18").to_dict(),
                             "normalization": {"mean": [0.3] * 3, "std": [0.4] * 3}}}, path)
    return path


BAD = {
    "WRN teacher, ResNet-18 stage 2": (
        lambda runs, tmp: (runs["simclr"], []),
        ["wide_resnet28_10 (widen_factor: 1)", "builds a resnet18 (cifar stem: True)"]),
    "ResNet-18 teacher, WRN stage 2": (
        lambda runs, tmp: (resnet18_checkpoint(tmp / "resnet18.ckpt"), SMALL_BACKBONE),
        ["holds a resnet18 (cifar stem: True)", "builds a wide_resnet28_10 (widen_factor: 1)"]),
    "WRN teacher of another width": (
        lambda runs, tmp: (runs["simclr"], ["backbone.name=wide_resnet28_10",
                                            "+backbone.kwargs.widen_factor=2"]),
        ["(widen_factor: 1)", "(widen_factor: 2)"]),
    "widen_factor on a ResNet": (
        lambda runs, tmp: (runs["simclr"], ["+backbone.kwargs.widen_factor=2"]),
        ["widen_factor is a WideResNet option and resnet18 has none"]),
    "zero_init_residual on a WRN": (
        lambda runs, tmp: (runs["simclr"], [*SMALL_BACKBONE, "+backbone.kwargs.zero_init_residual=true"]),
        ["zero_init_residual", "wide_resnet28_10"]),
}


@pytest.mark.parametrize("case", sorted(BAD))
def test_mismatched_backbone_is_one_error_line(wrn_runs, tmp_path, capsys, case):
    build, words = BAD[case]
    teacher, overrides = build(wrn_runs, tmp_path)
    capsys.readouterr()
    assert train_stage2(tmp_path, teacher, "max_epochs=1", "name=bad", *overrides) == 2
    out, err = capsys.readouterr()
    printed = (out + err).rstrip("\n").splitlines()
    assert printed[-1].startswith("error:") and "Traceback" not in out + err, printed[-5:]
    for word in words:
        assert word in printed[-1], (word, printed[-1])


def test_momentum_methods_get_a_wideresnet_momentum_encoder_on_main_and_are_refused_on_102():
    momentum_102 = ["+method_kwargs.base_tau_momentum=0.99", "+method_kwargs.final_tau_momentum=1.0",
                    "+method_kwargs.momentum_classifier=false"]
    cfg = load_config(ROOT / "zoo_configs/fashionmnist/simclr.yaml", [
        *DIGITS_SIMCLR, *SMALL_BACKBONE, "method=byol", "~method_kwargs.temperature",
        "+method_kwargs.pred_hidden_dim=16",
        *(["+momentum.base_tau=0.99"] if HOST.is_main else momentum_102)])
    if not HOST.is_main:
        with pytest.raises(ValueError, match="BYOL is a momentum method"):
            build_method(cfg)
        return
    model = build_method(cfg)
    reference = build_backbone(BackboneSpec("wide_resnet28_10", widen_factor=1)).state_dict()
    for encoder in (model.backbone, model.momentum_backbone):
        assert {k: v.shape for k, v in encoder.state_dict().items()} == {
            k: v.shape for k, v in reference.items()}
