"""What every model's ``fit`` shares: argument checks, the training device, Adam's defaults.

Where it sits in the flow: ``FeedForwardClassifier.fit``, ``TorchClassifier.fit`` and
``VAE.fit`` all start here, so that a wrong argument is reported the same way whatever
the model (the house error template of ``recourse_ray._config``), and so that "which
device" means the same thing everywhere: None and any CPU device are the default,
copy-free CPU path; any other device is where the torch path trains.
"""

from __future__ import annotations

import numpy as np
import torch

from recourse_ray._config import check_int, check_real, param_message

__all__ = [
    "ADAM_BETAS",
    "ADAM_EPS",
    "BACKENDS",
    "Found",
    "backend_problem",
    "bool_problem",
    "check_training_args",
    "feature_problems",
    "schedule_problems",
    "training_device",
]

#: Training paths a built-in model can be asked for: the compiled kernel, eager torch,
#: or the kernel whenever it is available ("auto").
BACKENDS = ("auto", "fused", "torch")
#: ``torch.optim.Adam``'s defaults, used by every built-in training path.
ADAM_BETAS = (0.9, 0.999)
ADAM_EPS = 1e-8


class Found(str):
    """A description of what was passed, shown as is in a message's "Got ... instead".

    ``param_message`` shows the value with ``repr``; an array is better described by its
    shape than by its entries, so ``Found("shape (4, 3)")`` prints without quotes.
    """

    def __repr__(self) -> str:
        return str(self)


def backend_problem(backend: object, owner: str) -> str | None:
    """None when ``backend`` is one of :data:`BACKENDS`, else the message."""
    if isinstance(backend, str) and backend in BACKENDS:
        return None
    return param_message("backend", owner, "one of " + ", ".join(map(repr, BACKENDS)), backend)


def bool_problem(value: object, name: str, owner: str) -> str | None:
    """None when ``value`` is a bool (Python or numpy), else the message."""
    if isinstance(value, (bool, np.bool_)):
        return None
    return param_message(name, owner, "a bool", value)


def feature_problems(X: np.ndarray, input_dim: int, owner: str) -> list[str]:
    """Why the features ``X`` (already converted to a float32 array) cannot be trained on.

    Args:
        X: the features, any shape (the expected one is ``(n_samples, input_dim)``).
        input_dim: the model's number of features.
        owner: the function named in the messages (e.g. ``"VAE.fit"``).

    Returns:
        One message per problem: wrong shape, no rows, NaN or infinite entries; empty
        when ``X`` is usable.
    """
    if X.ndim != 2 or X.shape[1] != input_dim:
        return [param_message("X", owner, f"an array of shape (n_samples, {input_dim})", Found(f"shape {X.shape}"))]
    if X.shape[0] == 0:
        return [param_message("X", owner, "an array with at least one row", Found("0 rows"))]
    n_bad = int(X.size - np.count_nonzero(np.isfinite(X)))
    if n_bad:
        found = Found(f"{n_bad} NaN or infinite values")
        return [param_message("X", owner, "an array without NaN or infinite values", found)]
    return []


def schedule_problems(epochs: object, batch_size: object, lr: object, owner: str) -> list[str]:
    """Why ``epochs`` (int >= 0), ``batch_size`` (int >= 1) or ``lr`` (finite float > 0) is wrong."""
    found = (
        check_int(epochs, "epochs", owner, 0),
        check_int(batch_size, "batch_size", owner, 1),
        check_real(lr, "lr", owner, 0.0, None, low_open=True),
    )
    return [p for p in found if p]


def check_training_args(
    X: np.ndarray,
    y: np.ndarray,
    *,
    epochs: int,
    batch_size: int,
    lr: float,
    input_dim: int,
    owner: str,
    shuffle: object = True,
) -> tuple[np.ndarray, np.ndarray]:
    """Check the arguments of a classifier's ``fit`` and return private training copies.

    Args:
        X: (n_samples, input_dim) features, any real dtype; may be read-only (Ray's
            object store).
        y: (n_samples,) labels in {0, 1}.
        epochs: passes over the data, >= 0. batch_size: rows per step, >= 1.
        lr: learning rate, > 0.
        input_dim: the model's number of features.
        owner: the function named in the messages (e.g. ``"TorchClassifier.fit"``).
        shuffle: the ``fit``'s row-order switch, which must be a bool.

    Returns:
        ``X`` as a private, C-ordered, writable (n_samples, input_dim) float32 copy (the
        compiled kernels are specialised for such arrays) and ``y`` as (n_samples,) float32.

    Raises:
        ValueError: listing every problem found, one sentence each.
    """
    X = np.array(X, dtype=np.float32, order="C")
    y = np.asarray(y)
    problems = feature_problems(X, input_dim, owner)
    if y.ndim != 1 or (X.ndim >= 1 and y.shape[0] != X.shape[0]):
        n_rows = X.shape[0] if X.ndim >= 1 else "n_samples"
        problems.append(param_message("y", owner, f"an array of shape ({n_rows},)", Found(f"shape {y.shape}")))
    problems.extend(schedule_problems(epochs, batch_size, lr, owner))
    shuffle_msg = bool_problem(shuffle, "shuffle", owner)
    if shuffle_msg:
        problems.append(shuffle_msg)
    if problems:
        raise ValueError(" ".join(problems))
    return X, y.astype(np.float32)


def training_device(device: str | torch.device | None, owner: str) -> torch.device | None:
    """The device the torch path of ``owner`` trains on: None for None and any CPU device.

    None means the default path, which trains the model's own CPU tensors in place; any
    other device means "copy the weights there, train, copy them back".

    Raises:
        TypeError: ``device`` is neither None, a str nor a ``torch.device``.
        ValueError: a str that is no torch device (e.g. ``"gpu"``).
    """
    expected = "None, or a torch device such as 'cpu' or 'cuda'"
    if device is None:
        return None
    if not isinstance(device, (str, torch.device)):
        raise TypeError(param_message("device", owner, expected, device))
    try:
        dev = torch.device(device)
    except (RuntimeError, ValueError) as exc:
        raise ValueError(param_message("device", owner, expected, device)) from exc
    return None if dev.type == "cpu" else dev

