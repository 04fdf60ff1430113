"""Quality and diversity metrics per prompt, and a marginal bootstrap interval over prompts.

Generations are grouped per prompt: ``B`` prompts x ``G`` generations. A metric is first computed per
prompt (a ``[B]`` array, NaN where undefined). The evaluation summarises and compares systems with
the paired, joint bootstrap of :mod:`musicdistill.evaluation.paired` (one draw of prompts per
resample for every system and measure); :func:`bootstrap_ci` is the marginal interval of one array,
for scripts. The per-prompt values come from the judges (:mod:`musicdistill.judges.judging`): text
adherence from a joint text-audio scorer, attribute adherence from the oracle, and embeddings for

- :func:`pairwise_diversity`: mean ``1 - cos`` over the pairs of generations of a prompt, measured
  under the reward embedder and under the hand-made features (an embedding that no reward
  optimised, so reward hacking shows up as a gap between the two);
- :func:`vendi_score`: the effective number of distinct generations of a prompt;
- :func:`frechet_distance`: set level (no interval), between all generations and real held-out
  clips in one embedding space.

:data:`METRIC_LABELS` gives each metric key its display name. :mod:`musicdistill.evaluation.evaluate`
puts them together.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import asdict, dataclass

import numpy as np
import torch

from musicdistill.judges.diversity import grouped_unit

#: display names of the per-prompt and set-level metric keys (others: :func:`metric_label`)
METRIC_LABELS = {
    "attribute_adherence": "attribute adherence",
    "text_adherence": "text adherence",
    "attribute_diversity": "attribute diversity",
    "expected_attribute_diversity": "attribute diversity, expected (oracle probabilities)",
    "diversity_second": "diversity (second embedder)",
    "diversity_reward": "diversity (reward embedder)",
    "diversity_independent": "diversity (hand-made features)",
    "vendi_reward": "Vendi (reward embedder)",
    "vendi_independent": "Vendi (hand-made features)",
    "vendi_second": "Vendi (second embedder)",
    "frechet_reward": "Fréchet (reward embedder)",
    "frechet_independent": "Fréchet (hand-made features)",
    "frechet_second": "Fréchet (second embedder)",
}


def metric_label(key: str) -> str:
    """The display name of a metric key (its words when it has none)."""
    return METRIC_LABELS.get(key, key.replace("_", " "))


@dataclass(frozen=True)
class Estimate:
    """A mean over ``n`` prompts with its bootstrap confidence interval [low, high].

    ``mc_error`` is the larger Monte-Carlo standard error of the two bounds from the finite number of
    resamples (:func:`musicdistill.evaluation.paired.bound_mc_error`); None when not computed.
    """

    mean: float
    low: float
    high: float
    n: int
    mc_error: float | None = None

    def as_dict(self) -> dict[str, float | int]:
        return asdict(self)

    def __str__(self) -> str:
        return f"{self.mean:.3f} [{self.low:.3f}, {self.high:.3f}] (n={self.n})"


def bootstrap_ci(
    values: Sequence[float] | np.ndarray | torch.Tensor,
    num_resamples: int = 1000,
    seed: int = 0,
    level: float = 0.95,
) -> Estimate:
    """Mean of the finite ``values`` and its percentile-bootstrap ``level`` interval.

    NaN values (prompts where the metric is undefined) are left out and ``n`` counts the rest. With
    one value the interval is that value; with none every field is NaN and ``n`` is 0.
    """
    if num_resamples < 1:
        raise ValueError(f"num_resamples={num_resamples} must be >= 1")
    if not 0.0 < level < 1.0:
        raise ValueError(f"level={level} must lie strictly between 0 and 1 (e.g. 0.95)")
    if isinstance(values, torch.Tensor):
        values = values.detach().cpu().double().numpy()
    data = np.asarray(values, dtype=np.float64).ravel()
    data = data[np.isfinite(data)]
    n = int(data.size)
    if n == 0:
        return Estimate(math.nan, math.nan, math.nan, 0)
    mean = float(data.mean())
    if n == 1:
        return Estimate(mean, mean, mean, 1)
    rng = np.random.default_rng(seed)
    means = data[rng.integers(0, n, size=(num_resamples, n))].mean(axis=1)
    low, high = np.quantile(means, [(1.0 - level) / 2.0, 1.0 - (1.0 - level) / 2.0])
    return Estimate(mean, float(low), float(high), n)


# --------------------------------------------------------------------------------------------
# Per-prompt diversity
# --------------------------------------------------------------------------------------------


def vendi_score(embeddings: torch.Tensor | np.ndarray) -> np.ndarray:
    """Vendi score of each prompt's generations with the cosine kernel: ``[B, G, E] -> [B]``, in [1, G].

    ``exp(-sum_i l_i log l_i)`` over the eigenvalues ``l_i`` of ``K / G``, ``K = cos`` similarity matrix
    (Friedman & Dieng 2023): the effective number of distinct generations. Identical generations give
    1, G mutually orthogonal ones give G.
    """
    x = grouped_unit(embeddings)
    kernel = x @ x.transpose(1, 2) / x.shape[1]  # [B, G, G]
    eigenvalues = torch.linalg.eigvalsh(kernel).clamp_min(0.0)
    terms = torch.where(
        eigenvalues > 1e-12, eigenvalues * eigenvalues.clamp_min(1e-300).log(), torch.zeros_like(eigenvalues)
    )
    return torch.exp(-terms.sum(-1)).numpy()


# --------------------------------------------------------------------------------------------
# Set level
# --------------------------------------------------------------------------------------------


def frechet_distance(generated: torch.Tensor | np.ndarray, reference: torch.Tensor | np.ndarray) -> float:
    """Fréchet distance between Gaussians fitted to two embedding sets ``[N, E]`` and ``[M, E]`` (FAD-style).

    ``|mu_g - mu_r|^2 + tr(S_g) + tr(S_r) - 2 tr((S_r^1/2 S_g S_r^1/2)^1/2)`` in float64. The estimate is
    biased upwards at small sample sizes (the bias shrinks roughly as 1/n; FAD papers use thousands
    of clips, fadtk extrapolates to n = infinity), so compare values only at equal n and with E << n.
    """
    g = np.asarray(torch.as_tensor(generated).detach().cpu().double())
    r = np.asarray(torch.as_tensor(reference).detach().cpu().double())
    if g.ndim != 2 or r.ndim != 2 or g.shape[1] != r.shape[1] or g.shape[0] < 2 or r.shape[0] < 2:
        raise ValueError(
            f"frechet_distance needs two sets [N, E] and [M, E] with the same E and N, M >= 2; "
            f"got {g.shape} and {r.shape}"
        )
    mu_g, mu_r = g.mean(0), r.mean(0)
    cov_g, cov_r = np.cov(g, rowvar=False), np.cov(r, rowvar=False)
    values, vectors = np.linalg.eigh(cov_r)
    root_r = (vectors * np.sqrt(np.clip(values, 0.0, None))) @ vectors.T
    middle = root_r @ cov_g @ root_r
    trace_root = np.sqrt(np.clip(np.linalg.eigvalsh((middle + middle.T) / 2.0), 0.0, None)).sum()
    distance = float(((mu_g - mu_r) ** 2).sum() + np.trace(cov_g) + np.trace(cov_r) - 2.0 * trace_root)
    return max(distance, 0.0)
