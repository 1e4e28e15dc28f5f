"""Stage-2 step against independent oracles: a transcription of DeACL's public training step,
Eq. 3 recomputed with the test's own forwards, BatchNorm running statistics predicted from each
branch's own input, literal cosines, and the memory bank's rows against the step's features."""
import copy
import sys

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from solo_ncp.models.dual_bn import DualBatchNorm2d, bn_branch, convert_dual_bn
from solo_ncp.models.inference import eval_mode
from solo_ncp.models.normalize import Normalize
from solo_ncp.ncp import Stage2Config, ncp_acl_loss, stage2_step
from tests.test_dual_bn import tiny_cnn

MEAN, STD = [0.5] * 3, [0.25] * 3
EPS, ALPHA = 8 / 255, 2 / 255


def interior_images(n: int = 8, seed: int = 0) -> torch.Tensor:
    """(n, 3, 8, 8) in [0.2, 0.8]: the eps-ball never touches 0 or 1, so where the random start
    is clamped (ours) or not (DeACL's) makes no difference."""
    return 0.2 + 0.6 * torch.rand(n, 3, 8, 8, generator=torch.Generator().manual_seed(seed))


def single_bn_pair(seed: int = 0):
    """(student, teacher): Normalize + tiny CNN with two plain BatchNorm2d layers each."""
    torch.manual_seed(seed)
    student = nn.Sequential(Normalize(MEAN, STD), tiny_cnn()).train()
    teacher = nn.Sequential(Normalize(MEAN, STD), tiny_cnn()).eval().requires_grad_(False)
    return student, teacher


@pytest.fixture
def fixed_start(monkeypatch):
    """PGD's random start replaced by a known noise tensor (returned), so an oracle can use it."""
    noise = {}

    def start(x, eps, norm, generator):
        assert norm == "Linf"
        noise["delta"] = (2 * torch.rand(x.shape, generator=torch.Generator().manual_seed(7)) - 1) * eps
        return noise["delta"]

    monkeypatch.setattr(sys.modules["solo_ncp.attacks.pgd"], "_random_start", start)
    return noise


def deacl_training_step(student, teacher, image_weak, start, *, eps, step_size, num_steps, trades_k):
    """DeACL's stage-2 loss, transcribed from pantheon5100/DeACL@3fb81e3
    `solo/methods/mocov2_distillation_AT.py`: `training_step` lines 222-235 (teacher target
    `away_target`, one train-mode forward of `cat([image_weak, image_AE])`, loss
    -cos(clean, target).mean() - trades_k * cos(AE, clean).mean()) and `generate_training_AE`
    lines 287-324 (start image + uniform noise, backbone.eval(), `num_steps` sign-ascent steps on
    -cos(f(x_cl), target).sum(), projection by min/max to the eps-ball, clamp to [0, 1],
    backbone.train()). The projector is nn.Identity there and is left out; `start` is the noise
    DeACL draws with `uniform_(-eps, eps)`. Returns the loss (scalar, with graph)."""
    away_target = teacher(image_weak)
    x_cl = image_weak.clone().detach() + start
    student.eval()
    for _ in range(num_steps):
        x_cl.requires_grad_()
        with torch.enable_grad():
            loss = -F.cosine_similarity(student(x_cl), away_target, dim=1).sum()
        grad = torch.autograd.grad(loss, x_cl)[0]
        x_cl = x_cl.detach() + step_size * torch.sign(grad.detach())
        x_cl = torch.min(torch.max(x_cl, image_weak - eps), image_weak + eps)
        x_cl = torch.clamp(x_cl, 0, 1)
    student.train()
    logits_all = student(torch.cat([image_weak, x_cl]))
    bs = image_weak.size(0)
    clean, adversarial = logits_all[:bs], logits_all[bs:]
    adv_loss = -F.cosine_similarity(clean, away_target).mean()
    return adv_loss - trades_k * F.cosine_similarity(adversarial, clean).mean()


