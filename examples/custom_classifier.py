"""A user-defined classifier: any torch module mapping (N, d) features to logits.

The factory takes ``input_dim``, a keyword-only ``seed`` and its own parameters; the
returned ``torch.nn.Module`` is wrapped in ``recourse_ray.models.TorchClassifier`` and
trained by the plain torch path (the fused kernel covers the built-in models only).
Default torch initialisation is made deterministic by recourse_ray (it seeds torch inside
``fork_rng`` before calling the factory), so the factory need not touch global seeds.

    models:
      tanh_mlp: {preset: "examples.custom_classifier:tanh_mlp", width: 8}
"""

from __future__ import annotations

import torch


def tanh_mlp(input_dim: int, *, seed, width: int = 16) -> torch.nn.Module:
    """A one-hidden-layer tanh network with ``width`` units."""
    return torch.nn.Sequential(torch.nn.Linear(input_dim, width), torch.nn.Tanh(), torch.nn.Linear(width, 1))
