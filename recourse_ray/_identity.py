"""The identity columns of a system's rows, without the storage layer's imports.

Ray workers import the simulation, which labels its rows with these columns; keeping them
here spares every worker pyarrow and polars, which only the driver's store needs (about
100 MB of resident memory per worker: benchmarks/RESULTS.md). ``store`` re-exports both
names and checks at import that its row schema starts with these columns.
"""

from __future__ import annotations

__all__ = ["IDENTITY_COLUMNS", "identity_row"]

#: The columns that say which system a row belongs to, in row order (``store.ROW_SCHEMA``).
IDENTITY_COLUMNS = ("sweep", "system_key", "dataset", "model", "generator", "seed")


def identity_row(*, sweep: str, system_key: str, dataset: str, model: str, generator: str, seed: int) -> dict:
    """The identity columns of one system's rows, in ``IDENTITY_COLUMNS`` order.

    Every row of a system starts with these values; ``store.ResultsStore.write_system``
    takes them as the system's identity.
    """
    return {"sweep": sweep, "system_key": system_key, "dataset": dataset, "model": model,
            "generator": generator, "seed": int(seed)}
