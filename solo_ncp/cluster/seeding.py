"""Initial centroids for spherical k-means: greedy k-means++ and greedy AFK-MC², cosine cost.

The cost of a unit vector x given centres C is 1 - max_c cos(x, c). For unit vectors this is
|x - c|² / 2, so sampling proportional to it is exactly the D² sampling of k-means++ and of
AFK-MC² (Bachem et al. 2016, "Fast and Provably Good Seedings for k-Means") in the chordal
distance, and their guarantees carry over to the spherical k-means objective.

Both seedings are greedy as scikit-learn's k-means++ is: each centre is the best of
`n_local_trials` D² draws, the one that leaves the smallest total cost. One trial is the original
(non-greedy) algorithm; the default 2 + int(ln K) is scikit-learn's. A longer AFK-MC² chain only
brings its draws closer to D² sampling, so it cannot replace the local trials.
"""

import math
from typing import List, Optional, Union

import numpy as np
import torch

from .validation import unit_rows

INIT_METHODS = ("afk-mc2", "k-means++")
DEFAULT_CHAIN_LENGTH = 200


def local_trials(n_local_trials: Optional[int], k: int) -> int:
    """D² draws per centre: n_local_trials, or scikit-learn's 2 + int(ln K) for None."""
    if n_local_trials is None:
        return 2 + int(math.log(k))
    if isinstance(n_local_trials, bool) or not isinstance(n_local_trials, (int, np.integer)):
        raise ValueError(f"n_local_trials must be an integer or None, got {n_local_trials!r}")
    if n_local_trials < 1:
        raise ValueError(
            f"n_local_trials={n_local_trials} must be >= 1: use 1 for the original, non-greedy "
            "seeding or None for 2 + int(ln K)"
        )
    return int(n_local_trials)


def _cost_to(x: torch.Tensor, centres: torch.Tensor) -> torch.Tensor:
    """Cosine cost 1 - x·c of every row of x (N, D) to unit centres (L, D): (L, N), >= 0.

    One centre (D,) gives (N,).
    """
    return (1.0 - centres @ x.T).clamp_min_(0.0)


def _draw_unchosen(chosen: torch.Tensor, generator: torch.Generator) -> int:
    """One index drawn uniformly among the rows not chosen yet (all remaining costs are 0)."""
    weights = (~chosen).to(torch.float32)
    return int(torch.multinomial(weights, 1, generator=generator))


