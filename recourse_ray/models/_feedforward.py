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
from typing import Any, Literal

import numpy as np
import torch

from recourse_ray._config import check_int, check_real, param_message
from recourse_ray._rng import as_rng, spawn_seed, torch_generator
from recourse_ray.models._training import (
    ADAM_BETAS,
    ADAM_EPS,
    Found,
    backend_problem,
    check_training_args,
    training_device,
)

__all__ = ["FeedForwardClassifier", "INITS", "layer_offsets", "n_params"]

logger = logging.getLogger(__name__)

# One-thread eager torch (BLAS) overtakes the fused kernel only for wide hidden layers at
# large batches (benchmarks/RESULTS.md, "Training"): from this widest hidden layer and
# this many multiply-adds per step (rows x members x parameters), "auto" trains with torch.
TORCH_MIN_WIDTH = 128
TORCH_MIN_STEP_MACS = 2**23

#: Initial-weight schemes: ``"glorot_uniform"`` (Flux's ``Dense`` default, the study's
#: framework: weights U(-a, a) with a = sqrt(6 / (fan_in + fan_out)), zero biases) and
#: ``"torch"`` (``torch.nn.Linear``'s default: weights and biases U(-b, b) with
#: b = 1 / sqrt(fan_in)).
INITS = ("glorot_uniform", "torch")


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


