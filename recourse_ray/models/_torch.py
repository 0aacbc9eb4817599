"""Any torch module as a classifier: the plain (eager) torch training path for custom models.

A user model is a ``torch.nn.Module`` that maps ``(N, d)`` float32 features to logits of
shape ``(N,)`` or ``(N, 1)``. :class:`TorchClassifier` gives it the classifier interface
the simulation needs (``models.Classifier``). ``fit`` follows the same semantics as the
built-in models (fresh Adam state per call, one permutation of the rows per epoch from
the seed, or the rows in index order with ``shuffle=False``; mean BCE on logits per
mini-batch); randomness inside the module (dropout) is
drawn from torch's global generator *inside* ``torch.random.fork_rng``, seeded from our
seed, so the process's global RNG state is left as it was. ``fit(..., device="cuda")``
moves the module there for the training and back to the CPU afterwards.
"""

from __future__ import annotations

import contextlib
import copy
from collections.abc import Iterator

import numpy as np
import torch

from recourse_ray._rng import as_rng, spawn_seed
from recourse_ray.models._training import check_training_args, training_device

__all__ = ["TorchClassifier"]


@contextlib.contextmanager
def _forked_rng(device: torch.device | None) -> Iterator[None]:
    """Fork torch's global generators that training on ``device`` may draw from.

    The CPU generator always; on an accelerator, also every device of its type (the
    ``torch.manual_seed`` inside reseeds them all).
    """
    if device is None or device.type == "cpu":
        with torch.random.fork_rng(devices=[]):
            yield
        return
    count = torch.get_device_module(device.type).device_count()
    with torch.random.fork_rng(devices=list(range(count)), device_type=device.type):
        yield


