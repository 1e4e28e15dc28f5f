"""Initial centroids for spherical k-means: AFK-MC² and k-means++ with the cosine cost.

The cost of a unit vector x given centres C is 1 - max_c cos(x, c). For unit vectors this is
|x - c|² / 2, so sampling proportional to it is exactly the D² sampling of k-means++ and of
AFK-MC² (Bachem et al. 2016, "Fast and Provably Good Seedings for k-Means") in the chordal
distance, and their guarantees carry over to the spherical k-means objective.
"""

from typing import List, Union

import numpy as np
import torch

from .validation import unit_rows

INIT_METHODS = ("afk-mc2", "k-means++")
DEFAULT_CHAIN_LENGTH = 200


def _cost_to(x: torch.Tensor, centre: torch.Tensor) -> torch.Tensor:
    """Cosine cost 1 - x·c of every row of x (N, D) to one unit centre (D,): (N,), >= 0."""
    return (1.0 - x @ centre).clamp_min_(0.0)


def _draw_unchosen(chosen: torch.Tensor, generator: torch.Generator) -> int:
    """One index drawn uniformly among the rows not chosen yet (all remaining costs are 0)."""
    weights = (~chosen).to(torch.float32)
    return int(torch.multinomial(weights, 1, generator=generator))


def kmeans_plus_plus(x: torch.Tensor, k: int, generator: torch.Generator) -> torch.Tensor:
    """k-means++ seeding: K distinct row indices (K,) int64 of x.

    x: (N, D) L2-normalised rows, K <= N. Each new centre is drawn with probability proportional
    to its cosine cost to the nearest chosen centre; the minimum cost is updated incrementally,
    so the total work is O(N·K·D).
    """
    n = x.shape[0]
    chosen = torch.zeros(n, dtype=torch.bool, device=x.device)
    indices: List[int] = [int(torch.randint(n, (1,), generator=generator, device=x.device))]
    chosen[indices[0]] = True
    cost = _cost_to(x, x[indices[0]])
    cost[indices[0]] = 0.0
    for _ in range(1, k):
        if float(cost.sum()) > 0.0:
            index = int(torch.multinomial(cost, 1, generator=generator))
        else:
            index = _draw_unchosen(chosen, generator)
        indices.append(index)
        chosen[index] = True
        torch.minimum(cost, _cost_to(x, x[index]), out=cost)
        cost[index] = 0.0
    return torch.tensor(indices, dtype=torch.int64, device=x.device)


def _metropolis_chain(weights: List[float], uniforms: List[float]) -> int:
    """Position of the final state of a Metropolis chain over candidates with these weights.

    The chain starts at candidate 0 and moves to candidate j with probability
    min(1, weights[j] / weights[current]).
    """
    current, current_weight = 0, weights[0]
    for j in range(1, len(weights)):
        if current_weight == 0.0 or weights[j] > uniforms[j] * current_weight:
            current, current_weight = j, weights[j]
    return current


def afk_mc2(
    x: torch.Tensor, k: int, generator: torch.Generator, chain_length: int = DEFAULT_CHAIN_LENGTH
) -> torch.Tensor:
    """AFK-MC² seeding: K distinct row indices (K,) int64 of x.

    x: (N, D) L2-normalised rows, K <= N. The first centre is uniform; the proposal is
    q(x) = cost(x, c1) / (2 Σ cost) + 1 / (2N). Each further centre is the end of a Metropolis
    chain of `chain_length` candidates drawn from q, with target weight cost(x, C) / q(x).
    Work: O(N·D) for q, then O(chain_length·K²·D) for the chains.
    """
    if chain_length < 1:
        raise ValueError(f"chain_length={chain_length} must be >= 1")
    n = x.shape[0]
    first = int(torch.randint(n, (1,), generator=generator, device=x.device))
    first_cost = _cost_to(x, x[first])
    total = first_cost.sum()
    proposal = (
        first_cost / (2.0 * total) + 0.5 / n
        if float(total) > 0.0
        else torch.full_like(first_cost, 1.0 / n)
    )
    candidates = torch.multinomial(
        proposal, (k - 1) * chain_length, replacement=True, generator=generator
    )
    candidates = candidates.view(k - 1, chain_length)
    uniforms = torch.rand(
        (k - 1, chain_length), generator=generator, device=x.device, dtype=x.dtype
    )

    chosen = torch.zeros(n, dtype=torch.bool, device=x.device)
    chosen[first] = True
    centres = torch.empty((k, x.shape[1]), dtype=x.dtype, device=x.device)
    centres[0] = x[first]
    indices = [first]
    for step in range(1, k):
        chain = candidates[step - 1]
        cost = (1.0 - (x[chain] @ centres[:step].T).amax(dim=1)).clamp_min_(0.0)
        cost[chosen[chain]] = 0.0
        weights = (cost / proposal[chain]).tolist()
        position = _metropolis_chain(weights, uniforms[step - 1].tolist())
        index = (
            int(chain[position]) if weights[position] > 0.0 else _draw_unchosen(chosen, generator)
        )
        indices.append(index)
        chosen[index] = True
        centres[step] = x[index]
    return torch.tensor(indices, dtype=torch.int64, device=x.device)


def check_init(
    init: Union[str, torch.Tensor, np.ndarray], x: torch.Tensor, k: int
) -> Union[str, torch.Tensor]:
    """A known seeding name as is, or given centroids (K, D) as unit rows on x's device and dtype."""
    if isinstance(init, str):
        if init not in INIT_METHODS:
            raise ValueError(
                f"init={init!r} is unknown: use one of {INIT_METHODS} or a (K, D) centroid tensor"
            )
        return init
    given = unit_rows(init, name="init centroids")
    if tuple(given.shape) != (k, x.shape[1]):
        raise ValueError(
            f"init centroids have shape {tuple(given.shape)}, but K={k} clusters in D={x.shape[1]} "
            f"dims need shape ({k}, {x.shape[1]}): pass one centroid per cluster"
        )
    return given.to(device=x.device, dtype=x.dtype)


def initial_centroids(
    x: torch.Tensor, k: int, init: Union[str, torch.Tensor, np.ndarray], generator: torch.Generator
) -> torch.Tensor:
    """Initial unit centroids (K, D) on x's device and dtype.

    x: (N, D) L2-normalised rows. init: "afk-mc2", "k-means++", or given centroids (K, D)
    (any non-zero norms; they are normalised here).
    """
    init = check_init(init, x, k)
    if not isinstance(init, str):
        return init
    seeding = afk_mc2 if init == "afk-mc2" else kmeans_plus_plus
    return x[seeding(x, k, generator)]
