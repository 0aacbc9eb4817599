"""Feed-forward classifiers: logistic regression, MLP and deep ensemble in one type.

All three are stacks of dense layers whose weights live in ONE float32 tensor
``params`` of shape ``(n_members, n_params)``. Per member and layer the block holds the
weight matrix ``(out, in)`` row-major followed by the bias ``(out,)``. The torch forward
pass (used by counterfactual search and the torch training path) reads views of that
tensor; the fused training kernel (``_fused.py``) updates the same memory through
``params.numpy()``. Retraining therefore never copies weights, and the search always
sees the latest ones.

Logistic regression is the zero-hidden-layer case, an MLP has one member, a deep
ensemble has several (SPEC §3: probability = mean of member sigmoids; the search's
validity loss uses the mean of member logits, as the reference does).
"""

from __future__ import annotations

import copy
import logging
from collections.abc import Sequence

import numpy as np
import torch

from recourse_ray._rng import as_rng, spawn_seed, torch_generator

__all__ = ["FeedForwardClassifier", "layer_offsets", "n_params"]

logger = logging.getLogger(__name__)

BACKENDS = ("auto", "fused", "torch")
ADAM_BETAS = (0.9, 0.999)
ADAM_EPS = 1e-8
# One-thread eager torch (BLAS) overtakes the fused kernel only for wide hidden layers at
# large batches (benchmarks/RESULTS.md, "Training"): from this widest hidden layer and
# this many multiply-adds per step (rows x members x parameters), "auto" trains with torch.
TORCH_MIN_WIDTH = 128
TORCH_MIN_STEP_MACS = 2**23


def layer_offsets(layer_sizes: Sequence[int]) -> list[tuple[int, int, int, int]]:
    """(weight offset, bias offset, fan_in, fan_out) per layer in the flat parameter block."""
    out, offset = [], 0
    for fan_in, fan_out in zip(layer_sizes[:-1], layer_sizes[1:]):
        out.append((offset, offset + fan_in * fan_out, fan_in, fan_out))
        offset += fan_in * fan_out + fan_out
    return out


def n_params(layer_sizes: Sequence[int]) -> int:
    """Number of parameters of one member."""
    return sum(i * o + o for i, o in zip(layer_sizes[:-1], layer_sizes[1:]))


def _check_training_args(X, y, epochs, batch_size, lr, input_dim):
    problems = []
    # A private C-ordered copy: inputs may be read-only (Ray's object store) and the
    # compiled kernel is specialised for writable contiguous arrays.
    X = np.array(X, dtype=np.float32, order="C")
    y = np.asarray(y)
    if X.ndim != 2 or X.shape[1] != input_dim:
        problems.append(f"X must have shape (n_samples, {input_dim}); got {X.shape}")
    if y.ndim != 1 or y.shape[0] != X.shape[0]:
        problems.append(f"y must have shape ({X.shape[0]},); got {y.shape}")
    if X.shape[0] == 0:
        problems.append("X has no rows")
    if isinstance(epochs, bool) or not isinstance(epochs, (int, np.integer)) or epochs < 0:
        problems.append(f"epochs must be an int >= 0; got {epochs!r}")
    if isinstance(batch_size, bool) or not isinstance(batch_size, (int, np.integer)) or batch_size < 1:
        problems.append(f"batch_size must be an int >= 1; got {batch_size!r}")
    if not (isinstance(lr, (int, float)) and lr > 0):
        problems.append(f"lr must be a float > 0; got {lr!r}")
    if X.size and not np.isfinite(X).all():
        problems.append("X contains NaN or infinite values")
    if problems:
        raise ValueError("Invalid arguments to fit: " + "; ".join(problems) + ".")
    return X, y.astype(np.float32)