def test_single_bn_deacl_step_equals_a_transcription_of_deacls_training_step(fixed_start):
    student, teacher = single_bn_pair()
    reference = copy.deepcopy(student)
    x = interior_images()
    cfg = Stage2Config(perturbation="deacl", lam=2.0, dual_bn=False, eps=EPS, alpha=ALPHA, steps=5)
    out = stage2_step(student, teacher, x, cfg)
    out.losses["loss"].backward()
    expected = deacl_training_step(reference, teacher, x, fixed_start["delta"], eps=EPS,
                                   step_size=ALPHA, num_steps=5, trades_k=2.0)
    expected.backward()
    torch.testing.assert_close(out.losses["loss"], expected, rtol=0, atol=1e-6)
    for (name, ours), theirs in zip(student.named_parameters(), reference.parameters()):
        torch.testing.assert_close(ours.grad, theirs.grad, rtol=1e-5, atol=1e-6, msg=name)
    for (name, ours), theirs in zip(student.named_buffers(), reference.buffers()):
        torch.testing.assert_close(ours, theirs, rtol=1e-5, atol=1e-7, msg=name)


def test_eq3_on_literal_vectors():
    """f2(x) = (1, 0), f1(x) = (0, 1), f2(x_adv) = (1, 1): CosSim(f2(x), f1(x)) = -cos 90° = 0 and
    CosSim(f2(x_adv), f2(x)) = -cos 45° = -1/sqrt(2)."""
    clean = torch.tensor([[1.0, 0.0], [2.0, 0.0]])
    teacher = torch.tensor([[0.0, 1.0], [-3.0, 0.0]])  # second row: opposite, -cos = +1
    adv = torch.tensor([[1.0, 1.0], [5.0, 0.0]])        # second row: same direction, -cos = -1
    losses = ncp_acl_loss(clean, teacher, adv, lam=6.0)
    distill, robust = (0.0 + 1.0) / 2, (-(0.5 ** 0.5) - 1.0) / 2
    assert losses["distill"].item() == pytest.approx(distill)
    assert losses["robust"].item() == pytest.approx(robust)
    assert losses["loss"].item() == pytest.approx(distill + 6.0 * robust)


def dual_bn_pair(seed: int = 0):
    """(student, teacher) with the student's adversarial BN branch made different from its clean
    one (other affine and running statistics), so a swapped branch changes every number."""
    student, teacher = single_bn_pair(seed)
    convert_dual_bn(student)
    student(torch.rand(16, 3, 8, 8))  # clean running statistics move away from (0, 1)
    with torch.no_grad():
        for m in student.modules():
            if isinstance(m, DualBatchNorm2d):
                m.adv.weight.mul_(3.0)
                m.adv.bias.add_(0.5)
    return student, teacher


def eq3_oracle(student, teacher, x, x_adv, lam):
    """Eq. 3 recomputed with the test's own forwards: f2(x) through the clean BN and f2(x_adv)
    through the adversarial BN, both in the student's mode (train); f1(x) from the frozen teacher.
    Returns {"distill", "robust", "loss"} (scalars, with graph)."""
    with bn_branch(student, "clean"):
        clean = student(x)
    with bn_branch(student, "adv"):
        adv = student(x_adv)
    target = teacher(x)
    distill = -F.cosine_similarity(clean, target, dim=1).mean()
    robust = -F.cosine_similarity(adv, clean, dim=1).mean()
    return {"distill": distill, "robust": robust, "loss": distill + lam * robust}


@pytest.mark.parametrize("perturbation", ["ncp", "deacl"])
def test_dual_bn_step_loss_and_gradients_equal_eq3_recomputed(perturbation):
    student, teacher = dual_bn_pair()
    reference = copy.deepcopy(student)
    x = interior_images()
    centroids = F.normalize(torch.randn(3, 4, generator=torch.Generator().manual_seed(1)), dim=1)
    cfg = Stage2Config(perturbation=perturbation, lam=6.0, steps=2)
    out = stage2_step(student, teacher, x, cfg, centroids=centroids)
    out.losses["loss"].backward()
    expected = eq3_oracle(reference, teacher, x, out.x_adv, 6.0)["loss"]
    expected.backward()
    torch.testing.assert_close(out.losses["loss"], expected, rtol=0, atol=1e-6)
    for (name, ours), theirs in zip(student.named_parameters(), reference.parameters()):
        torch.testing.assert_close(ours.grad, theirs.grad, rtol=1e-5, atol=1e-6, msg=name)
    assert all(p.grad is None for p in teacher.parameters())


def bn_first_student(dual: bool):
    """Normalize + [BatchNorm2d(3) -> flatten -> linear]: the BN sees the normalised pixels, so
    its running statistics after a step can be predicted from the inputs alone."""
    torch.manual_seed(0)
    backbone = nn.Sequential(nn.BatchNorm2d(3), nn.Flatten(), nn.Linear(3 * 8 * 8, 4))
    backbone = convert_dual_bn(backbone) if dual else backbone
    return nn.Sequential(Normalize(MEAN, STD), backbone).train()


