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
relative RMSE is ~0.08 and REVISE's validity 0.86-0.98 (docs/semantics.md).

``objective="reference"`` trains the VAE of the reference instead
(CounterfactualExplanations.jl 0.1.4, ``GenerativeModels.VAE``): the encoder's second
head is log sigma (not log-variance); the batch loss is the summed squared error of
``decode(z)`` against ``x`` divided by the batch's rows, plus the full KL divergence
(also summed and divided by the rows), plus ``0.01`` times the sum of squares of every
decoder parameter (weights and biases); and ``keep_optimizer=True`` keeps one Adam state
(moments and step count) across all ``fit`` calls, as the reference keeps its optimizer
in the model. Each part is its own option (``kl_weight``, ``decoder_weight_decay``,
``keep_optimizer``), see :class:`VAE`. That VAE collapses on some data (the decoder
returns nearly the data mean); every ``fit`` records the reconstruction error and the
spread of the decoded training data (``reconstruction_error_``, ``decoded_spread_``,
:attr:`VAE.collapsed`) so that a collapse is visible, and logs a warning when one starts.

Training has two paths with the same semantics: a compiled kernel
(``_fused_vae.train_vae_epochs``, numba; the default when numba is available) and eager
torch autograd (the reference). Both consume the same row orders and reparameterisation
noise, drawn from the fit's numpy Generator, so they agree to float32 rounding
(docs/fused_training.md, "VAE"). ``fit(..., device=...)`` trains the torch path on that
device (the fused path runs on the CPU), like the classifiers' ``fit``. The kernel
implements the default objective with a fresh Adam state only: the reference objective,
decoder weight decay and a kept optimizer train with torch.
"""

from __future__ import annotations

import copy
import logging
import math
from typing import Any, Literal

import numpy as np
import torch
import torch.nn.functional as F

from recourse_ray._config import check_int, check_real, param_message
from recourse_ray._rng import as_rng
from recourse_ray.models._training import (
    ADAM_BETAS,
    ADAM_EPS,
    BACKENDS,
    backend_problem,
    bool_problem,
    feature_problems,
    schedule_problems,
    training_device,
)

__all__ = ["VAE", "BACKENDS", "OBJECTIVES", "COLLAPSE_RATIO"]

logger = logging.getLogger(__name__)

#: Training objectives: ``"scaled"`` (this project's default, see the module docstring)
#: and ``"reference"`` (CounterfactualExplanations.jl 0.1.4's VAE).
OBJECTIVES = ("scaled", "reference")
#: Defaults that follow the objective: (KL weight, decoder weight decay).
_OBJECTIVE_DEFAULTS = {"scaled": (0.1, 0.0), "reference": (1.0, 0.01)}
#: A fit counts as collapsed when, in every feature that varies in the data, the spread
#: of the decoded training data is below this share of the data's own spread.
COLLAPSE_RATIO = 0.1
#: The decoder's parameters, the ones the reference's weight decay covers (weights and
#: biases: Flux.params of its decoder); they are the last entries of _LAYOUT.
_DECODER = ("dec_w", "dec_b", "out_w", "out_b")

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
        kl_weight: weight of the KL term of the loss (> 0); None (the default): 0.1 for
            the ``"scaled"`` objective, 1.0 (the full KL) for ``"reference"``.
        seed: int or numpy Generator for the initial weights (Glorot-uniform weights,
            zero biases, as Flux initialises them).
        backend: training path of :meth:`fit`: ``"fused"`` (the compiled kernel of
            ``_fused_vae``), ``"torch"`` (eager torch autograd, the reference) or
            ``"auto"`` (the default: fused when numba is available and the kernel
            implements the options, torch otherwise).
        objective: ``"scaled"`` (the default): per-feature scaled squared error, averaged
            over the batch's rows with the weighted KL, the encoder's second head is the
            log-variance. ``"reference"``: the loss of CounterfactualExplanations.jl
            0.1.4, ``sum((decode(z) - x)^2) / B + kl_weight * KL_sum / B`` (B the
            batch's rows, no feature scaling), the second head is log sigma.
        decoder_weight_decay: ``lambda >= 0`` adding ``lambda * sum(p^2)`` over every
            decoder weight and bias to each batch loss (not divided by B); None (the
            default): 0 for ``"scaled"``, 0.01 (the reference's ``λ``) for ``"reference"``.
        keep_optimizer: False (the default): every ``fit`` starts a fresh Adam state.
            True: one Adam state (both moments and the step count of the bias
            correction) is kept from ``fit`` to ``fit``, as the reference keeps its
            ``Adam`` in the model across pretraining and every retraining.

    The fused kernel implements ``objective="scaled"`` without weight decay and with a
    fresh optimizer; any other choice trains with torch (``backend="fused"`` then
    raises).

    Attributes:
        flat: (n_params,) float32 tensor holding every weight (no gradient outside ``fit``).
        params: name -> view of ``flat`` (``enc_w (hidden, input_dim)``, ``enc_b``, ``mu_w``,
            ``mu_b``, ``logvar_w``, ``logvar_b``, ``dec_w``, ``dec_b``, ``out_w``, ``out_b``).
            With the reference objective ``logvar_w`` / ``logvar_b`` are the log-sigma head.
        kl_weight / decoder_weight_decay: the resolved weights (floats).
        last_fit_losses_: per-epoch losses of the latest ``fit`` call.
        optimizer_state_: with ``keep_optimizer``, after a fit: ``{"exp_avg", "exp_avg_sq"}``
            (n_params,) float32 tensors and ``"step"`` (int, Adam steps taken so far);
            None otherwise.
        reconstruction_error_: after each fit, the mean over rows and features of
            ``(decode(encode(X)) - X)^2`` on the fit's data (float).
        decoded_spread_ / data_spread_: after each fit, (input_dim,) float64 standard
            deviation over the fit's rows of ``decode(encode(X))`` / of ``X``, per feature
            (see :attr:`collapsed`).

    Raises:
        ValueError: an argument out of its range (every problem listed).
    """

    def __init__(
        self,
        input_dim: int,
        *,
        latent_dim: int = 2,
        hidden: int = 32,
        kl_weight: float | None = None,
        seed: int | np.random.Generator,
        backend: str = "auto",
        objective: str = "scaled",
        decoder_weight_decay: float | None = None,
        keep_optimizer: bool = False,
    ) -> None:
        known = isinstance(objective, str) and objective in OBJECTIVES
        objective_problem = None
        if not known:
            expected = "one of " + ", ".join(map(repr, OBJECTIVES))
            objective_problem = param_message("objective", "VAE", expected, objective)
        default_kl, default_decay = _OBJECTIVE_DEFAULTS[objective if known else "scaled"]
        kl_weight = default_kl if kl_weight is None else kl_weight
        decoder_weight_decay = default_decay if decoder_weight_decay is None else decoder_weight_decay
        problems = [
            p
            for p in (
                check_int(input_dim, "input_dim", "VAE", 1),
                check_int(latent_dim, "latent_dim", "VAE", 1),
                check_int(hidden, "hidden", "VAE", 1),
                check_real(kl_weight, "kl_weight", "VAE", 0.0, None, low_open=True),
                backend_problem(backend, "VAE"),
                objective_problem,
                check_real(decoder_weight_decay, "decoder_weight_decay", "VAE", 0.0, None),
                bool_problem(keep_optimizer, "keep_optimizer", "VAE"),
            )
            if p
        ]
        if not problems and backend == "fused" and _needs_torch(objective, float(decoder_weight_decay), keep_optimizer):
            problems.append(
                param_message(
                    "backend",
                    "VAE",
                    "'auto' or 'torch' when objective='reference', decoder_weight_decay > 0 or keep_optimizer=True "
                    "(the fused kernel implements the default objective with a fresh optimizer only)",
                    backend,
                )
            )
        if problems:
            raise ValueError(" ".join(problems))
        self.input_dim = int(input_dim)
        self.latent_dim = int(latent_dim)
        self.hidden = int(hidden)
        self.kl_weight = float(kl_weight)
        self.backend = backend
        self.objective = objective
        self.decoder_weight_decay = float(decoder_weight_decay)
        self.keep_optimizer = bool(keep_optimizer)
        self.optimizer_state_: dict[str, Any] | None = None
        self.reconstruction_error_: float | None = None
        self.decoded_spread_: np.ndarray | None = None
        self.data_spread_: np.ndarray | None = None
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
        """Glorot-uniform weights and zero biases drawn from ``seed`` (and no kept Adam state)."""
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
        self.optimizer_state_ = None

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
        new.optimizer_state_ = _state_to(self.optimizer_state_, dev)
        new.last_fit_losses_ = None
        return new

    def __getstate__(self) -> dict[str, Any]:
        d = self.__dict__.copy()
        d.pop("params")
        d["flat"] = self.flat.detach().numpy().copy()
        state = self.optimizer_state_
        if state is not None:
            d["optimizer_state_"] = {
                "exp_avg": state["exp_avg"].detach().cpu().numpy().copy(),
                "exp_avg_sq": state["exp_avg_sq"].detach().cpu().numpy().copy(),
                "step": int(state["step"]),
            }
        return d

    def __setstate__(self, d: dict[str, Any]) -> None:
        d = d.copy()
        # Pickles from before an option existed get its default.
        d.setdefault("backend", "auto")
        d.setdefault("objective", "scaled")
        d.setdefault("decoder_weight_decay", 0.0)
        d.setdefault("keep_optimizer", False)
        for name in ("optimizer_state_", "reconstruction_error_", "decoded_spread_", "data_spread_"):
            d.setdefault(name, None)
        flat = torch.from_numpy(np.array(d.pop("flat"), dtype=np.float32))
        state = d["optimizer_state_"]
        if state is not None:
            # Private, writable copies: unpickled arrays may be read-only (Ray's object store).
            d["optimizer_state_"] = {
                "exp_avg": torch.from_numpy(np.array(state["exp_avg"], dtype=np.float32)),
                "exp_avg_sq": torch.from_numpy(np.array(state["exp_avg_sq"], dtype=np.float32)),
                "step": int(state["step"]),
            }
        self.__dict__.update(d)
        self._bind(flat)

    def __deepcopy__(self, memo: dict[int, Any]) -> VAE:
        new = object.__new__(type(self))
        new.__setstate__(copy.deepcopy(self.__getstate__(), memo))
        return new

    def __repr__(self) -> str:
        options = ""
        if self.objective != "scaled":
            options += f", objective={self.objective!r}"
        if self.decoder_weight_decay != _OBJECTIVE_DEFAULTS[self.objective][1]:
            options += f", decoder_weight_decay={self.decoder_weight_decay}"
        if self.keep_optimizer:
            options += ", keep_optimizer=True"
        return (
            f"VAE(input_dim={self.input_dim}, latent_dim={self.latent_dim}, hidden={self.hidden}, "
            f"kl_weight={self.kl_weight}, backend={self.backend!r}{options})"
        )

    # ------------------------------------------------------------------ forward
    def encode_moments(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(N, input_dim) -> mean and log-variance of q(z|x), each (N, latent_dim); differentiable.

        q(z|x) is the diagonal Gaussian N(mean, exp(logvar)): its standard deviation is
        ``exp(0.5 * logvar)``, and ``mean + exp(0.5 * logvar) * eps`` with
        ``eps ~ N(0, I)`` is a sample (:meth:`sample_latent`), what a search that starts
        "from z ~ q(z|x)" (the reference's REVISE) needs. Whatever the objective, the
        second output is the log-variance: with ``objective="reference"`` the encoder's
        head is log sigma and is returned doubled (exactly: a float times 2).
        """
        p = self.params
        h = torch.relu(F.linear(x, p["enc_w"], p["enc_b"]))
        mean, head = F.linear(h, p["mu_w"], p["mu_b"]), F.linear(h, p["logvar_w"], p["logvar_b"])
        if self.objective == "reference":
            return mean, 2.0 * head
        return mean, head

    def sample_latent(self, x: torch.Tensor, noise: torch.Tensor) -> torch.Tensor:
        """A reparameterised sample of q(z|x): ``mean + exp(0.5 logvar) * noise``.

        Args:
            x: (N, input_dim) features. noise: (N, latent_dim) standard-normal draws
                (the caller draws them, from its own generator).

        Returns:
            (N, latent_dim) latent codes, differentiable in ``x``.
        """
        mean, logvar = self.encode_moments(x)
        return mean + torch.exp(0.5 * logvar) * noise

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
        """The objective of batch ``x`` (B, d) with reparameterisation noise (B, latent_dim).

        ``"scaled"``: mean over rows of ``sum_j ((xhat_j - x_j) / scale_j)^2 +
        kl_weight * KL`` (no scaling before the first fit). ``"reference"``:
        ``sum((xhat - x)^2) / B + kl_weight * sum(KL) / B``, as
        CounterfactualExplanations.jl 0.1.4's ``model_loss``. Either plus
        ``decoder_weight_decay * sum(p^2)`` over the decoder's weights and biases when
        that weight is > 0. ``KL = 0.5 sum_k (exp(logvar_k) + mu_k^2 - 1 - logvar_k)``,
        ``xhat = decode(mu + exp(0.5 logvar) * noise)``.
        """
        mu, logvar = self.encode_moments(x)
        z = mu + torch.exp(0.5 * logvar) * noise
        error = self.decode(z) - x
        if self.objective == "reference":
            rows = x.shape[0]
            reconstruction = error.pow(2).sum() / rows
            kl = 0.5 * (torch.exp(logvar) + mu.pow(2) - 1.0 - logvar).sum() / rows
            out = reconstruction + self.kl_weight * kl
        else:
            if self.scale_ is not None:
                error = error / self.scale_
            reconstruction = error.pow(2).sum(dim=1)
            kl = 0.5 * (torch.exp(logvar) + mu.pow(2) - 1.0 - logvar).sum(dim=1)
            out = (reconstruction + self.kl_weight * kl).mean()
        if self.decoder_weight_decay > 0:
            # The decoder's tensors end the flat block (_LAYOUT): one slice covers them all.
            decoder = self.flat[self.n_params() - self._decoder_size() :]
            out = out + self.decoder_weight_decay * decoder.pow(2).sum()
        return out

    def _decoder_size(self) -> int:
        """Entries of the decoder's tensors (``_DECODER``, the last ones of ``flat``)."""
        return sum(math.prod(self._shape(r, c)) for name, r, c in _LAYOUT if name in _DECODER)

    @property
    def collapsed(self) -> bool | None:
        """Whether the latest fit ended collapsed; None before any fit.

        Collapsed: in every feature that varies in the fit's data, the decoded spread
        (``decoded_spread_``) is below ``COLLAPSE_RATIO`` (0.1) times the data's spread
        (``data_spread_``): the decoder maps the training data to nearly one point.
        """
        if self.decoded_spread_ is None or self.data_spread_ is None:
            return None
        varies = self.data_spread_ > 0
        if not varies.any():
            return False
        ratio = self.decoded_spread_[varies] / self.data_spread_[varies]
        return bool(ratio.max() < COLLAPSE_RATIO)

    # ------------------------------------------------------------------ training
    def training_backend(self) -> Literal["fused", "torch"]:
        """``"fused"`` or ``"torch"``: the path :meth:`fit` takes.

        ``"auto"`` (the default) picks the compiled kernel whenever numba is available
        and the kernel implements the options (the default objective, no decoder weight
        decay, a fresh optimizer), ``"fused"`` always, ``"torch"`` never. The device
        ``fit`` is given does not enter: the fused path runs on the CPU whatever it is.

        Raises:
            RuntimeError: ``backend="fused"`` but numba is unavailable (the reason included).
        """
        if self.backend == "torch" or _needs_torch(self.objective, self.decoder_weight_decay, self.keep_optimizer):
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
        """Continue training from the current weights.

        Adam starts from a fresh state, or, with ``keep_optimizer``, from the state the
        previous ``fit`` left (``optimizer_state_``). All randomness comes from one numpy
        Generator ``rng = as_rng(seed)``, drawn in this order, epoch by epoch:
        ``order = rng.permutation(n)``, then ``eps = rng.standard_normal((n, latent_dim),
        dtype=np.float32)``. The batch at positions ``order[s:s+B]`` uses the noise
        ``eps[s:s+B]`` (noise follows the position in the shuffled order, not the row).
        All draws happen before training, so both backends consume identical batches and
        noise. No global RNG is used. The backend is :meth:`training_backend`'s choice.

        After training, ``reconstruction_error_``, ``decoded_spread_`` and
        ``data_spread_`` describe the fit on ``X`` (also for ``epochs=0``); a warning is
        logged when the fit ends :attr:`collapsed` and the previous one did not.

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
        if self.scale_ is None and self.objective == "scaled":
            std = X.std(axis=0)
            self.scale_ = torch.from_numpy(np.where(std > 0, std, 1.0).astype(np.float32))
        if fused:
            losses = self._fit_fused(X, orders, noise, int(batch_size), float(lr))
        else:
            losses = self._fit_torch(X, orders, noise, int(batch_size), float(lr), device=dev)
        self.last_fit_losses_ = losses
        self._record_fit_quality(X)
        return losses

    def _record_fit_quality(self, X: np.ndarray) -> None:
        """Set ``reconstruction_error_``, ``decoded_spread_``, ``data_spread_`` for ``X`` (n, d) float32."""
        was_collapsed = self.collapsed
        with torch.no_grad():
            decoded = self.decode(self.encode(torch.from_numpy(X))).numpy().astype(np.float64)
        data = X.astype(np.float64)
        self.reconstruction_error_ = float(np.mean((decoded - data) ** 2))
        self.decoded_spread_ = decoded.std(axis=0)
        self.data_spread_ = data.std(axis=0)
        if self.collapsed and not was_collapsed:
            logger.warning(
                "The VAE collapsed: the decoded training data spread %s per feature against the data's %s "
                "(reconstruction MSE %.4g); latent-space search will find few distinct points.",
                np.array2string(self.decoded_spread_, precision=3),
                np.array2string(self.data_spread_, precision=3),
                self.reconstruction_error_,
            )

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
        kept = _state_to(self.optimizer_state_, device or torch.device("cpu")) if self.keep_optimizer else None
        if device is None:
            losses, state = self._adam_loop(X, orders, noise, batch_size, lr, state=kept)
        else:
            moved = self.on_device(device)
            losses, state = moved._adam_loop(X, orders, noise, batch_size, lr, device=device, state=kept)
            with torch.no_grad():
                self.flat.copy_(moved.flat.detach().cpu())
        if self.keep_optimizer:
            self.optimizer_state_ = _state_to(state, torch.device("cpu"))
        return losses

    def _adam_loop(
        self,
        X: np.ndarray,
        orders: np.ndarray,
        noise: np.ndarray,
        batch_size: int,
        lr: float,
        device: torch.device | None = None,
        state: dict[str, Any] | None = None,
    ) -> tuple[np.ndarray, dict[str, Any]]:
        """Adam (Kingma & Ba 2015) with torch autograd on this VAE's ``flat``, where it lives.

        Args: as :meth:`_fit_torch`; ``device`` is where ``flat`` is (the data is moved
        there; None: the CPU); ``state``: Adam's state to continue from (its tensors on
        that device, updated in place), None for a fresh one.

        Returns:
            (epochs,) float64 losses, and Adam's state after the last step
            (``{"exp_avg", "exp_avg_sq", "step"}``).
        """
        n = X.shape[0]
        Xt = torch.from_numpy(X)
        if device is not None:
            Xt = Xt.to(device)
        losses = np.zeros(orders.shape[0])
        # torch.optim.Adam's update formula on the one flat parameter block, from a fresh
        # or the given state. One fused update instead of ten per-tensor ones halves the
        # cost of a step at these sizes.
        flat = self.flat
        if state is None:
            m1 = torch.zeros_like(flat)
            m2 = torch.zeros_like(flat)
            step = 0
        else:
            m1, m2, step = state["exp_avg"], state["exp_avg_sq"], int(state["step"])
        beta1, beta2 = ADAM_BETAS
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
        return losses, {"exp_avg": m1, "exp_avg_sq": m2, "step": step}


def _needs_torch(objective: str, decoder_weight_decay: float, keep_optimizer: bool) -> bool:
    """Whether these options need the torch path (the fused kernel lacks them)."""
    return objective != "scaled" or decoder_weight_decay > 0 or bool(keep_optimizer)


def _state_to(state: dict[str, Any] | None, device: torch.device) -> dict[str, Any] | None:
    """A copy of an Adam state ``{"exp_avg", "exp_avg_sq", "step"}`` with its tensors on ``device``."""
    if state is None:
        return None
    return {
        "exp_avg": state["exp_avg"].detach().to(device, copy=True),
        "exp_avg_sq": state["exp_avg_sq"].detach().to(device, copy=True),
        "step": int(state["step"]),
    }