class FeedForwardClassifier:
    """A binary classifier made of dense layers, with ``n_members`` independent members.

    Args:
        input_dim: number of input features.
        hidden: sizes of the hidden layers (ReLU); empty for logistic regression.
        dropout: dropout probability after every hidden activation (training only).
        n_members: ensemble size (1 for a single model).
        backend: training path: ``"fused"`` (compiled loop), ``"torch"`` (eager torch
            Adam) or ``"auto"`` (fused when the kernel is available).
        seed: int or numpy Generator for the initial weights (Glorot-uniform weights,
            zero biases: the defaults of Flux, the study's framework).
        name: the registry name this model was created under.
    """

    def __init__(
        self,
        input_dim: int,
        *,
        hidden: Sequence[int] = (32,),
        dropout: float = 0.0,
        n_members: int = 1,
        backend: str = "auto",
        seed: int | np.random.Generator = 0,
        name: str = "feedforward",
    ) -> None:
        problems = []
        if isinstance(input_dim, bool) or not isinstance(input_dim, (int, np.integer)) or input_dim < 1:
            problems.append(f"'input_dim' must be an int >= 1; got {input_dim!r}")
        hidden = tuple(hidden)
        if any(isinstance(h, bool) or not isinstance(h, (int, np.integer)) or h < 1 for h in hidden):
            problems.append(f"'hidden' must be a list of ints >= 1; got {list(hidden)!r}")
        if not (isinstance(dropout, (int, float)) and 0.0 <= dropout < 1.0):
            problems.append(f"'dropout' must be a float in [0, 1); got {dropout!r}")
        if isinstance(n_members, bool) or not isinstance(n_members, (int, np.integer)) or n_members < 1:
            problems.append(f"'n_members' must be an int >= 1; got {n_members!r}")
        if backend not in BACKENDS:
            problems.append(f"'backend' must be one of {', '.join(BACKENDS)}; got {backend!r}")
        if problems:
            raise ValueError(f"Invalid parameters for model {name!r}: " + "; ".join(problems) + ".")
        self.name = name
        self.input_dim = int(input_dim)
        self.hidden = tuple(int(h) for h in hidden)
        self.dropout = float(dropout)
        self.n_members = int(n_members)
        self.backend = backend
        self.layer_sizes = (self.input_dim, *self.hidden, 1)
        self._offsets = layer_offsets(self.layer_sizes)
        self.params = torch.zeros(self.n_members, n_params(self.layer_sizes), dtype=torch.float32)
        self.reset_parameters(seed)
        self.last_fit_losses_: np.ndarray | None = None

    # ------------------------------------------------------------------ parameters
    def reset_parameters(self, seed: int | np.random.Generator) -> None:
        """Glorot-uniform weights and zero biases, drawn independently per member."""
        rng = as_rng(seed)
        block = np.zeros(self.params.shape, dtype=np.float32)
        for m in range(self.n_members):
            for w_off, b_off, fan_in, fan_out in self._offsets:
                limit = np.sqrt(6.0 / (fan_in + fan_out))
                block[m, w_off:b_off] = rng.uniform(-limit, limit, size=fan_in * fan_out)
        self.params.copy_(torch.from_numpy(block))

    def layers(self, params: torch.Tensor | None = None) -> list[tuple[torch.Tensor, torch.Tensor]]:
        """Per layer, views ``W (M, out, in)`` and ``b (M, out)`` of ``params`` (no copies)."""
        p = self.params if params is None else params
        return [
            (p[:, w:b].view(self.n_members, o, i), p[:, b : b + o])
            for w, b, i, o in self._offsets
        ]

    def parameters_vector(self) -> np.ndarray:
        """All parameters as one flat float32 array (a copy)."""
        return self.params.detach().numpy().ravel().copy()

    def parameter_arrays(self) -> list[np.ndarray]:
        """Each weight matrix and bias vector of each member, as separate arrays (copies).

        Used by the ``perturbation`` metric (mean over parameter tensors, SPEC §6).
        """
        out = []
        for W, b in self.layers():
            for m in range(self.n_members):
                out.append(W[m].detach().numpy().copy())
                out.append(b[m].detach().numpy().copy())
        return out

    def get_state(self) -> dict:
        """Weights and configuration as plain Python/numpy objects (for other processes)."""
        return {"config": self.config(), "params": self.params.numpy().copy()}

    def set_state(self, state: dict) -> None:
        """Load weights produced by ``get_state`` (in place: views and fused path stay valid)."""
        params = np.asarray(state["params"], dtype=np.float32)
        if params.shape != tuple(self.params.shape):
            raise ValueError(f"State has parameters of shape {params.shape}; this model needs {tuple(self.params.shape)}.")
        self.params.copy_(torch.from_numpy(params))

    def config(self) -> dict:
        return {
            "name": self.name,
            "input_dim": self.input_dim,
            "hidden": list(self.hidden),
            "dropout": self.dropout,
            "n_members": self.n_members,
            "backend": self.backend,
        }

    @classmethod
    def from_state(cls, state: dict) -> "FeedForwardClassifier":
        cfg = dict(state["config"])
        model = cls(cfg.pop("input_dim"), seed=0, **cfg)
        model.set_state(state)
        return model

    def clone(self) -> "FeedForwardClassifier":
        """An independent copy (weights copied)."""
        return copy.deepcopy(self)

    def on_device(self, device: str | torch.device) -> "FeedForwardClassifier":
        """A lightweight copy whose ``params`` is a copy on ``device`` (for search there).

        The copy shares the configuration but not the weights: this model is not changed.
        """
        new = object.__new__(type(self))
        new.__dict__.update(self.__dict__)
        new.params = self.params.detach().to(torch.device(device), copy=True)
        new.last_fit_losses_ = None
        return new

    def __getstate__(self) -> dict:
        d = self.__dict__.copy()
        d["params"] = self.params.numpy().copy()
        return d

    def __setstate__(self, d: dict) -> None:
        d = d.copy()
        # Always a private, writable copy: unpickled arrays may live in read-only shared memory.
        d["params"] = torch.from_numpy(np.array(d["params"], dtype=np.float32, order="C"))
        self.__dict__.update(d)

    def __deepcopy__(self, memo) -> "FeedForwardClassifier":
        new = object.__new__(type(self))
        new.__setstate__(copy.deepcopy(self.__getstate__(), memo))
        return new

    def __repr__(self) -> str:
        return (
            f"FeedForwardClassifier(name={self.name!r}, layers={list(self.layer_sizes)}, "
            f"dropout={self.dropout}, n_members={self.n_members}, backend={self.backend!r})"
        )

    # ------------------------------------------------------------------ forward
    def _forward(
        self,
        x: torch.Tensor,
        params: torch.Tensor | None = None,
        dropout_masks: list[torch.Tensor] | None = None,
    ) -> torch.Tensor:
        """Member logits ``(M, N)`` for inputs ``x`` of shape ``(N, d)`` or ``(M, N, d)``."""
        h = x if x.dim() == 3 else x.unsqueeze(0).expand(self.n_members, -1, -1)
        layers = self.layers(params)
        last = len(layers) - 1
        for i, (W, b) in enumerate(layers):
            h = torch.baddbmm(b.unsqueeze(1), h, W.transpose(1, 2))
            if i < last:
                h = torch.relu(h)
                if dropout_masks is not None:
                    h = h * dropout_masks[i]
        return h.squeeze(-1)

    def member_logits(self, x: torch.Tensor) -> torch.Tensor:
        """Logits of each member, ``(n_members, N)``; differentiable in ``x``."""
        return self._forward(x)

    def logits(self, x: torch.Tensor) -> torch.Tensor:
        """Logit ``(N,)`` used by counterfactual search: mean of the member logits."""
        return self._forward(x).mean(dim=0)

    def proba(self, x: torch.Tensor) -> torch.Tensor:
        """Probability of the target class ``(N,)``: mean of the member sigmoids."""
        return torch.sigmoid(self._forward(x)).mean(dim=0)

    def predict_proba(self, X: np.ndarray) -> np.ndarray:
        """Target-class probabilities ``(n,)`` float32 for features ``X (n, d)``."""
        with torch.no_grad():
            # torch.tensor copies: inputs may be read-only arrays from Ray's object store.
            return self.proba(torch.tensor(np.asarray(X, dtype=np.float32))).numpy()

    def predict(self, X: np.ndarray) -> np.ndarray:
        """Predicted labels ``(n,)`` int64: ``round(p)`` (ties at 0.5 go to 0, as round-half-even)."""
        return (self.predict_proba(X) > 0.5).astype(np.int64)

    # ------------------------------------------------------------------ training
    def uses_fused(self, batch_size: int = 1) -> bool:
        """Whether ``fit`` at this batch size runs the compiled kernel.

        ``"auto"`` picks it when available, unless the model is wide and the step large
        (``TORCH_MIN_WIDTH``, ``TORCH_MIN_STEP_MACS``), where one-thread torch is faster.
        ``"fused"`` always picks it.
        """
        if self.backend == "torch":
            return False
        from recourse_ray.models import _fused

        if self.backend == "fused" and not _fused.AVAILABLE:
            raise RuntimeError(f"The fused training backend is unavailable: {_fused.UNAVAILABLE_REASON}")
        if self.backend == "auto" and max(self.hidden, default=0) >= TORCH_MIN_WIDTH:
            step_macs = batch_size * self.n_members * n_params(self.layer_sizes)
            return _fused.AVAILABLE and step_macs < TORCH_MIN_STEP_MACS
        return _fused.AVAILABLE

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
    ) -> np.ndarray:
        """Continue training from the current weights with a fresh Adam state (SPEC §2).

        Mini-batch Adam on binary cross-entropy with logits; every member is trained on
        its own shuffle of the rows in every epoch. Both backends consume the same
        random draws from ``seed``: one permutation per member and epoch, then one
        dropout seed per member.

        Args:
            X: (n, d) features. y: (n,) labels in {0, 1}.
            epochs: passes over the data. batch_size: rows per step (last batch may be smaller).
            seed: int or numpy Generator. lr: Adam learning rate.
            device: torch device to train on. None or ``"cpu"``: the usual backend choice.
                Any other device forces the torch path, trains a copy of the weights
                there and copies the result back into ``params`` in place.

        Returns:
            (n_members, epochs) float64: mean batch loss of each epoch (computed before
            each step's update).
        """
        X, yf = _check_training_args(X, y, epochs, batch_size, lr, self.input_dim)
        dev = None if device is None else torch.device(device)
        if dev is not None and dev.type == "cpu":
            dev = None
        rng = as_rng(seed)
        n = X.shape[0]
        orders = np.empty((self.n_members, epochs, n), dtype=np.int64)
        for m in range(self.n_members):
            for e in range(epochs):
                orders[m, e] = rng.permutation(n)
        dropout_seeds = np.array([spawn_seed(rng) for _ in range(self.n_members)], dtype=np.uint64)
        if epochs == 0:
            losses = np.zeros((self.n_members, 0))
        elif dev is None and self.uses_fused(min(int(batch_size), n)):
            from recourse_ray.models import _fused

            losses = _fused.train_epochs(
                self.params.numpy(),
                np.asarray(self.layer_sizes, dtype=np.int64),
                X,
                yf,
                orders,
                int(batch_size),
                float(lr),
                self.dropout,
                dropout_seeds,
            )
        else:
            losses = self._fit_torch(X, yf, orders, int(batch_size), float(lr), dropout_seeds, device=dev)
        self.last_fit_losses_ = losses
        return losses

    def _fit_torch(self, X, y, orders, batch_size, lr, dropout_seeds, device: torch.device | None = None) -> np.ndarray:
        """Reference training path: eager torch, ``torch.optim.Adam`` on the flat block.

        With ``device`` (not CPU) it trains a copy of ``params`` there (dropout masks are
        still drawn on CPU) and copies the result back into ``params`` in place.
        """
        M, epochs, n = orders.shape
        Xt, yt = torch.from_numpy(X), torch.from_numpy(y)
        orders_t = torch.from_numpy(orders)
        if device is not None:
            Xt, yt, orders_t = Xt.to(device), yt.to(device), orders_t.to(device)
        gen = torch_generator(int(dropout_seeds[0]))
        keep = 1.0 - self.dropout
        params = self.params if device is None else self.params.detach().to(device, copy=True)
        params.requires_grad_(True)
        try:
            optimizer = torch.optim.Adam([params], lr=lr, betas=ADAM_BETAS, eps=ADAM_EPS)
            losses = np.zeros((M, epochs))
            n_batches = -(-n // batch_size)
            for e in range(epochs):
                for start in range(0, n, batch_size):
                    idx = orders_t[:, e, start : start + batch_size]  # (M, B)
                    xb, yb = Xt[idx], yt[idx]
                    masks = None
                    if self.dropout > 0:
                        masks = [
                            (torch.rand(M, idx.shape[1], h, generator=gen) < keep).float() / keep
                            for h in self.hidden
                        ]
                        if device is not None:
                            masks = [mask.to(device) for mask in masks]
                    z = self._forward(xb, params, masks)  # (M, B)
                    per_member = torch.nn.functional.binary_cross_entropy_with_logits(
                        z, yb, reduction="none"
                    ).mean(dim=1)
                    optimizer.zero_grad(set_to_none=False)
                    per_member.sum().backward()
                    optimizer.step()
                    losses[:, e] += per_member.detach().cpu().numpy()
                losses[:, e] /= n_batches
        finally:
            params.requires_grad_(False)
            params.grad = None
        if device is not None:
            with torch.no_grad():
                self.params.copy_(params.detach().cpu())
        return losses