def predicted_running_stats(inputs: torch.Tensor, momentum: float = 0.1):
    """BatchNorm2d's running mean and (unbiased) variance after one train-mode batch `inputs`
    (already normalised), starting from mean 0 and variance 1."""
    per_channel = inputs.transpose(0, 1).flatten(1)
    return momentum * per_channel.mean(1), (1 - momentum) + momentum * per_channel.var(1)


def pixels(x):
    return (x - torch.tensor(MEAN).view(1, 3, 1, 1)) / torch.tensor(STD).view(1, 3, 1, 1)


@pytest.mark.parametrize("perturbation", ["ncp", "deacl"])
def test_each_bn_branch_moves_by_its_own_input_only(perturbation):
    student = bn_first_student(dual=True)
    teacher = nn.Sequential(Normalize(MEAN, STD), nn.Flatten(), nn.Linear(3 * 8 * 8, 4)).eval()
    x = interior_images()
    centroids = F.normalize(torch.randn(3, 4, generator=torch.Generator().manual_seed(1)), dim=1)
    out = stage2_step(student, teacher, x, Stage2Config(perturbation=perturbation, steps=2),
                      centroids=centroids)
    bn = student[1][0]
    for branch, inputs in (("clean", x), ("adv", out.x_adv)):
        mean, var = predicted_running_stats(pixels(inputs))
        torch.testing.assert_close(getattr(bn, branch).running_mean, mean, msg=branch)
        torch.testing.assert_close(getattr(bn, branch).running_var, var, msg=branch)
        assert getattr(bn, branch).num_batches_tracked.item() == 1


def test_single_bn_moves_by_the_joint_clean_and_adversarial_batch():
    student = bn_first_student(dual=False)
    teacher = nn.Sequential(Normalize(MEAN, STD), nn.Flatten(), nn.Linear(3 * 8 * 8, 4)).eval()
    x = interior_images()
    out = stage2_step(student, teacher, x, Stage2Config(perturbation="deacl", dual_bn=False, steps=2))
    mean, var = predicted_running_stats(pixels(torch.cat([x, out.x_adv])))
    bn = student[1][0]
    torch.testing.assert_close(bn.running_mean, mean)
    torch.testing.assert_close(bn.running_var, var)
    assert bn.num_batches_tracked.item() == 1


@pytest.mark.parametrize("cluster_bn", ["clean", "adv"])
def test_centroid_choice_and_logged_cosines_live_in_the_cluster_bn_space(cluster_bn):
    student, teacher = dual_bn_pair()
    x = interior_images()
    centroids = F.normalize(torch.randn(3, 4, generator=torch.Generator().manual_seed(1)), dim=1)
    cfg = Stage2Config(steps=3, cluster_bn=cluster_bn)
    probe = copy.deepcopy(student)
    out = stage2_step(student, teacher, x, cfg, centroids=centroids)
    with torch.no_grad(), eval_mode(probe), bn_branch(probe, cluster_bn):
        clean = F.normalize(probe(x), dim=1)
    torch.testing.assert_close(F.normalize(out.eval_features, dim=1), clean)
    ranked = (clean @ centroids.T).argsort(dim=1, descending=True)
    own, nbr = centroids[ranked[:, 0]], centroids[ranked[:, 1]]
    with torch.no_grad(), eval_mode(student), bn_branch(student, cluster_bn):
        adv = F.normalize(student(out.x_adv), dim=1)
    # f2(x) is measured before the step's train-mode forwards move the BN statistics (probe),
    # f2(x_adv) after them (the student as the step left it)
    expected = {"clean_own": (clean * own).sum(1).mean(), "clean_nbr": (clean * nbr).sum(1).mean(),
                "adv_own": (adv * own).sum(1).mean(), "adv_nbr": (adv * nbr).sum(1).mean()}
    for key, value in expected.items():
        torch.testing.assert_close(out.centroid_cos[key], value, msg=key)
    changed = ((adv @ centroids.T).argmax(1) != ranked[:, 0]).float().mean()
    torch.testing.assert_close(out.centroid_changed, changed)


def test_cluster_bn_adv_needs_dual_bn():
    with pytest.raises(ValueError, match="cluster_bn='adv' needs dual_bn: true"):
        Stage2Config(cluster_bn="adv", dual_bn=False)
    with pytest.raises(ValueError, match="cluster_bn='mixed'"):
        Stage2Config(cluster_bn="mixed")