def kmeans_plus_plus(
    x: torch.Tensor, k: int, generator: torch.Generator, n_local_trials: Optional[int] = None
) -> torch.Tensor:
    """Greedy k-means++ seeding: K distinct row indices (K,) int64 of x.

    x: (N, D) L2-normalised rows, K <= N. The first centre is uniform. Each further centre is
    the best of L = n_local_trials candidates drawn with probability proportional to their cosine
    cost to the nearest chosen centre: the one whose addition leaves the smallest total cost
    Σ_i min(cost_i, cost(x_i, candidate)) (first on ties). L = 1 is the original k-means++
    (Arthur & Vassilvitskii 2007); None means 2 + int(ln K), scikit-learn's default. The
    minimum cost is kept incrementally, so the total work is O(N·K·L·D).
    """
    trials = local_trials(n_local_trials, k)
    n = x.shape[0]
    chosen = torch.zeros(n, dtype=torch.bool, device=x.device)
    indices: List[int] = [int(torch.randint(n, (1,), generator=generator, device=x.device))]
    chosen[indices[0]] = True
    cost = _cost_to(x, x[indices[0]])
    cost[indices[0]] = 0.0
    for _ in range(1, k):
        if float(cost.sum()) > 0.0:
            candidates = torch.multinomial(cost, trials, replacement=True, generator=generator)
        else:
            candidates = torch.tensor([_draw_unchosen(chosen, generator)], device=x.device)
        costs = torch.minimum(_cost_to(x, x[candidates]), cost)
        best = int(costs.sum(dim=1, dtype=torch.float64).argmin())
        index = int(candidates[best])
        indices.append(index)
        chosen[index] = True
        cost = costs[best]
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
    x: torch.Tensor,
    k: int,
    generator: torch.Generator,
    chain_length: int = DEFAULT_CHAIN_LENGTH,
    n_local_trials: Optional[int] = None,
) -> torch.Tensor:
    """Greedy AFK-MC² seeding: K distinct row indices (K,) int64 of x.

    x: (N, D) L2-normalised rows, K <= N. The first centre is uniform; the proposal is
    q(x) = cost(x, c1) / (2 Σ cost) + 1 / (2N). For each further centre, L = n_local_trials
    independent Metropolis chains of `chain_length` draws from q, with target weight
    cost(x, C) / q(x), each end in a candidate (approximately a D² draw). L = 1 is the original
    AFK-MC²: its candidate is the centre. Otherwise the centre is the candidate with the largest
    importance-sampling estimate of the cost it removes, Σ_y max(0, cost(y, C) - cost(y, c)) / q(y)
    over the L·chain_length draws y of this step (first on ties): greedy k-means++'s criterion,
    estimated on the chains' draws instead of computed on all N rows. None means 2 + int(ln K).
    Work: O(N·D) for q, then O(L·chain_length·K²·D) for the chains, none of it O(N·K).
    """
    if chain_length < 1:
        raise ValueError(f"chain_length={chain_length} must be >= 1")
    trials = local_trials(n_local_trials, k)
    n = x.shape[0]
    first = int(torch.randint(n, (1,), generator=generator, device=x.device))
    first_cost = _cost_to(x, x[first])
    total = first_cost.sum()
    proposal = (
        first_cost / (2.0 * total) + 0.5 / n
        if float(total) > 0.0
        else torch.full_like(first_cost, 1.0 / n)
    )
    draws = torch.multinomial(
        proposal, (k - 1) * trials * chain_length, replacement=True, generator=generator
    )
    draws = draws.view(k - 1, trials * chain_length)
    uniforms = torch.rand(
        (k - 1, trials, chain_length), generator=generator, device=x.device, dtype=x.dtype
    )

    chosen = torch.zeros(n, dtype=torch.bool, device=x.device)
    chosen[first] = True
    centres = torch.empty((k, x.shape[1]), dtype=x.dtype, device=x.device)
    centres[0] = x[first]
    indices = [first]
    for step in range(1, k):
        pool = draws[step - 1]
        cost = (1.0 - (x[pool] @ centres[:step].T).amax(dim=1)).clamp_min_(0.0)
        cost[chosen[pool]] = 0.0
        weights = (cost / proposal[pool]).view(trials, chain_length).tolist()
        step_uniforms = uniforms[step - 1].tolist()
        candidates = []
        for trial in range(trials):
            position = _metropolis_chain(weights[trial], step_uniforms[trial])
            candidates.append(
                int(pool[trial * chain_length + position])
                if weights[trial][position] > 0.0
                else _draw_unchosen(chosen, generator)
            )
        index = candidates[0]
        if trials > 1:
            removed = (cost - _cost_to(x[pool], x[candidates])).clamp_min_(0.0) / proposal[pool]
            index = candidates[int(removed.sum(dim=1, dtype=torch.float64).argmax())]
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
    x: torch.Tensor,
    k: int,
    init: Union[str, torch.Tensor, np.ndarray],
    generator: torch.Generator,
    *,
    n_local_trials: Optional[int] = None,
    chain_length: int = DEFAULT_CHAIN_LENGTH,
) -> torch.Tensor:
    """Initial unit centroids (K, D) on x's device and dtype.

    x: (N, D) L2-normalised rows. init: "afk-mc2", "k-means++", or given centroids (K, D)
    (any non-zero norms; they are normalised here). n_local_trials: draws per centre of either
    seeding (None: 2 + int(ln K)); chain_length: AFK-MC²'s Metropolis chain length.
    """
    init = check_init(init, x, k)
    if not isinstance(init, str):
        return init
    if init == "afk-mc2":
        return x[afk_mc2(x, k, generator, chain_length, n_local_trials)]
    return x[kmeans_plus_plus(x, k, generator, n_local_trials)]
