"""Per-individual random streams of the search (the only randomness a generator uses).

Every draw of a search (the initial noise of :class:`~recourse_ray.generators.spaces.FeatureSpace`,
the neighbour rows of the ``gravitational`` term, a user term's own stream) comes from
``stream_rng(stream, seed_i)``: one numpy Generator per individual and per named stream,
keyed by :func:`recourse_ray._rng.make_rng`. Keying streams separately means that adding
a term never changes another piece's draws, and keying them by the individual's seed
means an individual's search does not depend on the rest of its batch.
"""

from __future__ import annotations

import numpy as np

from recourse_ray._rng import make_rng

__all__ = ["RNG_NAMESPACE", "stream_rng", "individual_seeds"]

RNG_NAMESPACE = "recourse_ray.generators"


def stream_rng(stream: str, seed: int) -> np.random.Generator:
    """The numpy Generator of one individual's random ``stream`` ("init", "gravitational", ...).

    Args:
        stream: the stream's name; each piece of a generator draws from its own.
        seed: the individual's search seed.

    Returns:
        A fresh PCG64 Generator keyed by ``(RNG_NAMESPACE, stream, seed)``.
    """
    return make_rng(RNG_NAMESPACE, stream, int(seed))


def individual_seeds(seed: int, n: int) -> np.ndarray:
    """Per-individual seeds derived from one search seed, by position.

    Args:
        seed: the search seed.
        n: the number of individuals.

    Returns:
        (n,) int64 seeds in ``[0, 2**63 - 1)``.
    """
    return make_rng(RNG_NAMESPACE, "seeds", int(seed)).integers(0, 2**63 - 1, size=n, dtype=np.int64)
