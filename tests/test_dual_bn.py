import pytest
import timm
import torch
from torch import nn

from solo_ncp.models import BackboneSpec, build_backbone
from solo_ncp.models.dual_bn import (
    DualBatchNorm2d,
    bn_branch,
    collapse_dual_bn,
    convert_dual_bn,
    has_dual_bn,
    set_bn_branch,
)


def tiny_cnn():
    return nn.Sequential(nn.Conv2d(3, 4, 3), nn.BatchNorm2d(4), nn.ReLU(),
                         nn.Conv2d(4, 4, 3), nn.BatchNorm2d(4), nn.AdaptiveAvgPool2d(1), nn.Flatten())


BACKBONES = {
    "solo-resnet18-cifar": lambda: build_backbone(BackboneSpec("resnet18", cifar=True)),
    "timm-resnet10t": lambda: timm.create_model("resnet10t", num_classes=0),
    "tiny-cnn": tiny_cnn,
}


@pytest.mark.parametrize("name", sorted(BACKBONES))
def test_every_batchnorm_becomes_a_pair_and_every_parameter_learns(name):
    torch.manual_seed(0)
    model = BACKBONES[name]()
    n_bn = sum(isinstance(m, nn.BatchNorm2d) for m in model.modules())
    convert_dual_bn(model)
    duals = [m for m in model.modules() if isinstance(m, DualBatchNorm2d)]
    assert len(duals) == n_bn > 0 and has_dual_bn(model)
    x = torch.rand(4, 3, 16, 16)
    with bn_branch(model, "clean"):
        clean = model(x)
    with bn_branch(model, "adv"):
        adv = model(x + 0.1)
    (clean.sum() + adv.sum()).backward()
    assert torch.isfinite(clean).all() and torch.isfinite(adv).all()
    missing = [n for n, p in model.named_parameters() if p.grad is None]
    assert not missing, missing


def test_branches_keep_separate_running_statistics():
    model = convert_dual_bn(tiny_cnn()).train()
    before = {k: v.clone() for k, v in model.state_dict().items()}
    with bn_branch(model, "adv"):
        model(torch.rand(8, 3, 8, 8) * 5)
    after = model.state_dict()
    assert not torch.equal(before["1.adv.running_mean"], after["1.adv.running_mean"])
    assert torch.equal(before["1.clean.running_mean"], after["1.clean.running_mean"])
    assert after["1.adv.num_batches_tracked"] == 1 and after["1.clean.num_batches_tracked"] == 0


def test_branch_context_restores_and_rejects_unknown_branch():
    model = convert_dual_bn(tiny_cnn())
    set_bn_branch(model, "adv")
    with bn_branch(model, "clean"):
        assert {m.branch for m in model.modules() if isinstance(m, DualBatchNorm2d)} == {"clean"}
    assert {m.branch for m in model.modules() if isinstance(m, DualBatchNorm2d)} == {"adv"}
    with pytest.raises(ValueError, match="unknown BN branch"):
        set_bn_branch(model, "pgd")


@pytest.mark.parametrize("branch", ["clean", "adv"])
def test_collapse_keeps_the_chosen_branch(branch):
    torch.manual_seed(0)
    model = convert_dual_bn(tiny_cnn()).train()
    for b in ("clean", "adv"):
        with bn_branch(model, b):
            model(torch.rand(8, 3, 8, 8) * (1 if b == "clean" else 4))
    model.eval()
    x = torch.rand(2, 3, 8, 8)
    with bn_branch(model, branch):
        expected = model(x)
    plain = collapse_dual_bn(model, branch)
    assert not has_dual_bn(plain)
    torch.testing.assert_close(plain(x), expected)
