"""The Euclidean norm every distance of the search uses (terms, costs, the full-search stop).

It lives in its own module because terms, convergence rules and the engine all need it,
and none of them should import another just for it.
"""

from __future__ import annotations

import torch

__all__ = ["safe_norm"]


def safe_norm(v: torch.Tensor, dim: int = -1) -> torch.Tensor:
    """Euclidean norm along ``dim`` whose gradient at a zero vector is 0, not NaN.

    ``sqrt`` has an infinite derivative at 0, yet states that coincide with the factual
    or with each other are common (latent-space states all start at the same code).
    ``torch.linalg.vector_norm`` returns the zero subgradient there (checked by
    ``test_distance_gradients_are_finite_at_zero_distance``), in one fused kernel.

    Args:
        v: any tensor, e.g. (m, K, d) differences.
        dim: the dimension to reduce.

    Returns:
        ``v``'s shape without ``dim``, e.g. (m, K).
    """
    return torch.linalg.vector_norm(v, dim=dim)
