"""CUDA paths, checked against the CPU: k-means (torch and libKMCUDA backends), one stage-2 step,
evaluation through `solo-ncp eval --device cuda`. Skipped where no GPU is visible (CI); run on a
GPU machine with `pytest tests/test_cuda.py` (benchmarks/gpu_check.sh does)."""
import copy
import json

import pytest
import torch
import torch.nn.functional as F
from sklearn.metrics import adjusted_rand_score

from solo_ncp.cluster import spherical_kmeans
from solo_ncp.cluster.kmcuda_backend import kmcuda_module
from solo_ncp.models.backbones import BackboneSpec, build_backbone
from solo_ncp.models.checkpoint import normalized_encoder
from solo_ncp.models.dual_bn import convert_dual_bn
from solo_ncp.ncp.step import Stage2Config, stage2_step
from tests.test_cluster import planted

pytestmark = pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA device")
CUDA = torch.device("cuda")


@pytest.mark.parametrize("backend", ["torch", "kmcuda"])
def test_kmeans_on_cuda_finds_the_cpu_clustering(backend):
    if backend == "kmcuda" and kmcuda_module() is None:
        pytest.skip("libKMCUDA is not installed (see solo_ncp/cluster/kmcuda_backend.py)")
    x, truth, _ = planted(n=4000, dim=64, k=8, noise=0.3)
    cpu = spherical_kmeans(x, 8, seed=0, backend="torch")
    gpu = spherical_kmeans(x.to(CUDA), 8, seed=0, backend=backend)
    assert gpu.backend == backend and gpu.centroids.is_cuda
    assert adjusted_rand_score(truth, gpu.labels.cpu()) > 0.99
    assert adjusted_rand_score(cpu.labels, gpu.labels.cpu()) > 0.99
    assert gpu.objective == pytest.approx(cpu.objective, abs=1e-4)


@pytest.mark.parametrize("perturbation", ["ncp", "deacl"])
def test_stage2_step_on_cuda_matches_the_cpu(perturbation):
    torch.manual_seed(0)
    backbone = build_backbone(BackboneSpec(cifar=True))
    teacher = normalized_encoder(copy.deepcopy(backbone), (0.5,) * 3, (0.25,) * 3)
    teacher.eval().requires_grad_(False)
    student = normalized_encoder(convert_dual_bn(backbone), (0.5,) * 3, (0.25,) * 3)
    x = torch.rand(16, 3, 32, 32)
    centroids = F.normalize(torch.randn(5, 512), dim=1)
    cfg = Stage2Config(perturbation=perturbation, steps=2)
    losses = {}
    for device in ("cpu", "cuda"):
        torch.manual_seed(1)  # same PGD random start
        out = stage2_step(copy.deepcopy(student).to(device), teacher.to(device), x.to(device), cfg,
                          centroids=centroids.to(device) if perturbation == "ncp" else None)
        assert out.x_adv.device.type == device
        assert (out.x_adv - x.to(device)).abs().max() <= cfg.eps + 1e-6
        losses[device] = {k: float(v) for k, v in out.losses.items()}
    for key, value in losses["cpu"].items():
        assert losses["cuda"][key] == pytest.approx(value, rel=0.05, abs=1e-3), key


def test_eval_on_cuda_writes_metrics(digits_ncp_ckpt, tmp_path):
    from solo_ncp.cli import main
    from tests.test_commands import recomputed_metrics

    out = tmp_path / "eval"
    assert main(["eval", "--ckpt", str(digits_ncp_ckpt), "--out", str(out), "--device", "cuda",
                 "--dataset", "digits", "--epochs", "2", "--test-n", "64", "--aa-n", "8",
                 "--cache-features"]) == 0
    metrics = json.loads((out / "metrics.json").read_text())["metrics"]
    recomputed = recomputed_metrics(out, digits_ncp_ckpt, device="cuda")
    one_image = 100.0 / metrics["sa_n"]  # a GPU kernel may break a tie the other way
    for key in ("sa", "ra"):
        assert metrics[key] == pytest.approx(recomputed[key], abs=one_image + 1e-9), key
    assert metrics["aa"] == pytest.approx(recomputed["aa"], abs=100.0 / metrics["aa_n"] + 1e-9)


@pytest.mark.parametrize("switch", ["channels_last", "bf16"])
def test_speed_switches_on_cuda_keep_the_step(switch):
    """channels_last with cudnn.benchmark (other kernels, same fp32 maths, TF32 convolutions as in
    the plain step) and bf16 autocast (its rounding) against the plain fp32 step on the GPU."""
    from solo_ncp.data import build_dataset
    from solo_ncp.ncp import speed
    from tests.test_step_switches import BF16_RTOL, one_step, pair

    digits = build_dataset("digits", "train")
    x = torch.stack([digits[i][0] for i in range(8)]).to(CUDA)
    plain = one_step(*(m.to(CUDA) for m in pair()), x)
    student, teacher = (m.to(CUDA) for m in pair())
    if switch == "channels_last":
        speed.use_channels_last(student, teacher)
        torch.backends.cudnn.benchmark = True
        try:
            out = one_step(student, teacher, speed.channels_last(x))
        finally:
            torch.backends.cudnn.benchmark = False
    else:
        out = one_step(student, teacher, x, bf16=True)
    assert out.x_adv.dtype == torch.float32
    assert (out.x_adv - x).abs().max() <= 8 / 255 + 1e-6
    for name, value in plain.losses.items():
        torch.testing.assert_close(out.losses[name].float(), value, rtol=BF16_RTOL, atol=1e-4)