class TorchClassifier:
    """Wrap a ``torch.nn.Module`` (features -> logit) as a recourse_ray classifier.

    Args:
        module: the network; its output is reshaped to ``(N,)``.
        input_dim: number of features it expects.
        name: label used in messages.

    Raises:
        TypeError: ``module`` is no ``torch.nn.Module``.
    """

    def __init__(self, module: torch.nn.Module, *, input_dim: int, name: str = "custom") -> None:
        if not isinstance(module, torch.nn.Module):
            raise TypeError(f"TorchClassifier needs a torch.nn.Module. Got {type(module).__name__} instead.")
        self.module = module.float()
        self.module.eval()
        self.input_dim = int(input_dim)
        self.name = name
        self.last_fit_losses_: np.ndarray | None = None

    # --------------------------------------------------------------- forward
    def logits(self, x: torch.Tensor) -> torch.Tensor:
        """(N, d) float32 -> (N,) logits of the module, differentiable in ``x``.

        Raises:
            ValueError: the module does not return one logit per row.
        """
        out = self.module(x)
        if out.dim() == 2 and out.shape[1] == 1:
            out = out[:, 0]
        if out.dim() != 1 or out.shape[0] != x.shape[0]:
            raise ValueError(
                f"Model {self.name!r} must return one logit per row, shape ({x.shape[0]},) or ({x.shape[0]}, 1). "
                f"Got {tuple(out.shape)} instead."
            )
        return out

    def proba(self, x: torch.Tensor) -> torch.Tensor:
        """(N, d) float32 -> (N,) target-class probabilities ``sigmoid(logits)``."""
        return torch.sigmoid(self.logits(x))

    def predict_proba(self, X: np.ndarray) -> np.ndarray:
        """(n, d) features -> (n,) float32 target-class probabilities (evaluation mode)."""
        self.module.eval()
        with torch.no_grad():
            return self.proba(torch.tensor(np.asarray(X, dtype=np.float32))).numpy()

    def predict(self, X: np.ndarray) -> np.ndarray:
        """(n, d) features -> (n,) int64 labels ``p > 0.5``."""
        return (self.predict_proba(X) > 0.5).astype(np.int64)

    # --------------------------------------------------------------- training
    def fit(
        self,
        X: np.ndarray,
        y: np.ndarray,
        *,
        epochs: int,
        batch_size: int,
        seed: int | np.random.Generator,
        lr: float = 1e-3,
        device: str | torch.device | None = None,
        shuffle: bool = True,
    ) -> np.ndarray:
        """Continue training with a fresh Adam state.

        Draws from ``seed``, in this order: one permutation of the rows per epoch (none
        when ``shuffle`` is False), then the seed of torch's generator for the module's
        own randomness (dropout).

        Args:
            X: (n, d) features. y: (n,) labels in {0, 1}.
            epochs: passes over the data (>= 0). batch_size: rows per step (>= 1; the
                last batch of an epoch may be smaller).
            seed: int or numpy Generator. lr: Adam learning rate (> 0).
            device: None or a CPU device: train the module in place on the CPU. Any other
                device: move the module there (its parameters keep their identity), train,
                and move it back to the CPU, also when training fails.
            shuffle: True (the default): a fresh permutation of the rows every epoch;
                False: rows ``0, 1, ..., n - 1`` every epoch (the reference's order).

        Returns:
            (1, epochs) float64 mean batch loss of each epoch.

        Raises:
            ValueError: malformed data or arguments (every problem listed), or a bad device.
        """
        owner = "TorchClassifier.fit"
        X, yf = check_training_args(
            X, y, epochs=epochs, batch_size=batch_size, lr=lr, input_dim=self.input_dim, owner=owner, shuffle=shuffle
        )
        dev = training_device(device, owner)
        rng = as_rng(seed)
        if shuffle:
            orders = [rng.permutation(X.shape[0]) for _ in range(epochs)]
        else:
            orders = [np.arange(X.shape[0], dtype=np.int64) for _ in range(epochs)]
        torch_seed = spawn_seed(rng)
        if dev is None:
            losses = self._train(X, yf, orders, batch_size, lr, torch_seed)
        else:
            self.module.to(dev)
            try:
                losses = self._train(X, yf, orders, batch_size, lr, torch_seed, device=dev)
            finally:
                self.module.to(torch.device("cpu"))
        self.last_fit_losses_ = losses
        return losses

    def _train(
        self,
        X: np.ndarray,
        y: np.ndarray,
        orders: list[np.ndarray],
        batch_size: int,
        lr: float,
        torch_seed: int,
        device: torch.device | None = None,
    ) -> np.ndarray:
        """The Adam loop over ``orders``, on the device the module is on.

        Args:
            X: (n, d) float32 features. y: (n,) float32 labels.
            orders: one (n,) int64 row order per epoch. batch_size: rows per step.
            lr: Adam learning rate. torch_seed: seed of torch's generators for the
                module's randomness (forked, so the global state is restored).
            device: where the module is (None: the CPU); the data is moved there.

        Returns:
            (1, epochs) float64 losses.
        """
        n = X.shape[0]
        Xt, yt = torch.from_numpy(X), torch.from_numpy(y)
        if device is not None:
            Xt, yt = Xt.to(device), yt.to(device)
        losses = np.zeros((1, len(orders)))
        n_batches = -(-n // batch_size)
        optimizer = torch.optim.Adam(self.module.parameters(), lr=lr)
        with _forked_rng(device):
            torch.manual_seed(torch_seed)
            self.module.train()
            try:
                for e, order in enumerate(orders):
                    order_t = torch.from_numpy(order)
                    if device is not None:
                        order_t = order_t.to(device)
                    for start in range(0, n, batch_size):
                        idx = order_t[start : start + batch_size]
                        loss = torch.nn.functional.binary_cross_entropy_with_logits(self.logits(Xt[idx]), yt[idx])
                        optimizer.zero_grad()
                        loss.backward()
                        optimizer.step()
                        losses[0, e] += loss.item()
                    losses[0, e] /= n_batches
            finally:
                self.module.eval()
        return losses

    # --------------------------------------------------------------- parameters and copies
    def parameter_arrays(self) -> list[np.ndarray]:
        """Copies of each parameter tensor of the module, in ``module.parameters()`` order."""
        return [p.detach().numpy().copy() for p in self.module.parameters()]

    def parameters_vector(self) -> np.ndarray:
        """All parameters as one flat float32 array (a copy; empty for a module without any)."""
        arrays = self.parameter_arrays()
        return np.concatenate([a.ravel() for a in arrays]) if arrays else np.zeros(0, dtype=np.float32)

    def clone(self) -> TorchClassifier:
        """An independent copy (module deep-copied)."""
        return copy.deepcopy(self)

    def on_device(self, device: str | torch.device) -> TorchClassifier:
        """A deep copy whose module lives on ``device`` (for search there); this model is not changed."""
        new = copy.deepcopy(self)
        new.module.to(torch.device(device))
        new.last_fit_losses_ = None
        return new

    def __repr__(self) -> str:
        return f"TorchClassifier(name={self.name!r}, input_dim={self.input_dim}, module={self.module.__class__.__name__})"
