"""Optional libKMCUDA backend (src-d/kmcuda) for spherical k-means on CUDA tensors.

Building libKMCUDA
------------------
libKMCUDA 6.2.3, the newest release on PyPI, installs from its sdist: `pip install libKMCUDA`
runs CMake and nvcc (CUDA toolkit, C++ compiler with OpenMP) and reads two environment variables:

    CUDA_TOOLKIT_ROOT_DIR=/usr/local/cuda CUDA_ARCH=90 pip install libKMCUDA

CUDA_TOOLKIT_ROOT_DIR is required (the build stops without it). CUDA_ARCH defaults to 61
(Pascal) and must match the GPU's compute capability exactly, otherwise kmcuda skips the
device and reports "compute capability mismatch": 90 for H100, 80 for A100, 86 for RTX 30xx.

How it is called
----------------
`kmeans_cuda(samples, clusters, tolerance=..., init="afk-mc2", yinyang_t=0, metric="cos",
seed=..., device=<bitmask>, verbosity=0)` returns `(centroids, assignments)` numpy arrays.
With metric "cos" kmcuda uses the angular distance arccos(a·b) and expects L2-normalised
samples (it checks a few rows and fails otherwise); it does not normalise them itself.
yinyang_t=0 selects plain Lloyd iterations (Yinyang needs much more GPU memory). Its
`tolerance` is the fraction of samples that change cluster below which it stops, not a
relative objective change, and it has no iteration cap. Clusters it leaves empty come back
as NaN centroids, so only its labels are used: `spherical_kmeans` rebuilds the centroids
from them and finishes with its own Lloyd iterations.
"""

import importlib
from types import ModuleType
from typing import Optional, Union

import numpy as np
import torch

BACKENDS = ("auto", "torch", "kmcuda")
INSTALL_HINT = (
    "install libKMCUDA built for your GPU, e.g. for H100: "
    "CUDA_ARCH=90 CUDA_TOOLKIT_ROOT_DIR=/usr/local/cuda pip install libKMCUDA"
)


def kmcuda_module() -> Optional[ModuleType]:
    """The imported libKMCUDA module, or None when it is not installed or cannot load."""
    try:
        return importlib.import_module("libKMCUDA")
    except ImportError:
        return None


def check_kmcuda_runs(option: str, device_problem: Optional[str], fallback: str) -> None:
    """ValueError, before any work, where the kmcuda backend chosen by `option` cannot cluster:
    `device_problem` (why the run's tensors will not be on a CUDA GPU, and the fix; None where they
    will), or libKMCUDA not importing; each line ends with `fallback` (the torch backend)."""
    if device_problem is not None:
        raise ValueError(f"{option} clusters on a CUDA GPU, {device_problem}, or {fallback}")
    if kmcuda_module() is None:
        raise ValueError(f"{option} needs libKMCUDA, which does not import here: {INSTALL_HINT}; or pass {fallback}")


def resolve_backend(x: torch.Tensor, backend: str) -> str:
    """Which implementation clusters x: "torch" or "kmcuda".

    "auto" picks kmcuda when x is on a CUDA device and libKMCUDA imports, torch otherwise;
    "kmcuda" raises a ValueError saying what is missing when it cannot run.
    """
    if backend not in BACKENDS:
        raise ValueError(f"backend={backend!r} is unknown: use one of {BACKENDS}")
    if backend == "torch":
        return "torch"
    missing = []
    if not x.is_cuda:
        missing.append(f"features are on {x.device}, not on a CUDA device")
    if kmcuda_module() is None:
        missing.append("libKMCUDA is not importable")
    if not missing:
        return "kmcuda"
    if backend == "auto":
        return "torch"
    raise ValueError(
        f"backend='kmcuda' cannot run: {'; '.join(missing)}. Move the features to the GPU and "
        f"{INSTALL_HINT}, or use backend='torch'"
    )


def kmcuda_labels(
    x: torch.Tensor, k: int, *, init: Union[str, torch.Tensor], tol: float, seed: int
) -> torch.Tensor:
    """Cluster labels (N,) int64 on x's device from libKMCUDA's spherical (metric "cos") k-means.

    x: (N, D) L2-normalised rows on a CUDA device. init: "afk-mc2", "k-means++" or unit
    centroids (K, D). The samples go to kmcuda as a host float32 array; it copies them to the
    GPU selected by x's device index.
    """
    samples = x.detach().to(device="cpu", dtype=torch.float32).contiguous().numpy()
    if not isinstance(init, str):
        init = init.detach().to(device="cpu", dtype=torch.float32).contiguous().numpy()
    _, assignments = kmcuda_module().kmeans_cuda(
        samples,
        k,
        tolerance=min(float(tol), 1.0),
        init=init,
        yinyang_t=0.0,
        metric="cos",
        seed=seed,
        device=1 << (x.device.index or 0),
        verbosity=0,
    )
    return torch.from_numpy(np.asarray(assignments).astype(np.int64)).to(x.device)