class FeedForwardClassifier:
    """A binary classifier made of dense layers, with ``n_members`` independent members.

    Args:
        input_dim: number of input features.
        hidden: sizes of the hidden layers (ReLU); empty for logistic regression.
        dropout: dropout probability after every hidden activation (training only).
        n_members: ensemble size (1 for a single model).
        backend: training path: ``"fused"`` (compiled loop), ``"torch"`` (eager torch
            Adam) or ``"auto"`` (fused when the kernel is available, except for wide
            models at large batches; :meth:`training_backend`).
        seed: int or numpy Generator for the initial weights.
        init: the initial-weight scheme (:data:`INITS`): ``"glorot_uniform"`` (the
            default; Glorot-uniform weights and zero biases, the defaults of Flux's
            ``Dense``, the study's framework) or ``"torch"`` (``torch.nn.Linear``'s
            default, weights and biases uniform in +-1/sqrt(fan_in)).
        name: the registry name this model was created under (and the owner named
            in error messages).

    Raises:
        ValueError: an argument out of its range (every problem listed).
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
        init: str = "glorot_uniform",
        name: str = "feedforward",
    ) -> None:
        hidden = tuple(hidden)
        bad_hidden = any(check_int(h, "hidden", name, 1) for h in hidden)
        problems = [
            p
            for p in (
                check_int(input_dim, "input_dim", name, 1),
                param_message("hidden", name, "a list of ints >= 1", list(hidden)) if bad_hidden else None,
                check_real(dropout, "dropout", name, 0.0, 1.0, high_open=True),
                check_int(n_members, "n_members", name, 1),
                backend_problem(backend, name),
                None
                if isinstance(init, str) and init in INITS
                else param_message("init", name, "one of " + ", ".join(map(repr, INITS)), init),
            )
            if p
        ]
        if problems:
            raise ValueError(" ".join(problems))
        self.name = name
        self.input_dim = int(input_dim)
        self.hidden = tuple(int(h) for h in hidden)
        self.dropout = float(dropout)
        self.n_members = int(n_members)
        self.backend = backend
        self.init = init
        self.layer_sizes = (self.input_dim, *self.hidden, 1)
        self._offsets = layer_offsets(self.layer_sizes)
        self.params = torch.zeros(self.n_members, n_params(self.layer_sizes), dtype=torch.float32)
        self.reset_parameters(seed)
        self.last_fit_losses_: np.ndarray | None = None

    # ------------------------------------------------------------------ parameters
    def reset_parameters(self, seed: int | np.random.Generator) -> None:
        """Fresh weights of the model's ``init`` scheme, drawn independently per member.

        Draws from ``as_rng(seed)``, member by member, layer by layer: the weight matrix
        (row-major), then, for ``init="torch"`` only, the bias (Glorot biases are zero
        and draw nothing).
        """
        rng = as_rng(seed)
        block = np.zeros(self.params.shape, dtype=np.float32)
        for m in range(self.n_members):
            for w_off, b_off, fan_in, fan_out in self._offsets:
                if self.init == "torch":
                    # kaiming_uniform_(a=sqrt(5)) of nn.Linear reduces to this bound.
                    bound = 1.0 / np.sqrt(fan_in)
                    block[m, w_off:b_off] = rng.uniform(-bound, bound, size=fan_in * fan_out)
                    block[m, b_off : b_off + fan_out] = rng.uniform(-bound, bound, size=fan_out)
                else:
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

    def get_state(self) -> dict[str, Any]:
        """Weights and configuration as plain Python/numpy objects.

        Returns:
            ``{"config": config(), "params": (n_members, n_params) float32 copy}``.
        """
        return {"config": self.config(), "params": self.params.numpy().copy()}

    def set_state(self, state: dict[str, Any]) -> None:
        """Load the weights of ``state["params"]`` (n_members, n_params), as ``get_state`` gives them.

        In place: the views of ``layers()`` and the fused path stay valid.
        """
        params = np.asarray(state["params"], dtype=np.float32)
        if params.shape != tuple(self.params.shape):
            expected = f"a mapping whose 'params' have shape {tuple(self.params.shape)}"
            found = Found(f"shape {params.shape}")
            raise ValueError(param_message("state", "FeedForwardClassifier.set_state", expected, found))
        self.params.copy_(torch.from_numpy(params))

    def config(self) -> dict[str, Any]:
        """The constructor's arguments (but the seed) as plain Python objects."""
        return {
            "name": self.name,
            "input_dim": self.input_dim,
            "hidden": list(self.hidden),
            "dropout": self.dropout,
            "n_members": self.n_members,
            "backend": self.backend,
            "init": self.init,
        }

    def clone(self) -> FeedForwardClassifier:
        """An independent copy (weights copied)."""
        return copy.deepcopy(self)

    def on_device(self, device: str | torch.device) -> FeedForwardClassifier:
        """A lightweight copy whose ``params`` is a copy on ``device`` (for search there).

        The copy shares the configuration but not the weights: this model is not changed.
        """
        new = object.__new__(type(self))
        new.__dict__.update(self.__dict__)
        new.params = self.params.detach().to(torch.device(device), copy=True)
        new.last_fit_losses_ = None
        return new

    def __getstate__(self) -> dict[str, Any]:
        d = self.__dict__.copy()
        d["params"] = self.params.numpy().copy()
        return d

    def __setstate__(self, d: dict[str, Any]) -> None:
        d = d.copy()
        # Always a private, writable copy: unpickled arrays may live in read-only shared memory.
        d["params"] = torch.from_numpy(np.array(d["params"], dtype=np.float32, order="C"))
        d.setdefault("init", "glorot_uniform")  # pickles from before the option
        self.__dict__.update(d)

    def __deepcopy__(self, memo: dict[int, Any]) -> FeedForwardClassifier:
        new = object.__new__(type(self))
        new.__setstate__(copy.deepcopy(self.__getstate__(), memo))
        return new

    def __repr__(self) -> str:
        return (
            f"FeedForwardClassifier(name={self.name!r}, layers={list(self.layer_sizes)}, "
            f"dropout={self.dropout}, n_members={self.n_members}, backend={self.backend!r}"
            + ("" if self.init == "glorot_uniform" else f", init={self.init!r}")
            + ")"
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
    def training_backend(self, batch_size: int = 1) -> Literal["fused", "torch"]:
        """``"fused"`` or ``"torch"``: the path ``fit`` takes for steps of ``batch_size`` rows.

        ``fit`` asks with its batch size capped at the number of rows. ``"auto"`` picks the
        compiled kernel when it is available, unless the model is wide and the step large
        (``TORCH_MIN_WIDTH``, ``TORCH_MIN_STEP_MACS``), where one-thread torch is faster;
        ``"fused"`` always picks it, ``"torch"`` never. The device ``fit`` is given does
        not enter: the fused path runs on the CPU whatever it is.

        Raises:
            RuntimeError: ``backend="fused"`` but numba is unavailable (the reason included).
        """
        if self.backend == "torch":
            return "torch"
        # Imported on first use: it imports numba, which most commands never need.
        from recourse_ray.models import _fused

        if self.backend == "fused" and not _fused.AVAILABLE:
            raise RuntimeError(f"The fused training backend is unavailable: {_fused.UNAVAILABLE_REASON}")
        fused = _fused.AVAILABLE
        if self.backend == "auto" and max(self.hidden, default=0) >= TORCH_MIN_WIDTH:
            step_macs = batch_size * self.n_members * n_params(self.layer_sizes)
            fused = _fused.AVAILABLE and step_macs < TORCH_MIN_STEP_MACS
        return "fused" if fused else "torch"

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
        """Continue training from the current weights with a fresh Adam state (SPEC §2).

        Mini-batch Adam on binary cross-entropy with logits; every member is trained on
        its own shuffle of the rows in every epoch (``shuffle=False``: every member on
        the rows in index order, every epoch, as the reference does). Both backends
        consume the same random draws from ``seed``: one permutation per member and
        epoch (none without shuffling), then one dropout seed per member. The backend is
        :meth:`training_backend`'s choice.

        Args:
            X: (n, d) features. y: (n,) labels in {0, 1}.
            epochs: passes over the data (>= 0). batch_size: rows per step (>= 1; the
                last batch of an epoch may be smaller).
            seed: int or numpy Generator. lr: Adam learning rate (> 0).
            device: torch device of the torch path. The fused path runs on the CPU and
                ignores it. None or a CPU device: the torch path trains ``params`` in
                place; any other device: it trains a copy there and copies the result
                back into ``params`` in place.
            shuffle: True (the default): a fresh permutation of the rows per member and
                epoch. False: rows ``0, 1, ..., n - 1`` in every epoch (the reference's
                Flux loop, ``zip`` over the data's columns). Members always train
                independently, each with its own Adam state, as the reference trains
                its ensemble's networks one after another with a fresh optimizer each.

        Returns:
            (n_members, epochs) float64: mean batch loss of each epoch (computed before
            each step's update).

        Raises:
            ValueError: malformed data or arguments (every problem listed).
            RuntimeError: ``backend="fused"`` without numba.
        """
        owner = "FeedForwardClassifier.fit"
        X, yf = check_training_args(
            X, y, epochs=epochs, batch_size=batch_size, lr=lr, input_dim=self.input_dim, owner=owner, shuffle=shuffle
        )
        dev = training_device(device, owner)
        orders, dropout_seeds = self._draw_epochs(as_rng(seed), int(epochs), X.shape[0], bool(shuffle))
        if epochs == 0:
            losses = np.zeros((self.n_members, 0))
        elif self.training_backend(min(int(batch_size), X.shape[0])) == "fused":
            losses = self._fit_fused(X, yf, orders, int(batch_size), float(lr), dropout_seeds)
        else:
            losses = self._fit_torch(X, yf, orders, int(batch_size), float(lr), dropout_seeds, device=dev)
        self.last_fit_losses_ = losses
        return losses

    def _draw_epochs(
        self, rng: np.random.Generator, epochs: int, n: int, shuffle: bool = True
    ) -> tuple[np.ndarray, np.ndarray]:
        """Every random draw of one ``fit``, in this order, shared by both backends.

        Returns:
            orders: (n_members, epochs, n) int64, one permutation of the rows per member
            and epoch (member-major), or ``arange(n)`` everywhere when not ``shuffle``
            (nothing drawn); dropout_seeds: (n_members,) uint64, one per member.
        """
        orders = np.empty((self.n_members, epochs, n), dtype=np.int64)
        if shuffle:
            for m in range(self.n_members):
                for e in range(epochs):
                    orders[m, e] = rng.permutation(n)
        else:
            orders[...] = np.arange(n, dtype=np.int64)
        dropout_seeds = np.array([spawn_seed(rng) for _ in range(self.n_members)], dtype=np.uint64)
        return orders, dropout_seeds

    def _fit_fused(
        self, X: np.ndarray, y: np.ndarray, orders: np.ndarray, batch_size: int, lr: float, dropout_seeds: np.ndarray
    ) -> np.ndarray:
        """The compiled path: ``_fused.train_epochs`` on ``params.numpy()``, in place.

        Args: as :meth:`_fit_torch`. Returns (n_members, epochs) float64 losses.
        """
        from recourse_ray.models import _fused

        return _fused.train_epochs(
            self.params.numpy(),
            np.asarray(self.layer_sizes, dtype=np.int64),
            X,
            y,
            orders,
            batch_size,
            lr,
            self.dropout,
            dropout_seeds,
        )

    def _fit_torch(
        self,
        X: np.ndarray,
        y: np.ndarray,
        orders: np.ndarray,
        batch_size: int,
        lr: float,
        dropout_seeds: np.ndarray,
        device: torch.device | None = None,
    ) -> np.ndarray:
        """Reference training path: eager torch, ``torch.optim.Adam`` on the flat block.

        With ``device`` it trains a copy of ``params`` there (dropout masks are still
        drawn on the CPU) and copies the result back into ``params`` in place; None
        trains ``params`` itself.

        Args:
            X: (n, d) float32 features. y: (n,) float32 labels.
            orders: (n_members, epochs, n) int64 row orders. batch_size: rows per step.
            lr: Adam learning rate. dropout_seeds: (n_members,) uint64; the masks of
                every member come from one generator seeded by the first.
            device: where to train (None: in place, on the CPU).

        Returns:
            (n_members, epochs) float64 losses.
        """
        M, epochs, n = orders.shape
        Xt, yt = torch.from_numpy(X), torch.from_numpy(y)
        orders_t = torch.from_numpy(orders)
        if device is not None:
            Xt, yt, orders_t = Xt.to(device), yt.to(device), orders_t.to(device)
        gen = torch_generator(int(dropout_seeds[0]))
        params = self.params if device is None else self.params.detach().to(device, copy=True)
        params.requires_grad_(True)
        try:
            optimizer = torch.optim.Adam([params], lr=lr, betas=ADAM_BETAS, eps=ADAM_EPS)
            losses = np.zeros((M, epochs))
            n_batches = -(-n // batch_size)
            for e in range(epochs):
                for start in range(0, n, batch_size):
                    idx = orders_t[:, e, start : start + batch_size]  # (M, B)
                    masks = self._dropout_masks(gen, idx.shape[1], device)
                    z = self._forward(Xt[idx], params, masks)  # (M, B)
                    per_member = torch.nn.functional.binary_cross_entropy_with_logits(
                        z, yt[idx], reduction="none"
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

    def _dropout_masks(
        self, gen: torch.Generator, n_rows: int, device: torch.device | None
    ) -> list[torch.Tensor] | None:
        """Inverted-dropout masks of one step of the torch path: per hidden layer ``(M, n_rows, width)``.

        Drawn on the CPU from ``gen`` (so a device does not change them), then moved to
        ``device``; None without dropout.
        """
        if self.dropout <= 0:
            return None
        keep = 1.0 - self.dropout
        masks = [(torch.rand(self.n_members, n_rows, h, generator=gen) < keep).float() / keep for h in self.hidden]
        return masks if device is None else [mask.to(device) for mask in masks]
