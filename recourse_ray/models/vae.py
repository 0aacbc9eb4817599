"""The variational autoencoder behind latent-space counterfactual search (SPEC §3).

REVISE, CLUE and every generator searched "in latent space" move a latent code ``z``
and score the decoded point ``decode(z)``; the search starts at the encoder mean of the
factual. The simulation retrains the VAE on the current training features after every
round (10 epochs), so ``fit`` continues from the current weights with a fresh Adam state,
like the classifiers.

Architecture (Kingma & Welling 2014; the reference's ``GenerativeModels.VAE``):
encoder ``input_dim -> hidden (ReLU) -> (mu, logvar)``, decoder
``latent_dim -> hidden (ReLU) -> input_dim``. The loss is a negative ELBO: the squared
reconstruction error of each feature divided by that feature's variance in the data of
the first ``fit`` (a Gaussian likelihood whose scale follows the data, fixed thereafter
so that retraining keeps one latent geometry), summed over features, plus ``kl_weight``
times the KL divergence to the standard normal, averaged over the batch.

Why not a unit-variance likelihood with the full KL (the textbook default)? On the
study's synthetic sets (features with std ~0.5) that VAE collapses: the KL costs more
than the information it would carry, the decoder returns the data mean (relative
reconstruction RMSE 0.8-1.0) and REVISE finds no valid counterfactual at all (measured
validity 0.0 on ``overlapping``). With scaled reconstruction and ``kl_weight = 0.1`` the
relative RMSE is ~0.08 and REVISE's validity 0.86-0.98 (docs/semantics.md). The
reference compared the latent sample with the input in its reconstruction term and added
weight decay on the decoder; we reproduce neither.

Training has two paths with the same semantics: a compiled kernel
(``_fused_vae.train_vae_epochs``, numba; the default when numba is available) and eager
torch autograd (the reference). Both consume the same row orders and reparameterisation
noise, drawn from the fit's numpy Generator, so they agree to float32 rounding
(docs/fused_training.md, "VAE"). ``fit(..., device=...)`` trains the torch path on that
device (the fused path runs on the CPU), like the classifiers' ``fit``.
"""

from __future__ import annotations

import copy
import math
from typing import Any, Literal

import numpy as np
import torch
import torch.nn.functional as F

from recourse_ray._config import check_int, check_real
from recourse_ray._rng import as_rng
from recourse_ray.models._training import (
    ADAM_BETAS,
    ADAM_EPS,
    BACKENDS,
    backend_problem,
    feature_problems,
    schedule_problems,
    training_device,
)

__all__ = ["VAE", "BACKENDS"]

# Parameter tensors in a fixed order: name -> (rows, cols) given (d, h, l); cols None for biases.
_LAYOUT = (
    ("enc_w", "h", "d"),
    ("enc_b", "h", None),
    ("mu_w", "l", "h"),
    ("mu_b", "l", None),
    ("logvar_w", "l", "h"),
    ("logvar_b", "l", None),
    ("dec_w", "h", "l"),
    ("dec_b", "h", None),
    ("out_w", "d", "h"),
    ("out_b", "d", None),
)


