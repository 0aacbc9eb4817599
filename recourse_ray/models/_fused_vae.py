"""Fused VAE training kernel: every epoch, batch, forward/backward pass and Adam step, compiled.

Where it sits in the flow: latent-space generators (REVISE, CLUE, ...) retrain the
study's VAE on the current training features after every round (10 epochs, batch 50).
``VAE.fit`` draws the row orders and the reparameterisation noise from its seed and,
when :data:`AVAILABLE`, hands the flat parameter block to :func:`train_vae_epochs`,
which runs the whole loop in one numba-compiled call. Eager torch spends ~1-3 ms of
dispatch overhead per step on a network whose arithmetic needs a few microseconds.

Semantics are those of the torch path of ``VAE.fit`` (the reference; see
models/vae.py): encoder ``Linear(d, h)`` + ReLU, heads ``mu``, ``logvar``
(``Linear(h, l)`` each); ``z = mu + exp(0.5 logvar) * eps``; decoder ``Linear(l, h)``
+ ReLU, ``Linear(h, d)``. Batch loss: the mean over the batch's rows of
``sum_j ((xhat_j - x_j) / scale_j)^2 + kl_weight * 0.5 * sum_k (exp(logvar_k) +
mu_k^2 - 1 - logvar_k)``; gradients by hand-written backpropagation; Adam with the
update formula of ``VAE.fit`` (torch.optim.Adam's: betas (0.9, 0.999), eps 1e-8, bias
correction, fresh state per call); the last partial batch is averaged over its own
size. Everything is float32 except the bias corrections (float64, then cast, as torch
casts Python scalars). Summation orders differ from torch's BLAS, so results agree to
float32 rounding, not bit for bit (tests/test_vae.py).

Layout: ``flat`` is the VAE's parameter block in ``_LAYOUT`` order (``enc_w (h, d)``,
``enc_b``, ``mu_w (l, h)``, ``mu_b``, ``logvar_w (l, h)``, ``logvar_b``, ``dec_w (h, l)``,
``dec_b``, ``out_w (d, h)``, ``out_b``), each weight row-major. Activations are stored
unit-major, ``(n_units, batch)``, so the forward pass and the input gradients are vector
loops over the rows of a batch; weight gradients are rank-1 updates per row, vectorised
over the longer side of each weight matrix. Every buffer is allocated once per call,
before the step loop (tests/test_vae.py counts the allocations).

The layer helpers are separate compiled functions, not inlined into the kernel: numba's
IR inlining of their ~15 call sites made the first compilation 2.6x slower (30 s
against 12 s on the shared 2-core VM) for no measurable speed-up.

The numba cache and its fallbacks (read-only package directory, unusable user cache)
are those of the classifier kernel: this module compiles through ``_numba.jit``. It
deliberately calls no jitted function of ``_fused``: numba's cache of a function is
keyed by its own source file only, so a kernel calling into another module would keep
a stale copy of that code after the other module changes.

If numba cannot be imported, ``AVAILABLE`` is False, ``UNAVAILABLE_REASON`` says why,
and the VAE trains with the torch path.
"""

from __future__ import annotations

import time

import numpy as np

from recourse_ray.models._numba import AVAILABLE, UNAVAILABLE_REASON, jit

__all__ = ["AVAILABLE", "UNAVAILABLE_REASON", "n_params", "train_vae_epochs", "warm_up"]

# torch.optim.Adam defaults (the VAE's ADAM_BETAS / ADAM_EPS).
_BETA1 = 0.9
_BETA2 = 0.999
_EPS = 1e-8


def n_params(input_dim: int, hidden: int, latent_dim: int) -> int:
    """Size of the flat parameter block of a VAE with these dimensions."""
    d, h, l = input_dim, hidden, latent_dim
    return (h * d + h) + 2 * (l * h + l) + (h * l + h) + (d * h + d)


