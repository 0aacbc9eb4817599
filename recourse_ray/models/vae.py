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
(docs/fused_training.md, "VAE").
"""

from __future__ import annotations

import copy
import math

import numpy as np
import torch
import torch.nn.functional as F

from recourse_ray._rng import as_rng

__all__ = ["VAE", "BACKENDS"]

BACKENDS = ("auto", "fused", "torch")
ADAM_BETAS = (0.9, 0.999)
ADAM_EPS = 1e-8

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


def _check_int(name: str, value, low: int) -> str | None:
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < low:
        return f"the '{name}' parameter must be an int in the range [{low}, inf); got {value!r}"
    return None


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
                _check_int("input_dim", input_dim, 1),
                _check_int("latent_dim", latent_dim, 1),
                _check_int("hidden", hidden, 1),
            )
            if p
        ]
        if isinstance(kl_weight, bool) or not isinstance(kl_weight, (int, float)) or not (0 < kl_weight < math.inf):
            problems.append(f"the 'kl_weight' parameter must be a float > 0; got {kl_weight!r}")
        if backend not in BACKENDS:
            problems.append(f"the 'backend' parameter must be one of {', '.join(BACKENDS)}; got {backend!r}")
        if problems:
            raise ValueError("Invalid parameters for VAE: " + "; ".join(problems) + ".")
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

    def config(self) -> dict:
        return {
            "input_dim": self.input_dim,
            "latent_dim": self.latent_dim,
            "hidden": self.hidden,
            "kl_weight": self.kl_weight,
            "backend": self.backend,
        }

    def get_state(self) -> dict:
        """Configuration and weights as plain Python / numpy objects (for other processes)."""
        return {
            "config": self.config(),
            "params": {k: v.detach().numpy().copy() for k, v in self.params.items()},
            "scale": None if self.scale_ is None else self.scale_.numpy().copy(),
        }

    def set_state(self, state: dict) -> None:
        """Load weights produced by :meth:`get_state` (shapes must match)."""
        params = state["params"]
        missing = [name for name, _, _ in _LAYOUT if name not in params]
        if missing:
            raise ValueError(f"The VAE state lacks the parameters {', '.join(missing)}.")
        parts = []
        for name, rows, cols in _LAYOUT:
            value = np.asarray(params[name], dtype=np.float32)
            if value.shape != self._shape(rows, cols):
                raise ValueError(
                    f"The VAE state has {name} of shape {value.shape}; this VAE needs {self._shape(rows, cols)}."
                )
            parts.append(value.ravel())
        self._bind(torch.from_numpy(np.concatenate(parts)))
        scale = state.get("scale")
        self.scale_ = None if scale is None else torch.from_numpy(np.array(scale, dtype=np.float32))

    @classmethod
    def from_state(cls, state: dict) -> "VAE":
        vae = cls(**state["config"], seed=0)
        vae.set_state(state)
        return vae

    def clone(self) -> "VAE":
        """An independent copy (weights copied)."""
        return copy.deepcopy(self)

    def on_device(self, device: str | torch.device) -> "VAE":
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

    def __getstate__(self) -> dict:
        d = self.__dict__.copy()
        d.pop("params")
        d["flat"] = self.flat.detach().numpy().copy()
        return d

    def __setstate__(self, d: dict) -> None:
        d = d.copy()
        d.setdefault("backend", "auto")  # pickles from before the fused backend
        flat = torch.from_numpy(np.array(d.pop("flat"), dtype=np.float32))
        self.__dict__.update(d)
        self._bind(flat)

    def __deepcopy__(self, memo) -> "VAE":
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
    def uses_fused(self, backend: str | None = None) -> bool:
        """Whether ``fit`` (with this ``backend``, default ``self.backend``) runs the compiled kernel.

        Raises:
            RuntimeError: ``backend="fused"`` but numba is unavailable (the reason included).
        """
        backend = self.backend if backend is None else backend
        if backend == "torch":
            return False
        from recourse_ray.models import _fused_vae

        if backend == "fused" and not _fused_vae.AVAILABLE:
            raise RuntimeError(f"The fused training backend is unavailable: {_fused_vae.UNAVAILABLE_REASON}")
        return _fused_vae.AVAILABLE

    def fit(
        self,
        X: np.ndarray,
        *,
        epochs: int,
        batch_size: int = 50,
        seed: int | np.random.Generator,
        lr: float = 1e-3,
        backend: str | None = None,
    ) -> np.ndarray:
        """Continue training from the current weights with a fresh Adam state.

        All randomness comes from one numpy Generator ``rng = as_rng(seed)``, drawn in this
        order, epoch by epoch: ``order = rng.permutation(n)``, then
        ``eps = rng.standard_normal((n, latent_dim), dtype=np.float32)``. The batch at
        positions ``order[s:s+B]`` uses the noise ``eps[s:s+B]`` (noise follows the
        position in the shuffled order, not the row). All draws happen before training,
        so both backends consume identical batches and noise. No global RNG is used.

        Args:
            X: (n_samples, input_dim) features.
            epochs: passes over the data (>= 0).
            batch_size: rows per Adam step (the last batch of an epoch may be smaller and
                is averaged over its own size).
            seed: int or numpy Generator.
            lr: Adam learning rate.
            backend: ``"auto"``, ``"fused"`` or ``"torch"``; None uses ``self.backend``.

        Returns:
            (epochs,) float64: mean batch loss of each epoch (computed before each update).
        """
        X = np.array(X, dtype=np.float32)  # a private copy: inputs may be read-only (Ray object store)
        problems = [p for p in (_check_int("epochs", epochs, 0), _check_int("batch_size", batch_size, 1)) if p]
        if X.ndim != 2 or X.shape[1] != self.input_dim:
            problems.append(f"X must have shape (n_samples, {self.input_dim}); got {X.shape}")
        elif X.shape[0] == 0:
            problems.append("X has no rows")
        elif not np.isfinite(X).all():
            problems.append("X contains NaN or infinite values")
        if isinstance(lr, bool) or not isinstance(lr, (int, float)) or not lr > 0:
            problems.append(f"the 'lr' parameter must be a float > 0; got {lr!r}")
        if backend is not None and backend not in BACKENDS:
            problems.append(f"the 'backend' parameter must be one of {', '.join(BACKENDS)}; got {backend!r}")
        if problems:
            raise ValueError("Invalid arguments to VAE.fit: " + "; ".join(problems) + ".")
        fused = self.uses_fused(backend)
        rng = as_rng(seed)
        n, epochs, lr, batch_size = X.shape[0], int(epochs), float(lr), int(batch_size)
        orders = np.empty((epochs, n), dtype=np.int64)
        noise = np.empty((epochs, n, self.latent_dim), dtype=np.float32)
        for epoch in range(epochs):
            orders[epoch] = rng.permutation(n)
            noise[epoch] = rng.standard_normal((n, self.latent_dim), dtype=np.float32)
        if self.scale_ is None:
            std = X.std(axis=0)
            self.scale_ = torch.from_numpy(np.where(std > 0, std, 1.0).astype(np.float32))
        if fused:
            from recourse_ray.models import _fused_vae

            dims = np.array([self.input_dim, self.hidden, self.latent_dim], dtype=np.int64)
            # ``self.flat`` shares its memory with this array: the kernel updates the
            # weights (and every view in ``params``) in place.
            losses = _fused_vae.train_vae_epochs(
                self.flat.detach().numpy(), dims, X, orders, noise, self.scale_.numpy(), self.kl_weight, batch_size, lr
            )
        else:
            losses = self._fit_torch(X, orders, noise, batch_size, lr)
        self.last_fit_losses_ = losses
        return losses

    def _fit_torch(
        self, X: np.ndarray, orders: np.ndarray, noise: np.ndarray, batch_size: int, lr: float
    ) -> np.ndarray:
        """The reference training loop: eager torch autograd, Adam by hand on ``flat``.

        Args: X (n, d) float32; orders (epochs, n) int64; noise (epochs, n, latent_dim)
        float32, as drawn by :meth:`fit`. Returns (epochs,) float64 losses.
        """
        n = X.shape[0]
        Xt = torch.from_numpy(X)
        losses = np.zeros(orders.shape[0])
        # Adam (Kingma & Ba 2015) on the one flat parameter block, with torch.optim.Adam's
        # update formula; a fresh state per call. One fused update instead of ten
        # per-tensor ones halves the cost of a step at these sizes.
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
