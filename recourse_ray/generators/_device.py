"""Where a search runs: the default CPU path, or copies of the model and VAE on a torch device.

:meth:`~recourse_ray.generators.engine.Generator.search` takes ``device``; the simulation
passes ``simulation.device`` only when it is not the CPU, so a user's generator need not
know about devices. The objects passed in are never moved: the search works on
``on_device`` copies and returns numpy arrays on the CPU.
"""

from __future__ import annotations

from typing import Any

import torch

__all__ = ["search_device", "on_device"]


def search_device(device: str | torch.device | None) -> torch.device | None:
    """``device`` as a ``torch.device``, or None for None and the CPU (the copy-free default path).

    Args:
        device: None, a device string (``"cpu"``, ``"cuda:1"``, ``"mps"``) or a ``torch.device``.

    Returns:
        The device to move the search to, or None to search in place on the CPU.
    """
    if device is None:
        return None
    dev = torch.device(device)
    return None if dev.type == "cpu" else dev


def on_device(component: Any, device: torch.device, what: str) -> Any:
    """A copy of a model or VAE whose weights live on ``device`` (the original is untouched).

    Args:
        component: a classifier or VAE with an ``on_device(device)`` method.
        device: the target device.
        what: what ``component`` is ("model", "VAE"), for the message.

    Raises:
        TypeError: if ``component`` has no ``on_device`` method.
    """
    move = getattr(component, "on_device", None)
    if move is None:
        raise TypeError(f"The {what} {type(component).__name__} has no on_device method; it cannot search on {device}.")
    return move(device)