if AVAILABLE:

    @jit
    def _linear(W, bias, inputs, outputs, nb, relu):
        """outputs[j, :nb] = bias[j] + W[j] . inputs[:, :nb] (then ReLU), as vector updates over the batch.

        Four outputs at a time share each load of an input row.
        """
        zero = np.float32(0.0)
        fan_out, fan_in = W.shape
        j = 0
        while j + 4 <= fan_out:
            o0 = outputs[j, :nb]
            o1 = outputs[j + 1, :nb]
            o2 = outputs[j + 2, :nb]
            o3 = outputs[j + 3, :nb]
            b0, b1, b2, b3 = bias[j], bias[j + 1], bias[j + 2], bias[j + 3]
            for b in range(nb):
                o0[b] = b0
                o1[b] = b1
                o2[b] = b2
                o3[b] = b3
            for i in range(fan_in):
                w0, w1, w2, w3 = W[j, i], W[j + 1, i], W[j + 2, i], W[j + 3, i]
                src = inputs[i, :nb]
                for b in range(nb):
                    x = src[b]
                    o0[b] += w0 * x
                    o1[b] += w1 * x
                    o2[b] += w2 * x
                    o3[b] += w3 * x
            j += 4
        for k in range(j, fan_out):
            o = outputs[k, :nb]
            bk = bias[k]
            for b in range(nb):
                o[b] = bk
            for i in range(fan_in):
                w = W[k, i]
                src = inputs[i, :nb]
                for b in range(nb):
                    o[b] += w * src[b]
        if relu:
            for k in range(fan_out):
                o = outputs[k, :nb]
                for b in range(nb):
                    v = o[b]
                    o[b] = v if v > zero else zero

    @jit
    def _input_grads(W, delta, out, nb, accumulate):
        """out[i, :nb] (+)= sum_j W[j, i] delta[j, :nb]: the gradient reaching a layer's inputs.

        Four inputs at a time share each load of a row of ``delta``.
        """
        fan_out, fan_in = W.shape
        zero = np.float32(0.0)
        i = 0
        while i + 4 <= fan_in:
            d0 = out[i, :nb]
            d1 = out[i + 1, :nb]
            d2 = out[i + 2, :nb]
            d3 = out[i + 3, :nb]
            if not accumulate:
                for b in range(nb):
                    d0[b] = zero
                    d1[b] = zero
                    d2[b] = zero
                    d3[b] = zero
            for j in range(fan_out):
                w0, w1, w2, w3 = W[j, i], W[j, i + 1], W[j, i + 2], W[j, i + 3]
                src = delta[j, :nb]
                for b in range(nb):
                    g = src[b]
                    d0[b] += w0 * g
                    d1[b] += w1 * g
                    d2[b] += w2 * g
                    d3[b] += w3 * g
            i += 4
        for k in range(i, fan_in):
            dst = out[k, :nb]
            if not accumulate:
                dst[:] = zero
            for j in range(fan_out):
                w = W[j, k]
                src = delta[j, :nb]
                for b in range(nb):
                    dst[b] += w * src[b]

    @jit
    def _transpose(src, dst, nb):
        """dst[b, u] = src[u, b] for the batch's rows: unit-major to sample-major."""
        for u in range(src.shape[0]):
            row = src[u]
            for b in range(nb):
                dst[b, u] = row[b]

    @jit
    def _weight_grads(delta, inputs, gW, gb, nb, delta_t, inputs_t, g_t):
        """gW[j, i] = sum_b delta[j, b] inputs[i, b]; gb[j] = sum_b delta[j, b] (every entry written).

        Accumulated as one rank-1 update per batch row, vectorised over the longer side
        of the weight matrix: over its inputs from a sample-major copy of the inputs
        (``inputs_t``), or over its outputs from a sample-major copy of ``delta``
        (``delta_t``) into the transposed gradient ``g_t``, copied into ``gW`` at the end.
        """
        fan_out, fan_in = gW.shape
        zero = np.float32(0.0)
        for j in range(fan_out):
            dj = delta[j, :nb]
            s = zero
            for b in range(nb):
                s += dj[b]
            gb[j] = s
        if fan_in >= fan_out:
            _transpose(inputs, inputs_t, nb)
            for j in range(fan_out):
                row = gW[j]
                row[:] = zero
                dj = delta[j]
                for b in range(nb):
                    g = dj[b]
                    src = inputs_t[b, :fan_in]
                    for i in range(fan_in):
                        row[i] += g * src[i]
        else:
            _transpose(delta, delta_t, nb)
            for i in range(fan_in):
                row = g_t[i, :fan_out]
                row[:] = zero
                xi = inputs[i]
                for b in range(nb):
                    x = xi[b]
                    src = delta_t[b, :fan_out]
                    for j in range(fan_out):
                        row[j] += x * src[j]
            for j in range(fan_out):
                for i in range(fan_in):
                    gW[j, i] = g_t[i, j]

    @jit
    def _train_vae_kernel(flat, d, h, l, X, orders, noise, scale, kl_weight, batch_size, lr, losses):
        """``train_vae_epochs`` after its argument checks; writes ``losses`` (E,) float64."""
        n_epochs, n = orders.shape
        zero = np.float32(0.0)
        one = np.float32(1.0)
        half = np.float32(0.5)
        two = np.float32(2.0)
        kw = np.float32(kl_weight)

        # Views of the parameter block and of the gradient block (same layout).
        n_par = flat.shape[0]
        grad = np.zeros(n_par, np.float32)
        exp_avg = np.zeros(n_par, np.float32)
        exp_avg_sq = np.zeros(n_par, np.float32)
        o_enc_b = h * d
        o_mu_w = o_enc_b + h
        o_mu_b = o_mu_w + l * h
        o_lv_w = o_mu_b + l
        o_lv_b = o_lv_w + l * h
        o_dec_w = o_lv_b + l
        o_dec_b = o_dec_w + h * l
        o_out_w = o_dec_b + h
        o_out_b = o_out_w + d * h
        enc_w = flat[:o_enc_b].reshape((h, d))
        enc_b = flat[o_enc_b:o_mu_w]
        mu_w = flat[o_mu_w:o_mu_b].reshape((l, h))
        mu_b = flat[o_mu_b:o_lv_w]
        lv_w = flat[o_lv_w:o_lv_b].reshape((l, h))
        lv_b = flat[o_lv_b:o_dec_w]
        dec_w = flat[o_dec_w:o_dec_b].reshape((h, l))
        dec_b = flat[o_dec_b:o_out_w]
        out_w = flat[o_out_w:o_out_b].reshape((d, h))
        out_b = flat[o_out_b:]
        g_enc_w = grad[:o_enc_b].reshape((h, d))
        g_enc_b = grad[o_enc_b:o_mu_w]
        g_mu_w = grad[o_mu_w:o_mu_b].reshape((l, h))
        g_mu_b = grad[o_mu_b:o_lv_w]
        g_lv_w = grad[o_lv_w:o_lv_b].reshape((l, h))
        g_lv_b = grad[o_lv_b:o_dec_w]
        g_dec_w = grad[o_dec_w:o_dec_b].reshape((h, l))
        g_dec_b = grad[o_dec_b:o_out_w]
        g_out_w = grad[o_out_w:o_out_b].reshape((d, h))
        g_out_b = grad[o_out_b:]

        # Activations and their gradients, unit-major: (units, rows of the batch).
        width = min(batch_size, n)
        xt = np.zeros((d, width), np.float32)  # the batch's inputs
        a1 = np.zeros((h, width), np.float32)  # encoder hidden layer, after ReLU
        mu = np.zeros((l, width), np.float32)
        lv = np.zeros((l, width), np.float32)  # logvar
        sd = np.zeros((l, width), np.float32)  # exp(0.5 logvar)
        eps = np.zeros((l, width), np.float32)
        z = np.zeros((l, width), np.float32)
        a2 = np.zeros((h, width), np.float32)  # decoder hidden layer, after ReLU
        xhat = np.zeros((d, width), np.float32)
        row_loss = np.zeros(width, np.float32)
        g_xhat = np.zeros((d, width), np.float32)
        g_a2 = np.zeros((h, width), np.float32)  # d loss / d pre-activation of the decoder hidden layer
        g_z = np.zeros((l, width), np.float32)
        g_mu = np.zeros((l, width), np.float32)
        g_lv = np.zeros((l, width), np.float32)
        g_a1 = np.zeros((h, width), np.float32)  # d loss / d pre-activation of the encoder hidden layer
        widest = max(d, h, l)
        delta_t = np.zeros((width, widest), np.float32)  # sample-major copies for the weight gradients
        inputs_t = np.zeros((width, widest), np.float32)
        g_t = np.zeros((widest, widest), np.float32)

        one_minus_beta1 = np.float32(1.0 - _BETA1)
        beta1 = np.float32(_BETA1)
        beta2 = np.float32(_BETA2)
        one_minus_beta2 = np.float32(1.0 - _BETA2)
        adam_eps = np.float32(_EPS)
        n_batches = (n + batch_size - 1) // batch_size
        step = 0
        for e in range(n_epochs):
            epoch_loss = 0.0
            for start in range(0, n, batch_size):
                nb = min(batch_size, n - start)
                for b in range(nb):
                    r = orders[e, start + b]
                    for i in range(d):
                        xt[i, b] = X[r, i]
                    for k in range(l):
                        eps[k, b] = noise[e, start + b, k]

                # Forward.
                _linear(enc_w, enc_b, xt, a1, nb, True)
                _linear(mu_w, mu_b, a1, mu, nb, False)
                _linear(lv_w, lv_b, a1, lv, nb, False)
                for k in range(l):
                    for b in range(nb):
                        s = np.exp(half * lv[k, b])
                        sd[k, b] = s
                        z[k, b] = mu[k, b] + s * eps[k, b]
                _linear(dec_w, dec_b, z, a2, nb, True)
                _linear(out_w, out_b, a2, xhat, nb, False)

                # Loss (the mean over the batch's rows) and its gradient wrt xhat,
                # mu and logvar; the KL's part of the latter two is written here.
                inv_nb = one / np.float32(nb)
                row_loss[:nb] = zero
                for j in range(d):
                    sj = scale[j]
                    for b in range(nb):
                        err = (xhat[j, b] - xt[j, b]) / sj
                        row_loss[b] += err * err
                        g_xhat[j, b] = (two * err * inv_nb) / sj
                kl_grad = kw * inv_nb * half  # d loss / d (a row's KL sum, before the 0.5)
                for b in range(nb):
                    kl = zero
                    for k in range(l):
                        lvkb = lv[k, b]
                        mkb = mu[k, b]
                        ev = np.exp(lvkb)
                        kl += ((ev + mkb * mkb) - one) - lvkb
                        g_mu[k, b] = kl_grad * two * mkb
                        g_lv[k, b] = kl_grad * (ev - one)
                    row_loss[b] = row_loss[b] + kw * (half * kl)
                batch_loss = zero
                for b in range(nb):
                    batch_loss += row_loss[b]
                epoch_loss += np.float64(batch_loss / np.float32(nb))

                # Backward, decoder.
                _weight_grads(g_xhat, a2, g_out_w, g_out_b, nb, delta_t, inputs_t, g_t)
                _input_grads(out_w, g_xhat, g_a2, nb, False)
                for j in range(h):
                    for b in range(nb):
                        if not a2[j, b] > zero:
                            g_a2[j, b] = zero
                _weight_grads(g_a2, z, g_dec_w, g_dec_b, nb, delta_t, inputs_t, g_t)
                _input_grads(dec_w, g_a2, g_z, nb, False)
                # Reparameterisation: z = mu + exp(0.5 logvar) eps.
                for k in range(l):
                    for b in range(nb):
                        gzkb = g_z[k, b]
                        g_mu[k, b] += gzkb
                        g_lv[k, b] += gzkb * eps[k, b] * sd[k, b] * half
                # Backward, encoder.
                _weight_grads(g_mu, a1, g_mu_w, g_mu_b, nb, delta_t, inputs_t, g_t)
                _weight_grads(g_lv, a1, g_lv_w, g_lv_b, nb, delta_t, inputs_t, g_t)
                _input_grads(mu_w, g_mu, g_a1, nb, False)
                _input_grads(lv_w, g_lv, g_a1, nb, True)
                for j in range(h):
                    for b in range(nb):
                        if not a1[j, b] > zero:
                            g_a1[j, b] = zero
                _weight_grads(g_a1, xt, g_enc_w, g_enc_b, nb, delta_t, inputs_t, g_t)

                # Adam, in the operation order of VAE.fit's torch path.
                step += 1
                t = np.float64(step)
                neg_step = np.float32(-lr / (1.0 - _BETA1**t))
                bias_correction2_sqrt = np.float32(np.sqrt(1.0 - _BETA2**t))
                for k in range(n_par):
                    g = grad[k]
                    m = exp_avg[k] * beta1 + one_minus_beta1 * g
                    exp_avg[k] = m
                    v = exp_avg_sq[k] * beta2 + one_minus_beta2 * g * g
                    exp_avg_sq[k] = v
                    flat[k] = flat[k] + neg_step * m / (np.sqrt(v) / bias_correction2_sqrt + adam_eps)
            losses[e] = epoch_loss / n_batches


