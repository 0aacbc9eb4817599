"""Deterministic random streams derived from readable keys.

All randomness of a recourse system flows from keys such as ``("select", dataset, seed,
round)``: each key is hashed with SHA-256 (stable across processes and Python versions,
unlike ``hash()``) into a :class:`numpy.random.SeedSequence`. Global RNG state is never
touched.
"""

from __future__ import annotations

import hashlib

import numpy as np
import torch

__all__ = ["stable_int", "seed_sequence", "make_rng", "torch_generator", "spawn_seed", "as_rng"]


def stable_int(*parts: object) -> int:
    """A 128-bit integer that depends only on the string forms of ``parts``."""
    text = "\x1f".join(repr(p) if not isinstance(p, str) else p for p in parts)
    return int.from_bytes(hashlib.sha256(text.encode("utf-8")).digest()[:16], "little")


def seed_sequence(*parts: object) -> np.random.SeedSequence:
    """A SeedSequence keyed by ``parts``."""
    return np.random.SeedSequence(stable_int(*parts))


def make_rng(*parts: object) -> np.random.Generator:
    """A numpy Generator keyed by ``parts`` (PCG64)."""
    return np.random.default_rng(seed_sequence(*parts))


def spawn_seed(rng: np.random.Generator) -> int:
    """Draw a 63-bit seed from ``rng`` (for torch generators and compiled kernels)."""
    return int(rng.integers(0, 2**63 - 1))


def torch_generator(rng_or_seed: np.random.Generator | int) -> torch.Generator:
    """A CPU torch.Generator seeded from a numpy Generator (one draw) or an int."""
    seed = spawn_seed(rng_or_seed) if isinstance(rng_or_seed, np.random.Generator) else int(rng_or_seed)
    gen = torch.Generator()
    gen.manual_seed(seed)
    return gen


def as_rng(seed: int | np.random.Generator | None) -> np.random.Generator:
    """Turn an int seed (or an existing Generator) into a numpy Generator."""
    if isinstance(seed, np.random.Generator):
        return seed
    if seed is None:
        raise ValueError("A seed is required: pass an int or a numpy.random.Generator.")
    if isinstance(seed, (bool, np.bool_)) or not isinstance(seed, (int, np.integer)):
        raise TypeError(f"The 'seed' parameter must be an int or a numpy.random.Generator. Got {seed!r} instead.")
    return np.random.default_rng(int(seed))
