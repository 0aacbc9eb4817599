"""Any torch module as a classifier: the plain (eager) torch training path for custom models.

A user model is a ``torch.nn.Module`` that maps ``(N, d)`` float32 features to logits of
shape ``(N,)`` or ``(N, 1)``. :class:`TorchClassifier` gives it the classifier interface
the simulation needs. ``fit`` follows the same semantics as the built-in models (fresh
Adam state per call, one permutation of the rows per epoch from the seed, mean BCE on
logits per mini-batch); randomness inside the module (dropout) is drawn from torch's
global generator *inside* ``torch.random.fork_rng``, seeded from our seed, so the
process's global RNG state is left as it was.
"""

from __future__ import annotations

import copy

import numpy as np
import torch

from recourse_ray._rng import as_rng, spawn_seed

__all__ = ["TorchClassifier"]


class TorchClassifier:
    """Wrap a ``torch.nn.Module`` (features -> logit) as a recourse_ray classifier.

    Args:
        module: the network; its output is reshaped to ``(N,)``.
        input_dim: number of features it expects.
        name: label used in messages.
    """

    def __init__(self, module: torch.nn.Module, *, input_dim: int, name: str = "custom") -> None:
        if not isinstance(module, torch.nn.Module):
            raise TypeError(f"TorchClassifier needs a torch.nn.Module. Got {type(module).__name__} instead.")
        self.module = module.float()
        self.module.eval()
        self.input_dim = int(input_dim)
        self.name = name
        self.last_fit_losses_: np.ndarray | None = None

    def uses_fused(self) -> bool:
        return False

    # --------------------------------------------------------------- forward
    def logits(self, x: torch.Tensor) -> torch.Tensor:
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
        return torch.sigmoid(self.logits(x))

    def predict_proba(self, X: np.ndarray) -> np.ndarray:
        self.module.eval()
        with torch.no_grad():
            return self.proba(torch.tensor(np.asarray(X, dtype=np.float32))).numpy()

    def predict(self, X: np.ndarray) -> np.ndarray:
        return (self.predict_proba(X) > 0.5).astype(np.int64)

    # --------------------------------------------------------------- training
    def fit(self, X, y, *, epochs: int, batch_size: int, seed, lr: float = 1e-3) -> np.ndarray:
        """Continue training with a fresh Adam state; returns (1, epochs) mean batch losses."""
        from recourse_ray.models._feedforward import _check_training_args

        X, yf = _check_training_args(X, y, epochs, batch_size, lr, self.input_dim)
        rng = as_rng(seed)
        n = X.shape[0]
        orders = [rng.permutation(n) for _ in range(epochs)]
        torch_seed = spawn_seed(rng)
        Xt, yt = torch.from_numpy(X), torch.from_numpy(yf)
        losses = np.zeros((1, epochs))
        n_batches = -(-n // batch_size)
        optimizer = torch.optim.Adam(self.module.parameters(), lr=lr)
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(torch_seed)
            self.module.train()
            try:
                for e, order in enumerate(orders):
                    order_t = torch.from_numpy(order)
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
        self.last_fit_losses_ = losses
        return losses

    # --------------------------------------------------------------- parameters and state
    def parameter_arrays(self) -> list[np.ndarray]:
        return [p.detach().numpy().copy() for p in self.module.parameters()]

    def parameters_vector(self) -> np.ndarray:
        arrays = self.parameter_arrays()
        return np.concatenate([a.ravel() for a in arrays]) if arrays else np.zeros(0, dtype=np.float32)

    def get_state(self) -> dict:
        return {k: v.detach().numpy().copy() for k, v in self.module.state_dict().items()}

    def set_state(self, state: dict) -> None:
        self.module.load_state_dict({k: torch.as_tensor(np.array(v)) for k, v in state.items()})

    def clone(self) -> "TorchClassifier":
        return copy.deepcopy(self)

    def on_device(self, device: str | torch.device) -> "TorchClassifier":
        """A deep copy whose module lives on ``device`` (for search there); this model is not changed."""
        new = copy.deepcopy(self)
        new.module.to(torch.device(device))
        new.last_fit_losses_ = None
        return new

    def __repr__(self) -> str:
        return f"TorchClassifier(name={self.name!r}, input_dim={self.input_dim}, module={self.module.__class__.__name__})"