def warm_up() -> float:
    """Compile (or load from the cache) the kernel now; returns the seconds it took."""
    start = time.perf_counter()
    dims = np.array([1, 1, 1], dtype=np.int64)
    flat = np.zeros(n_params(1, 1, 1), dtype=np.float32)
    X = np.zeros((2, 1), dtype=np.float32)
    train_vae_epochs(
        flat, dims, X, np.zeros((1, 2), np.int64), np.zeros((1, 2, 1), np.float32), np.ones(1, np.float32),
        0.1, 2, 1e-3,
    )
    return time.perf_counter() - start


def train_vae_epochs(
    flat: np.ndarray,
    dims: np.ndarray,
    X: np.ndarray,
    orders: np.ndarray,
    noise: np.ndarray,
    scale: np.ndarray,
    kl_weight: float,
    batch_size: int,
    lr: float,
) -> np.ndarray:
    """Train the VAE whose parameter block is ``flat`` with mini-batch Adam, in place.

    Equivalent to the torch path of ``VAE.fit`` given the same row orders and noise
    (fresh Adam state, betas (0.9, 0.999), eps 1e-8, bias correction; the last partial
    batch averaged over its own size). Step ``s`` of epoch ``e`` uses the rows
    ``orders[e, s*B : (s+1)*B]`` with the noise ``noise[e, s*B : (s+1)*B]``.

    Args:
        flat: (n_params,) float32, C-contiguous and writable, in ``_LAYOUT`` order;
            modified in place.
        dims: (3,) ints ``(input_dim d, hidden h, latent_dim l)``.
        X: (n, d) float32 features.
        orders: (epochs, n) int64: the row order of each epoch.
        noise: (epochs, n, l) float32: reparameterisation noise by epoch and position
            in that epoch's order.
        scale: (d,) float32 > 0: per-feature scale of the reconstruction error.
        kl_weight: weight of the KL term (> 0). batch_size: rows per step (>= 1).
        lr: Adam learning rate (> 0).

    Returns:
        (epochs,) float64: mean over the epoch's batches of the batch loss, each computed
        in the forward pass before that step's update.
    """
    if not AVAILABLE:
        raise RuntimeError(f"The fused training backend is unavailable: {UNAVAILABLE_REASON}")
    problems = []
    sizes = np.asarray(dims)
    if sizes.shape != (3,) or not np.issubdtype(sizes.dtype, np.integer) or (sizes < 1).any():
        problems.append(f"dims must be 3 positive ints (input_dim, hidden, latent_dim); got {sizes.tolist()}")
        d = h = l = -1
    else:
        d, h, l = (int(v) for v in sizes)
    if not (isinstance(flat, np.ndarray) and flat.dtype == np.float32 and flat.ndim == 1):
        problems.append("flat must be a 1-D float32 numpy array")
    elif not (flat.flags.c_contiguous and flat.flags.writeable):
        problems.append("flat must be C-contiguous and writable (it is updated in place)")
    elif d > 0 and flat.shape[0] != n_params(d, h, l):
        problems.append(f"flat has {flat.shape[0]} entries; dims {[d, h, l]} need {n_params(d, h, l)}")
    X = np.ascontiguousarray(X, dtype=np.float32)
    orders = np.ascontiguousarray(orders, dtype=np.int64)
    noise = np.ascontiguousarray(noise, dtype=np.float32)
    scale = np.ascontiguousarray(scale, dtype=np.float32)
    n = X.shape[0] if X.ndim == 2 else -1
    if X.ndim != 2 or (d > 0 and X.shape[1] != d) or n < 1:
        problems.append(f"X must have shape (n >= 1, {d}); got {X.shape}")
    if orders.ndim != 2 or orders.shape[1] != n:
        problems.append(f"orders must have shape (epochs, {n}); got {orders.shape}")
    elif orders.size and (orders.min() < 0 or orders.max() >= n):
        problems.append("orders contains row indices outside [0, n)")
    epochs = orders.shape[0] if orders.ndim == 2 else -1
    if noise.shape != (epochs, n, l):
        problems.append(f"noise must have shape ({epochs}, {n}, {l}); got {noise.shape}")
    if scale.shape != (d,) or not (scale > 0).all() or not np.isfinite(scale).all():
        problems.append(f"scale must have shape ({d},) with finite entries > 0")
    if not (isinstance(kl_weight, (int, float)) and 0 < kl_weight < np.inf):
        problems.append(f"kl_weight must be a float > 0; got {kl_weight!r}")
    if isinstance(batch_size, bool) or not isinstance(batch_size, (int, np.integer)) or batch_size < 1:
        problems.append(f"batch_size must be an int >= 1; got {batch_size!r}")
    if not (isinstance(lr, (int, float)) and lr > 0):
        problems.append(f"lr must be a float > 0; got {lr!r}")
    if problems:
        raise ValueError("Invalid arguments to train_vae_epochs: " + "; ".join(problems) + ".")
    losses = np.zeros(epochs, dtype=np.float64)
    if epochs == 0:
        return losses
    _train_vae_kernel(
        flat, d, h, l, X, orders, noise, scale, float(kl_weight), int(batch_size), float(lr), losses,
    )
    return losses
