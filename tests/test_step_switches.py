"""The stage-2 speed switches (issue 16): channels_last, compiled encoder forwards, bf16 autocast
and cudnn.benchmark leave one step's results unchanged (bf16: up to its rounding), reach the model
through `solo-ncp train`, keep the checkpoint's state-dict keys, and bad values are one error."""
import copy

import pytest
import torch
import torch.nn.functional as F

from solo_ncp.data import build_dataset
from solo_ncp.methods import stage2_hooks
from solo_ncp.models.backbones import BackboneSpec, build_backbone
from solo_ncp.models.checkpoint import normalized_encoder
from solo_ncp.models.dual_bn import convert_dual_bn
from solo_ncp.ncp import speed
from solo_ncp.ncp.step import Stage2Config, stage2_step
from tests.conftest import train_stage2

CFG = Stage2Config(steps=2)
BF16_RTOL = 2e-2
"""bf16 keeps 8 significant bits: one rounding is up to 2^-9 = 0.2% relative, and the loss passes
through a few dozen rounded layers whose errors partly cancel; 2% is about 5 bf16 ulps."""


def pair():
    """(student: Normalize + dual-BN CIFAR ResNet-18, teacher: the same weights, frozen), seeded."""
    torch.manual_seed(0)
    backbone = build_backbone(BackboneSpec(cifar=True))
    teacher = normalized_encoder(copy.deepcopy(backbone), (0.5,) * 3, (0.3,) * 3).eval()
    teacher.requires_grad_(False)
    return normalized_encoder(convert_dual_bn(backbone), (0.5,) * 3, (0.3,) * 3), teacher


@pytest.fixture(scope="module")
def images():
    """(8, 3, 8, 8) digits in [0, 1]."""
    dataset = build_dataset("digits", "train")
    return torch.stack([dataset[i][0] for i in range(8)])


def one_step(student, teacher, x, bf16=False):
    """The step on x's device, its PGD start and centroids seeded."""
    centroids = F.normalize(torch.randn(10, 512, generator=torch.Generator().manual_seed(1)), dim=1)
    centroids = centroids.to(x.device)
    torch.manual_seed(3)  # the PGD's random start
    with torch.autocast(x.device.type, dtype=torch.bfloat16, enabled=bf16):
        return stage2_step(student, teacher, x, CFG, centroids=centroids)


@pytest.fixture(scope="module")
def plain(images):
    return one_step(*pair(), images)


def assert_same_step(out, plain):
    for name, value in plain.losses.items():
        torch.testing.assert_close(out.losses[name], value, rtol=1e-5, atol=1e-7)
    torch.testing.assert_close(out.x_adv, plain.x_adv, rtol=1e-5, atol=1e-7)


def test_channels_last_changes_no_result(images, plain):
    student, teacher = pair()
    speed.use_channels_last(student, teacher)
    x = speed.channels_last(images)
    assert x.is_contiguous(memory_format=torch.channels_last)
    assert student.backbone.conv1.weight.is_contiguous(memory_format=torch.channels_last)
    assert_same_step(one_step(student, teacher, x), plain)


def test_compile_changes_no_result_nor_state_dict_keys(images, plain):
    """torch.compile on CPU (inductor + a C compiler) takes about 45 s here for this step."""
    student, teacher = pair()
    keys = list(student.state_dict())
    speed.compile_forward(student, teacher)
    assert list(student.state_dict()) == keys
    assert_same_step(one_step(student, teacher, images), plain)


def test_bf16_autocast_rounds_the_loss_and_keeps_the_attack_in_fp32(images, plain):
    out = one_step(*pair(), images, bf16=True)
    assert out.losses["loss"].dtype == torch.bfloat16  # autocast ran the forwards
    for name, value in plain.losses.items():
        assert out.losses[name].float() != value
        torch.testing.assert_close(out.losses[name].float(), value, rtol=BF16_RTOL, atol=0)
    assert out.x_adv.dtype == torch.float32
    assert (out.x_adv - images).abs().max() <= CFG.eps + 1e-7
    assert 0 <= out.x_adv.min() and out.x_adv.max() <= 1


SWITCHES = ("+method_kwargs.channels_last=true", "+method_kwargs.compile=true",
            "+method_kwargs.cudnn_benchmark=true", "precision=bf16-mixed")


def test_switches_reach_the_step_and_keep_checkpoint_keys(tmp_path, digits_ncp_ckpt,
                                                          digits_simclr_ckpt, monkeypatch):
    """One step with every switch on (torch.compile recorded, not run: see the test above) versus
    `digits_ncp_ckpt`, the same run without them (bf16 on a CPU without bf16 units is slow: one
    step shows what reaches the step as well as an epoch would)."""
    compiled, seen = [], []
    monkeypatch.setattr(torch, "compile", lambda fn: compiled.append(fn.__self__) or fn)

    def recording_step(student, teacher, x, cfg, **kwargs):
        seen.append({"autocast": torch.is_autocast_enabled("cpu"),
                     "dtype": torch.get_autocast_dtype("cpu"),
                     "x_channels_last": x.is_contiguous(memory_format=torch.channels_last),
                     "conv_channels_last": next(
                         p for p in student.parameters() if p.dim() == 4
                     ).is_contiguous(memory_format=torch.channels_last),
                     "cudnn_benchmark": torch.backends.cudnn.benchmark})
        return stage2_step(student, teacher, x, cfg, **kwargs)

    monkeypatch.setattr(stage2_hooks, "stage2_step", recording_step)
    monkeypatch.setattr(torch.backends.cudnn, "benchmark", False)
    assert train_stage2(tmp_path, digits_simclr_ckpt, "max_epochs=1", "limit_train_batches=1", "name=fast",
                        *SWITCHES) == 0
    assert len(compiled) == 2  # the student's encoder and the teacher
    assert seen and all(s == {"autocast": True, "dtype": torch.bfloat16, "x_channels_last": True,
                              "conv_channels_last": True, "cudnn_benchmark": True} for s in seen)
    keys = lambda path: list(torch.load(path, weights_only=False)["state_dict"])
    assert keys(tmp_path / "fast" / "last.ckpt") == keys(digits_ncp_ckpt)


@pytest.mark.parametrize("switch", ["channels_last", "compile", "cudnn_benchmark"])
def test_a_switch_that_is_not_a_boolean_is_one_error_line(switch, tmp_path, digits_simclr_ckpt,
                                                         capsys):
    # one step, so a switch that wrongly takes the value trains briefly (the mutation check's case)
    code = train_stage2(tmp_path, digits_simclr_ckpt, f"+method_kwargs.{switch}=maybe", "max_epochs=1",
                        "limit_train_batches=1")
    printed = "".join(capsys.readouterr()).rstrip("\n").splitlines()
    assert code == 2
    assert printed[-1].startswith("error:") and f"method_kwargs.{switch}='maybe'" in printed[-1]
    assert "true or false" in printed[-1]
