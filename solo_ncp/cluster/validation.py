"""Input checks shared by the clustering functions: one clear ValueError per kind of bad input."""

from typing import Tuple, Union

import numpy as np
import torch

ArrayLike = Union[torch.Tensor, np.ndarray]


def as_tensor(values: ArrayLike, name: str) -> torch.Tensor:
    """Return `values` as a torch tensor (numpy arrays are wrapped without a copy)."""
    if isinstance(values, np.ndarray):
        return torch.from_numpy(values)
    if isinstance(values, torch.Tensor):
        return values
    raise TypeError(f"{name} must be a torch.Tensor or numpy array, got {type(values).__name__}")


def _checked_with_norms(features: ArrayLike, name: str) -> Tuple[torch.Tensor, torch.Tensor]:
    """Validated (N, D) float tensor and its (N,) row L2 norms (see `check_features`)."""
    x = as_tensor(features, name)
    if x.dim() != 2:
        raise ValueError(
            f"{name} must be 2-D (N rows, D dims), got shape {tuple(x.shape)}: flatten each row"
        )
    if x.shape[0] == 0 or x.shape[1] == 0:
        raise ValueError(
            f"{name} of shape {tuple(x.shape)} are empty: pass at least one row and dim"
        )
    if x.dtype != torch.float64:
        x = x.float()
    norms = torch.linalg.vector_norm(x, dim=1)
    finite = torch.isfinite(norms)
    if not bool(finite.all()):
        row = int((~finite).nonzero()[0])
        raise ValueError(
            f"{name} row {row} contains NaN or inf (or values whose norm overflows {x.dtype}): "
            "drop, repair or rescale that row"
        )
    if not bool((norms > 0).all()):
        row = int((norms == 0).nonzero()[0])
        raise ValueError(
            f"{name} row {row} has zero L2 norm, so its cosine is undefined: drop all-zero rows"
        )
    return x, norms


def check_features(features: ArrayLike, name: str = "features") -> torch.Tensor:
    """Validate an (N, D) matrix of vectors for cosine geometry; return it as a float tensor.

    float16/bfloat16/integer inputs become float32, float64 stays float64, the device is kept.
    Rows are not normalised: callers normalise in the precision they need.
    """
    return _checked_with_norms(features, name)[0]


def unit_rows(features: ArrayLike, name: str = "features") -> torch.Tensor:
    """Validate an (N, D) matrix like `check_features` and return its L2-normalised rows."""
    x, norms = _checked_with_norms(features, name)
    return x / norms[:, None]


def check_num_clusters(k: int, n: int) -> int:
    """Validate the number of clusters K against the number of samples N."""
    if isinstance(k, bool) or not isinstance(k, (int, np.integer)):
        raise ValueError(f"K must be an integer, got {k!r}")
    if k < 2:
        raise ValueError(f"K={k} is too small: choose K >= 2")
    if k > n:
        raise ValueError(f"K={k} is larger than the number of samples N={n}: choose K <= N")
    return int(k)


def check_labels(labels: ArrayLike, n: int, device: torch.device) -> torch.Tensor:
    """Validate (N,) integer cluster labels for N samples; return them as int64 on `device`."""
    y = as_tensor(labels, "labels")
    if y.dim() != 1:
        raise ValueError(
            f"labels must be 1-D (N,), got shape {tuple(y.shape)}: pass one label per sample"
        )
    if y.dtype.is_floating_point or y.dtype.is_complex or y.dtype == torch.bool:
        raise ValueError(f"labels must be integers, got dtype {y.dtype}: cast them to int64")
    if y.shape[0] != n:
        raise ValueError(
            f"labels has {y.shape[0]} entries but features has N={n} rows: pass one label per sample"
        )
    return y.to(device=device, dtype=torch.int64)