class VAE:
    """Variational autoencoder with one hidden layer in the encoder and the decoder.

    Args:
        input_dim: number of features ``d``.
        latent_dim: size of the latent code (2 for the synthetic data, 8 for real-world
            data in the study).
        hidden: width of the hidden layer of the encoder and of the decoder.
        kl_weight: weight of the KL term of the loss (> 0).
        seed: int or numpy Generator for the initial weights (Glorot-uniform weights,
            zero biases, as Flux initialises them).
        backend: training path of :meth:`fit`: ``"fused"`` (the compiled kernel of
            ``_fused_vae``), ``"torch"`` (eager torch autograd, the reference) or
            ``"auto"`` (the default: fused when numba is available, torch otherwise).

    Attributes:
        flat: (n_params,) float32 tensor holding every weight (no gradient outside ``fit``).
        params: name -> view of ``flat`` (``enc_w (hidden, input_dim)``, ``enc_b``, ``mu_w``,
            ``mu_b``, ``logvar_w``, ``logvar_b``, ``dec_w``, ``dec_b``, ``out_w``, ``out_b``).
        last_fit_losses_: per-epoch losses of the latest ``fit`` call.

    Raises:
        ValueError: an argument out of its range (every problem listed).
    """

    def __init__(
        self,
        input_dim: int,
        *,
        latent_dim: int = 2,
        hidden: int = 32,
        kl_weight: float = 0.1,
        seed: int | np.random.Generator,
        backend: str = "auto",
    ) -> None:
        problems = [
            p
            for p in (
                check_int(input_dim, "input_dim", "VAE", 1),
                check_int(latent_dim, "latent_dim", "VAE", 1),
                check_int(hidden, "hidden", "VAE", 1),
                check_real(kl_weight, "kl_weight", "VAE", 0.0, None, low_open=True),
                backend_problem(backend, "VAE"),
            )
            if p
        ]
        if problems:
            raise ValueError(" ".join(problems))
        self.input_dim = int(input_dim)
        self.latent_dim = int(latent_dim)
        self.hidden = int(hidden)
        self.kl_weight = float(kl_weight)
        self.backend = backend
        # Per-feature std of the data of the first fit (None until then): the scale of the
        # reconstruction likelihood.
        self.scale_: torch.Tensor | None = None
        self.flat = torch.zeros(0)
        self.params: dict[str, torch.Tensor] = {}
        self.last_fit_losses_: np.ndarray | None = None
        self.reset_parameters(seed)

    # ------------------------------------------------------------------ parameters
    def _shape(self, rows: str, cols: str | None) -> tuple[int, ...]:
        size = {"d": self.input_dim, "h": self.hidden, "l": self.latent_dim}
        return (size[rows],) if cols is None else (size[rows], size[cols])

    def _bind(self, flat: torch.Tensor) -> None:
        """Make ``flat`` the parameter block and ``params`` views into it (no copies)."""
        self.flat = flat
        self.params = {}
        offset = 0
        for name, rows, cols in _LAYOUT:
            shape = self._shape(rows, cols)
            size = math.prod(shape)
            self.params[name] = flat[offset : offset + size].view(shape)
            offset += size

    def n_params(self) -> int:
        """Size of the flat parameter block ``flat``."""
        return sum(math.prod(self._shape(r, c)) for _, r, c in _LAYOUT)

    def reset_parameters(self, seed: int | np.random.Generator) -> None:
        """Glorot-uniform weights and zero biases drawn from ``seed``."""
        rng = as_rng(seed)
        parts = []
        for _, rows, cols in _LAYOUT:
            shape = self._shape(rows, cols)
            if cols is None:
                parts.append(np.zeros(math.prod(shape), dtype=np.float32))
            else:
                limit = math.sqrt(6.0 / (shape[0] + shape[1]))
                parts.append(rng.uniform(-limit, limit, size=math.prod(shape)).astype(np.float32))
        self._bind(torch.from_numpy(np.concatenate(parts)))

    def clone(self) -> VAE:
        """An independent copy (weights copied)."""
        return copy.deepcopy(self)

    def on_device(self, device: str | torch.device) -> VAE:
        """A lightweight copy whose weights (and scale) are copies on ``device`` (for search there).

        This VAE is not changed.
        """
        dev = torch.device(device)
        new = object.__new__(type(self))
        new.__dict__.update(self.__dict__)
        new._bind(self.flat.detach().to(dev, copy=True))
        new.scale_ = None if self.scale_ is None else self.scale_.detach().to(dev, copy=True)
        new.last_fit_losses_ = None
        return new

    def __getstate__(self) -> dict[str, Any]:
        d = self.__dict__.copy()
        d.pop("params")
        d["flat"] = self.flat.detach().numpy().copy()
        return d

    def __setstate__(self, d: dict[str, Any]) -> None:
        d = d.copy()
        d.setdefault("backend", "auto")  # pickles from before the fused backend
        flat = torch.from_numpy(np.array(d.pop("flat"), dtype=np.float32))
        self.__dict__.update(d)
        self._bind(flat)

    def __deepcopy__(self, memo: dict[int, Any]) -> VAE:
        new = object.__new__(type(self))
        new.__setstate__(copy.deepcopy(self.__getstate__(), memo))
        return new

    def __repr__(self) -> str:
        return (
            f"VAE(input_dim={self.input_dim}, latent_dim={self.latent_dim}, hidden={self.hidden}, "
            f"kl_weight={self.kl_weight}, backend={self.backend!r})"
        )

    # ------------------------------------------------------------------ forward
    def encode_moments(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(N, input_dim) -> mean and log-variance of q(z|x), each (N, latent_dim)."""
        p = self.params
        h = torch.relu(F.linear(x, p["enc_w"], p["enc_b"]))
        return F.linear(h, p["mu_w"], p["mu_b"]), F.linear(h, p["logvar_w"], p["logvar_b"])

    def encode(self, x: torch.Tensor) -> torch.Tensor:
        """(N, input_dim) -> encoder mean (N, latent_dim); differentiable."""
        return self.encode_moments(x)[0]

    def decode(self, z: torch.Tensor) -> torch.Tensor:
        """(N, latent_dim) -> reconstruction (N, input_dim); differentiable in ``z``."""
        p = self.params
        h = torch.relu(F.linear(z, p["dec_w"], p["dec_b"]))
        return F.linear(h, p["out_w"], p["out_b"])

    def reconstruct(self, X: np.ndarray) -> np.ndarray:
        """decode(encode(X)) for numpy ``X`` (n, input_dim); returns float32 (n, input_dim)."""
        with torch.no_grad():
            return self.decode(self.encode(torch.as_tensor(np.asarray(X, dtype=np.float32)))).numpy()

    def loss(self, x: torch.Tensor, noise: torch.Tensor) -> torch.Tensor:
        """Negative ELBO of batch ``x`` (B, d) with reparameterisation noise (B, latent_dim)."""
        mu, logvar = self.encode_moments(x)
        z = mu + torch.exp(0.5 * logvar) * noise
        error = self.decode(z) - x
        if self.scale_ is not None:
            error = error / self.scale_
        reconstruction = error.pow(2).sum(dim=1)
        kl = 0.5 * (torch.exp(logvar) + mu.pow(2) - 1.0 - logvar).sum(dim=1)
        return (reconstruction + self.kl_weight * kl).mean()

    # ------------------------------------------------------------------ training
    def training_backend(self) -> Literal["fused", "torch"]:
        """``"fused"`` or ``"torch"``: the path :meth:`fit` takes.

        ``"auto"`` (the default) picks the compiled kernel whenever numba is available,
        ``"fused"`` always, ``"torch"`` never. The device ``fit`` is given does not enter:
        the fused path runs on the CPU whatever it is.

        Raises:
            RuntimeError: ``backend="fused"`` but numba is unavailable (the reason included).
        """
        if self.backend == "torch":
            return "torch"
        # Imported on first use: it imports numba, which most commands never need.
        from recourse_ray.models import _fused_vae

        if self.backend == "fused" and not _fused_vae.AVAILABLE:
            raise RuntimeError(f"The fused training backend is unavailable: {_fused_vae.UNAVAILABLE_REASON}")
        return "fused" if _fused_vae.AVAILABLE else "torch"

    def fit(
        self,
        X: np.ndarray,
        *,
        epochs: int,
        batch_size: int = 50,
        seed: int | np.random.Generator,
        lr: float = 1e-3,
        device: str | torch.device | None = None,
    ) -> np.ndarray:
        """Continue training from the current weights with a fresh Adam state.

        All randomness comes from one numpy Generator ``rng = as_rng(seed)``, drawn in this
        order, epoch by epoch: ``order = rng.permutation(n)``, then
        ``eps = rng.standard_normal((n, latent_dim), dtype=np.float32)``. The batch at
        positions ``order[s:s+B]`` uses the noise ``eps[s:s+B]`` (noise follows the
        position in the shuffled order, not the row). All draws happen before training,
        so both backends consume identical batches and noise. No global RNG is used.
        The backend is :meth:`training_backend`'s choice.

        Args:
            X: (n_samples, input_dim) features.
            epochs: passes over the data (>= 0).
            batch_size: rows per Adam step (the last batch of an epoch may be smaller and
                is averaged over its own size).
            seed: int or numpy Generator.
            lr: Adam learning rate.
            device: torch device of the torch path. The fused path runs on the CPU and
                ignores it. None or a CPU device: the torch path trains ``flat`` in place;
                any other device: it trains a copy there and copies the result back into
                ``flat`` in place.

        Returns:
            (epochs,) float64: mean batch loss of each epoch (computed before each update).

        Raises:
            ValueError: malformed data or arguments (every problem listed), or a bad device.
            RuntimeError: ``backend="fused"`` without numba (nothing is changed).
        """
        X = np.array(X, dtype=np.float32)  # a private copy: inputs may be read-only (Ray object store)
        problems = feature_problems(X, self.input_dim, "VAE.fit") + schedule_problems(epochs, batch_size, lr, "VAE.fit")
        if problems:
            raise ValueError(" ".join(problems))
        dev = training_device(device, "VAE.fit")
        fused = self.training_backend() == "fused"
        orders, noise = self._draw_epochs(as_rng(seed), int(epochs), X.shape[0])
        if self.scale_ is None:
            std = X.std(axis=0)
            self.scale_ = torch.from_numpy(np.where(std > 0, std, 1.0).astype(np.float32))
        if fused:
            losses = self._fit_fused(X, orders, noise, int(batch_size), float(lr))
        else:
            losses = self._fit_torch(X, orders, noise, int(batch_size), float(lr), device=dev)
        self.last_fit_losses_ = losses
        return losses

    def _draw_epochs(self, rng: np.random.Generator, epochs: int, n: int) -> tuple[np.ndarray, np.ndarray]:
        """Every random draw of one ``fit``, epoch by epoch (the order :meth:`fit` documents).

        Returns:
            orders: (epochs, n) int64 row orders; noise: (epochs, n, latent_dim) float32
            reparameterisation noise, row ``s`` for position ``s`` of the epoch's order.
        """
        orders = np.empty((epochs, n), dtype=np.int64)
        noise = np.empty((epochs, n, self.latent_dim), dtype=np.float32)
        for epoch in range(epochs):
            orders[epoch] = rng.permutation(n)
            noise[epoch] = rng.standard_normal((n, self.latent_dim), dtype=np.float32)
        return orders, noise

    def _fit_fused(
        self, X: np.ndarray, orders: np.ndarray, noise: np.ndarray, batch_size: int, lr: float
    ) -> np.ndarray:
        """The compiled path: ``_fused_vae.train_vae_epochs`` on ``flat``, in place.

        Args: as :meth:`_fit_torch`. Returns (epochs,) float64 losses.
        """
        from recourse_ray.models import _fused_vae

        dims = np.array([self.input_dim, self.hidden, self.latent_dim], dtype=np.int64)
        # ``self.flat`` shares its memory with this array: the kernel updates the
        # weights (and every view in ``params``) in place.
        return _fused_vae.train_vae_epochs(
            self.flat.detach().numpy(), dims, X, orders, noise, self.scale_.numpy(), self.kl_weight, batch_size, lr
        )

    def _fit_torch(
        self,
        X: np.ndarray,
        orders: np.ndarray,
        noise: np.ndarray,
        batch_size: int,
        lr: float,
        device: torch.device | None = None,
    ) -> np.ndarray:
        """The reference training path: eager torch autograd, Adam by hand on ``flat``.

        Args:
            X: (n, d) float32. orders: (epochs, n) int64. noise: (epochs, n, latent_dim)
                float32, as drawn by :meth:`fit`. batch_size: rows per step. lr: Adam
                learning rate.
            device: None trains ``flat`` itself; a device trains an :meth:`on_device` copy
                there and copies its weights back into ``flat`` in place.

        Returns:
            (epochs,) float64 losses.
        """
        if device is None:
            return self._adam_loop(X, orders, noise, batch_size, lr)
        moved = self.on_device(device)
        losses = moved._adam_loop(X, orders, noise, batch_size, lr, device=device)
        with torch.no_grad():
            self.flat.copy_(moved.flat.detach().cpu())
        return losses

    def _adam_loop(
        self,
        X: np.ndarray,
        orders: np.ndarray,
        noise: np.ndarray,
        batch_size: int,
        lr: float,
        device: torch.device | None = None,
    ) -> np.ndarray:
        """Adam (Kingma & Ba 2015) with torch autograd on this VAE's ``flat``, where it lives.

        Args: as :meth:`_fit_torch`; ``device`` is where ``flat`` is (the data is moved
        there; None: the CPU). Returns (epochs,) float64 losses.
        """
        n = X.shape[0]
        Xt = torch.from_numpy(X)
        if device is not None:
            Xt = Xt.to(device)
        losses = np.zeros(orders.shape[0])
        # torch.optim.Adam's update formula on the one flat parameter block, with a fresh
        # state per call. One fused update instead of ten per-tensor ones halves the cost
        # of a step at these sizes.
        flat = self.flat
        m1 = torch.zeros_like(flat)
        m2 = torch.zeros_like(flat)
        beta1, beta2 = ADAM_BETAS
        step = 0
        flat.requires_grad_(True)
        self._bind(flat)  # views taken after requires_grad, so the loss reaches ``flat``
        try:
            for epoch in range(orders.shape[0]):
                order = torch.from_numpy(orders[epoch])
                eps = torch.from_numpy(noise[epoch])
                if device is not None:
                    order, eps = order.to(device), eps.to(device)
                total, n_batches = 0.0, 0
                for start in range(0, n, batch_size):
                    xb = Xt[order[start : start + batch_size]]
                    loss = self.loss(xb, eps[start : start + batch_size])
                    (grad,) = torch.autograd.grad(loss, flat)
                    step += 1
                    with torch.no_grad():
                        m1.mul_(beta1).add_(grad, alpha=1.0 - beta1)
                        m2.mul_(beta2).addcmul_(grad, grad, value=1.0 - beta2)
                        denom = (m2.sqrt() / math.sqrt(1.0 - beta2**step)).add_(ADAM_EPS)
                        flat.addcdiv_(m1, denom, value=-lr / (1.0 - beta1**step))
                    total += float(loss.detach())
                    n_batches += 1
                losses[epoch] = total / n_batches
        finally:
            flat.requires_grad_(False)
            self._bind(flat)
        return losses
