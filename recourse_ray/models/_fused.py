"""Fused training kernel: the whole mini-batch Adam loop of a feed-forward classifier, compiled.

Where it sits in the flow: every round of a recourse system retrains its classifier
(SPEC §2, step 4: 10 epochs, batch size 1, Adam lr 1e-3). ``FeedForwardClassifier.fit``
draws the shuffles and dropout seeds and, when :data:`AVAILABLE`, hands the weights to
:func:`train_epochs`, which runs every epoch, batch, forward pass, backward pass and
Adam update of every ensemble member in one numba-compiled call. Eager torch spends
~500 us of dispatch overhead per step on a 2-32-1 MLP whose arithmetic needs ~1 us.

Semantics are those of ``FeedForwardClassifier._fit_torch`` (``torch.optim.Adam``
defaults, fresh optimizer state per call, BCE with logits, last partial batch averaged
over its own size, members independent), with the arithmetic kept in float32 in the
same order as torch's CPU kernels where that is cheap. The only intended difference is
the dropout masks: they come from a splitmix64 stream per member (seeded by
``dropout_seeds[m]``), so they cannot equal torch's masks. See docs/fused_training.md.

Two kernels, one per shape of step. ``_train_one_row_kernel`` runs batch size 1 (the
study's retraining): no batch dimension, each layer's outputs summed four at a time.
``_train_minibatch_kernel`` runs larger batches as vector loops over the rows of a
batch. :func:`train_epochs` checks the arguments once and picks the kernel by batch
size. Both sum every output in input order, draw the same dropout stream in the same
order and share the helpers for offsets, dropout, loss and Adam, so at batch size 1
they give the same numbers (tests/test_fused.py checks it).

Layout (shared with ``_feedforward.py``): ``params`` is ``(n_members, n_params)``
float32; per member and layer the block holds ``W (out, in)`` row-major, then
``b (out,)``. The minibatch kernel stores activations unit-major, ``(n_units, batch)``,
so the inner loops of the forward pass and of the input-gradient run contiguously
over the batch.

If numba cannot be imported, ``AVAILABLE`` is False, ``UNAVAILABLE_REASON`` says why,
and the models train with the torch path.
"""

from __future__ import annotations

import functools
import logging
import os
import tempfile
import time

import numpy as np

__all__ = ["AVAILABLE", "UNAVAILABLE_REASON", "train_epochs", "dropout_keep_mask", "warm_up"]

logger = logging.getLogger(__name__)

try:
    import numba
except Exception as exc:  # ImportError, or a broken numba/llvmlite install
    AVAILABLE = False
    UNAVAILABLE_REASON = f"numba could not be imported ({type(exc).__name__}: {exc})"
else:
    AVAILABLE = True
    UNAVAILABLE_REASON = ""

# torch.optim.Adam defaults; the float32 casts mirror how torch passes Python scalars
# to its float32 CPU kernels.
_BETA1 = 0.9
_BETA2 = 0.999
_EPS = 1e-8

_GOLDEN = np.uint64(0x9E3779B97F4A7C15)
_MIX1 = np.uint64(0xBF58476D1CE4E5B9)
_MIX2 = np.uint64(0x94D049BB133111EB)
_S30, _S27, _S31, _S40 = np.uint64(30), np.uint64(27), np.uint64(31), np.uint64(40)
_MASK_BITS = 24  # a keep decision compares the top 24 bits of a draw with a threshold
# Layers with at least this many inputs and outputs accumulate the weight gradient of a
# batch as vector updates over the inputs (the transposed copy of the inputs pays off).
_WIDE_FAN_IN = 16
_WIDE_FAN_OUT = 8
# At batch size 1, the weight gradient of a layer with fewer inputs is written with the
# outputs in the inner loop (a loop over a few inputs costs more to set up than to run).
_NARROW_FAN_IN = 8


def _fallback_cache_dir() -> str:
    user = os.getuid() if hasattr(os, "getuid") else "user"
    return os.path.join(tempfile.gettempdir(), f"recourse_ray-numba-cache-{user}")


def _jit(fn=None, *, inline: bool = False):
    """``numba.njit(cache=True)``, robust to a read-only package directory.

    numba caches next to the module (``__pycache__``) and, when that is not writable,
    in the user cache directory. If neither is usable it refuses ``cache=True``; we then
    point ``NUMBA_CACHE_DIR`` at a temporary directory (only if the user has not set it)
    and, as a last resort, compile without a cache.

    ``inline=True`` inlines the function into its jitted callers (numba IR inlining):
    numba compiles each function on its own and LLVM does not inline across them, so a
    small helper called per unit or per step would cost a call and the reference
    counting of its array arguments.
    """
    if fn is None:
        return functools.partial(_jit, inline=inline)
    options = {"error_model": "numpy", "inline": "always" if inline else "never"}
    try:
        return numba.njit(cache=True, **options)(fn)
    except RuntimeError as exc:  # "cannot cache function ...: no locator available"
        if not os.environ.get("NUMBA_CACHE_DIR"):
            path = _fallback_cache_dir()
            os.environ["NUMBA_CACHE_DIR"] = path
            numba.config.CACHE_DIR = path  # numba read the environment at import time
            try:
                return numba.njit(cache=True, **options)(fn)
            except RuntimeError:
                pass
        logger.warning("The numba cache is unusable (%s); the fused kernel compiles in every process.", exc)
        return numba.njit(cache=False, **options)(fn)


if AVAILABLE:

    @_jit(inline=True)
    def _splitmix64(state):
        """One step of splitmix64 (Steele et al. 2014): returns (new state, 64 random bits)."""
        state = state + _GOLDEN
        z = state
        z = (z ^ (z >> _S30)) * _MIX1
        z = (z ^ (z >> _S27)) * _MIX2
        return state, z ^ (z >> _S31)

    @_jit(inline=True)
    def _keep_draw(state, keep_threshold):
        """The next dropout decision of a member's stream: (new state, whether the unit is kept)."""
        state, bits = _splitmix64(state)
        return state, (bits >> _S40) < keep_threshold

    @_jit
    def _keep_masks_kernel(seed, n, keep_threshold, out):
        state = seed
        for k in range(n):
            state, kept = _keep_draw(state, keep_threshold)
            out[k] = kept

    @_jit
    def _layer_offsets(layer_sizes):
        """Where each layer lives: ``w_off``, ``b_off`` in a member's block; ``u_off``, its first unit.

        ``u_off[-1]`` is the output unit; the activations hold ``u_off[-1] + 1`` units.
        """
        n_layers = layer_sizes.shape[0] - 1
        w_off = np.empty(n_layers, np.int64)
        b_off = np.empty(n_layers, np.int64)
        u_off = np.empty(n_layers + 1, np.int64)
        offset = 0
        units = 0
        for l in range(n_layers):
            w_off[l] = offset
            b_off[l] = offset + layer_sizes[l] * layer_sizes[l + 1]
            offset = b_off[l] + layer_sizes[l + 1]
            u_off[l] = units
            units += layer_sizes[l]
        u_off[n_layers] = units
        return w_off, b_off, u_off

    @_jit(inline=True)
    def _relu_dropout(z, mult, use_dropout, keep_threshold, keep_scale, rng_state):
        """ReLU, then inverted dropout, of the pre-activations ``z`` (in place); returns the stream state.

        ``mult`` receives d(activation)/d(pre-activation): 0 or 1 / keep. One decision
        is drawn per entry, in order, also for inactive units, so a mask depends only on
        the seed and the position, not on the activations.
        """
        zero = np.float32(0.0)
        for k in range(z.shape[0]):
            scale = np.float32(1.0)
            if use_dropout:
                rng_state, kept = _keep_draw(rng_state, keep_threshold)
                scale = keep_scale if kept else zero
            zk = z[k]
            active = zk > zero
            z[k] = zk * scale if active else zero
            mult[k] = scale if active else zero
        return rng_state

    @_jit(inline=True)
    def _bce_with_logits(z, target):
        """(loss, d loss / dz) of one logit, as torch: (1 - y) z - log_sigmoid(z), sharing one exp(-|z|)."""
        zero = np.float32(0.0)
        one = np.float32(1.0)
        ez = np.exp(-abs(z))
        loss = (one - target) * z - (min(z, zero) - np.log1p(ez))
        sig = one / (one + ez) if z >= zero else ez / (one + ez)
        return loss, sig - target

    @_jit(inline=True)
    def _adam_step(p, grad, exp_avg, exp_avg_sq, neg_step, bias_correction2_sqrt):
        """One Adam update in the operation order of torch's single-tensor implementation."""
        one_minus_beta1 = np.float32(1.0 - _BETA1)
        beta2 = np.float32(_BETA2)
        one_minus_beta2 = np.float32(1.0 - _BETA2)
        eps = np.float32(_EPS)
        for k in range(p.shape[0]):
            g = grad[k]
            a = exp_avg[k]
            a = a + one_minus_beta1 * (g - a)
            exp_avg[k] = a
            v = exp_avg_sq[k] * beta2
            v = v + one_minus_beta2 * g * g
            exp_avg_sq[k] = v
            p[k] = p[k] + neg_step * a / (np.sqrt(v) / bias_correction2_sqrt + eps)

    @_jit
    def _bias_corrections_kernel(bias_correction1, bias_correction2_sqrt):
        for k in range(bias_correction1.shape[0]):
            t = np.float64(k + 1)
            bias_correction1[k] = 1.0 - _BETA1**t
            bias_correction2_sqrt[k] = np.float32((1.0 - _BETA2**t) ** 0.5)

    @_jit(inline=True)
    def _dot(x, y):
        """sum(x * y) in float32 (the minibatch kernel's sums over a batch).

        From 16 terms on, eight partial sums break the add-latency chain.
        """
        n = x.shape[0]
        if n < 16:
            acc = np.float32(0.0)
            for i in range(n):
                acc += x[i] * y[i]
            return acc
        a0 = a1 = a2 = a3 = a4 = a5 = a6 = a7 = np.float32(0.0)
        n8 = n - n % 8
        for i in range(0, n8, 8):
            a0 += x[i] * y[i]
            a1 += x[i + 1] * y[i + 1]
            a2 += x[i + 2] * y[i + 2]
            a3 += x[i + 3] * y[i + 3]
            a4 += x[i + 4] * y[i + 4]
            a5 += x[i + 5] * y[i + 5]
            a6 += x[i + 6] * y[i + 6]
            a7 += x[i + 7] * y[i + 7]
        for i in range(n8, n):
            a0 += x[i] * y[i]
        return ((a0 + a1) + (a2 + a3)) + ((a4 + a5) + (a6 + a7))

    @_jit
    def _train_one_row_kernel(
        params, layer_sizes, X, y, orders, lr, dropout, keep_threshold, dropout_seeds,
        bias_correction1, bias_correction2_sqrt, losses,
    ):
        """``train_epochs`` at batch size 1: one row per step, no batch dimension."""
        n_members, n_par = params.shape
        n_epochs = orders.shape[1]
        n = orders.shape[2]
        n_layers = layer_sizes.shape[0] - 1
        n_in = layer_sizes[0]
        w_off, b_off, u_off = _layer_offsets(layer_sizes)
        out_unit = u_off[n_layers]
        acts = np.zeros(out_unit + 1, np.float32)  # inputs, post-dropout activations, logit
        mult = np.zeros(out_unit + 1, np.float32)  # d(activation)/d(pre-activation)
        delta = np.zeros(out_unit + 1, np.float32)  # d(loss)/d(pre-activation)
        grad = np.zeros(n_par, np.float32)
        exp_avg = np.zeros(n_par, np.float32)
        exp_avg_sq = np.zeros(n_par, np.float32)
        zero = np.float32(0.0)
        use_dropout = dropout > 0.0
        keep_scale = np.float32(1.0) / np.float32(1.0 - dropout)  # torch: mask.float() / keep

        for m in range(n_members):
            p = params[m]
            exp_avg[:] = zero
            exp_avg_sq[:] = zero
            rng_state = dropout_seeds[m]
            step = 0
            for e in range(n_epochs):
                epoch_loss = 0.0
                for s in range(n):
                    r = orders[m, e, s]
                    for i in range(n_in):
                        acts[i] = X[r, i]

                    # Forward: each output summed in input order (torch's small-matrix
                    # order), four outputs at a time: four independent add chains share
                    # each load of an input (one chain alone waits on the add latency).
                    for l in range(n_layers):
                        fan_in = layer_sizes[l]
                        fan_out = layer_sizes[l + 1]
                        x = acts[u_off[l] : u_off[l] + fan_in]
                        z = acts[u_off[l + 1] : u_off[l + 1] + fan_out]
                        W = p[w_off[l] : b_off[l]]
                        bias = p[b_off[l] : b_off[l] + fan_out]
                        j = 0
                        while j + 4 <= fan_out:
                            w0 = W[j * fan_in : (j + 1) * fan_in]
                            w1 = W[(j + 1) * fan_in : (j + 2) * fan_in]
                            w2 = W[(j + 2) * fan_in : (j + 3) * fan_in]
                            w3 = W[(j + 3) * fan_in : (j + 4) * fan_in]
                            s0 = s1 = s2 = s3 = zero
                            for i in range(fan_in):
                                xi = x[i]
                                s0 += w0[i] * xi
                                s1 += w1[i] * xi
                                s2 += w2[i] * xi
                                s3 += w3[i] * xi
                            z[j] = s0 + bias[j]
                            z[j + 1] = s1 + bias[j + 1]
                            z[j + 2] = s2 + bias[j + 2]
                            z[j + 3] = s3 + bias[j + 3]
                            j += 4
                        for k in range(j, fan_out):
                            w0 = W[k * fan_in : (k + 1) * fan_in]
                            s0 = zero
                            for i in range(fan_in):
                                s0 += w0[i] * x[i]
                            z[k] = s0 + bias[k]
                        if l < n_layers - 1:
                            rng_state = _relu_dropout(
                                z, mult[u_off[l + 1] : u_off[l + 1] + fan_out], use_dropout, keep_threshold,
                                keep_scale, rng_state,
                            )

                    loss, dz = _bce_with_logits(acts[out_unit], y[r])
                    delta[out_unit] = dz
                    epoch_loss += np.float64(loss)

                    # Backward: every gradient entry is written once per step (no zeroing pass).
                    for l in range(n_layers - 1, -1, -1):
                        fan_in = layer_sizes[l]
                        fan_out = layer_sizes[l + 1]
                        x = acts[u_off[l] : u_off[l] + fan_in]
                        delta_out = delta[u_off[l + 1] : u_off[l + 1] + fan_out]
                        delta_in = delta[u_off[l] : u_off[l] + fan_in]
                        W = p[w_off[l] : b_off[l]]
                        gW = grad[w_off[l] : b_off[l]]
                        gb = grad[b_off[l] : b_off[l] + fan_out]
                        for j in range(fan_out):
                            gb[j] = delta_out[j]
                        if fan_in < _NARROW_FAN_IN:
                            gW2 = gW.reshape((fan_out, fan_in))  # a view: 2-D indices need no offsets
                            for i in range(fan_in):
                                xi = x[i]
                                for j in range(fan_out):
                                    gW2[j, i] = delta_out[j] * xi
                        else:
                            for j in range(fan_out):
                                dj = delta_out[j]
                                g = gW[j * fan_in : (j + 1) * fan_in]
                                for i in range(fan_in):
                                    g[i] = dj * x[i]
                        if l > 0:
                            delta_in[:] = zero
                            for j in range(fan_out):
                                dj = delta_out[j]
                                w = W[j * fan_in : (j + 1) * fan_in]
                                for i in range(fan_in):
                                    delta_in[i] += w[i] * dj
                            mult_in = mult[u_off[l] : u_off[l] + fan_in]
                            for i in range(fan_in):
                                delta_in[i] *= mult_in[i]

                    _adam_step(
                        p, grad, exp_avg, exp_avg_sq, np.float32(-(lr / bias_correction1[step])),
                        bias_correction2_sqrt[step],
                    )
                    step += 1
                losses[m, e] = epoch_loss / n

    @_jit
    def _train_minibatch_kernel(
        params, layer_sizes, X, y, orders, batch_size, lr, dropout, keep_threshold, dropout_seeds,
        bias_correction1, bias_correction2_sqrt, losses,
    ):
        """``train_epochs`` at any batch size; at one row per batch it computes what the one-row kernel does."""
        n_members, n_par = params.shape
        n_epochs = orders.shape[1]
        n = orders.shape[2]
        n_layers = layer_sizes.shape[0] - 1
        n_in = layer_sizes[0]
        w_off, b_off, u_off = _layer_offsets(layer_sizes)
        out_unit = u_off[n_layers]
        units = out_unit + 1
        max_fan_in = layer_sizes[:n_layers].max()

        # Every buffer of the step loop is allocated here, once per call. Unit u of batch
        # row b lives at u * nb + b (nb = rows of the current batch), so loops over the
        # batch are contiguous. Inner loops go through slices (views, no allocation):
        # LLVM vectorises those, not offset arithmetic.
        width = min(batch_size, n)
        acts = np.zeros(units * width, np.float32)  # inputs, post-dropout activations, logits
        mult = np.zeros(units * width, np.float32)  # d(activation)/d(pre-activation): 0 or 1/keep
        delta = np.zeros(units * width, np.float32)  # d(loss)/d(pre-activation)
        inputs_t = np.zeros(width * max_fan_in, np.float32)  # a layer's inputs, one row per sample
        grad = np.zeros(n_par, np.float32)
        exp_avg = np.zeros(n_par, np.float32)
        exp_avg_sq = np.zeros(n_par, np.float32)
        rows = np.zeros(width, np.int64)

        zero = np.float32(0.0)
        one = np.float32(1.0)
        use_dropout = dropout > 0.0
        keep_scale = one / np.float32(1.0 - dropout)
        n_batches = (n + batch_size - 1) // batch_size

        for m in range(n_members):
            p = params[m]
            exp_avg[:] = zero
            exp_avg_sq[:] = zero
            rng_state = dropout_seeds[m]
            step = 0
            for e in range(n_epochs):
                epoch_loss = 0.0
                for start in range(0, n, batch_size):
                    nb = min(batch_size, n - start)
                    for b in range(nb):
                        r = orders[m, e, start + b]
                        rows[b] = r
                        for i in range(n_in):
                            acts[i * nb + b] = X[r, i]

                    # Forward: z = W a + b, as vector updates over the batch (each output
                    # summed in input order); hidden layers: ReLU, then inverted dropout,
                    # drawn unit by unit, rows fastest.
                    for l in range(n_layers):
                        fan_in = layer_sizes[l]
                        fan_out = layer_sizes[l + 1]
                        io = u_off[l]
                        oo = u_off[l + 1]
                        for j in range(fan_out):
                            row = w_off[l] + j * fan_in
                            out = acts[(oo + j) * nb : (oo + j + 1) * nb]
                            out[:] = zero
                            for i in range(fan_in):
                                w = p[row + i]
                                src = acts[(io + i) * nb : (io + i + 1) * nb]
                                for b in range(nb):
                                    out[b] += w * src[b]
                        for j in range(fan_out):
                            bias = p[b_off[l] + j]
                            out = acts[(oo + j) * nb : (oo + j + 1) * nb]
                            for b in range(nb):
                                out[b] = out[b] + bias
                            if l < n_layers - 1:
                                rng_state = _relu_dropout(
                                    out, mult[(oo + j) * nb : (oo + j + 1) * nb], use_dropout, keep_threshold,
                                    keep_scale, rng_state,
                                )

                    # Loss: the mean over the batch; its gradient (sigmoid(z) - y) / nb.
                    inv_nb = one / np.float32(nb)
                    batch_loss = zero
                    for b in range(nb):
                        loss, dz = _bce_with_logits(acts[out_unit * nb + b], y[rows[b]])
                        batch_loss += loss
                        delta[out_unit * nb + b] = dz * inv_nb
                    epoch_loss += np.float64(batch_loss / np.float32(nb))

                    # Backward: every gradient entry is written once per step (no zeroing pass).
                    for l in range(n_layers - 1, -1, -1):
                        fan_in = layer_sizes[l]
                        fan_out = layer_sizes[l + 1]
                        io = u_off[l]
                        oo = u_off[l + 1]
                        propagate = l > 0
                        delta_in = delta[io * nb : (io + fan_in) * nb]
                        if propagate:
                            delta_in[:] = zero
                        # Layers with many inputs and outputs accumulate weight gradients
                        # as vector updates over the inputs (from a sample-major copy of
                        # them); the others as dot products over the batch.
                        wide = fan_in >= _WIDE_FAN_IN and fan_out >= _WIDE_FAN_OUT
                        if wide:
                            for b in range(nb):
                                for i in range(fan_in):
                                    inputs_t[b * fan_in + i] = acts[(io + i) * nb + b]
                        for j in range(fan_out):
                            delta_out = delta[(oo + j) * nb : (oo + j + 1) * nb]
                            row = w_off[l] + j * fan_in
                            grad_row = grad[row : row + fan_in]
                            gb = zero
                            for b in range(nb):
                                gb += delta_out[b]
                            grad[b_off[l] + j] = gb
                            if wide:
                                grad_row[:] = zero
                                for b in range(nb):
                                    dj = delta_out[b]
                                    src = inputs_t[b * fan_in : (b + 1) * fan_in]
                                    for i in range(fan_in):
                                        grad_row[i] += dj * src[i]
                            else:
                                for i in range(fan_in):
                                    grad_row[i] = _dot(delta_out, acts[(io + i) * nb : (io + i + 1) * nb])
                            if propagate:
                                for i in range(fan_in):
                                    w = p[row + i]
                                    dst = delta_in[i * nb : (i + 1) * nb]
                                    for b in range(nb):
                                        dst[b] += w * delta_out[b]
                        if propagate:
                            mult_in = mult[io * nb : (io + fan_in) * nb]
                            for k in range(fan_in * nb):
                                delta_in[k] *= mult_in[k]

                    _adam_step(
                        p, grad, exp_avg, exp_avg_sq, np.float32(-(lr / bias_correction1[step])),
                        bias_correction2_sqrt[step],
                    )
                    step += 1
                losses[m, e] = epoch_loss / n_batches


def _keep_threshold(dropout: float) -> np.uint64:
    return np.uint64(int(round((1.0 - dropout) * (1 << _MASK_BITS))))


@functools.lru_cache(maxsize=8)
def _bias_corrections(n_steps: int) -> tuple[np.ndarray, np.ndarray]:
    """Adam's bias corrections of steps 1..n_steps, as torch computes them.

    ``torch.optim.Adam`` evaluates ``1 - beta1**t`` and ``(1 - beta2**t) ** 0.5`` in
    float64 (libm ``pow``) at every step. A table per step count, which is the same for
    every retraining of a system, takes these two ``pow`` calls out of the step loops.

    Returns:
        (n_steps,) float64 ``1 - beta1**t`` and (n_steps,) float32 ``sqrt(1 - beta2**t)``,
        both read-only.
    """
    bias_correction1 = np.empty(n_steps, dtype=np.float64)
    bias_correction2_sqrt = np.empty(n_steps, dtype=np.float32)
    _bias_corrections_kernel(bias_correction1, bias_correction2_sqrt)
    bias_correction1.flags.writeable = False
    bias_correction2_sqrt.flags.writeable = False
    return bias_correction1, bias_correction2_sqrt


def dropout_keep_mask(seed: int, n: int, dropout: float) -> np.ndarray:
    """The first ``n`` keep decisions of the kernel's dropout stream for ``seed``.

    The kernel draws one decision per hidden unit and batch row, in the order
    (layer, unit, row) of each step; a unit is kept with probability
    ``round((1 - dropout) * 2**24) / 2**24``.

    Args:
        seed: the member's dropout seed (``dropout_seeds[m]`` of :func:`train_epochs`).
        n: number of decisions. dropout: drop probability in [0, 1).

    Returns:
        (n,) bool: True where the unit is kept.
    """
    if not AVAILABLE:
        raise RuntimeError(f"The fused training backend is unavailable: {UNAVAILABLE_REASON}")
    out = np.zeros(int(n), dtype=np.bool_)
    _keep_masks_kernel(np.uint64(seed), int(n), _keep_threshold(float(dropout)), out)
    return out


def warm_up() -> float:
    """Compile (or load from the cache) both kernels now; returns the seconds it took.

    A sweep driver can call this once per node before starting tasks, so that the
    tasks load the cached kernels instead of compiling them side by side.
    """
    start = time.perf_counter()
    X, y = np.zeros((2, 2), dtype=np.float32), np.zeros(2, dtype=np.float32)
    orders = np.zeros((1, 1, 2), dtype=np.int64)
    for batch_size in (1, 2):  # the one-row kernel, then the minibatch kernel
        params = np.zeros((1, 3), dtype=np.float32)
        train_epochs(params, np.array([2, 1]), X, y, orders, batch_size, 1e-3, 0.0, np.zeros(1, dtype=np.uint64))
    return time.perf_counter() - start


def train_epochs(
    params: np.ndarray,
    layer_sizes: np.ndarray,
    X: np.ndarray,
    y: np.ndarray,
    orders: np.ndarray,
    batch_size: int,
    lr: float,
    dropout: float,
    dropout_seeds: np.ndarray,
) -> np.ndarray:
    """Train every member with mini-batch Adam on BCE with logits, updating ``params`` in place.

    Equivalent to ``FeedForwardClassifier._fit_torch`` (fresh ``torch.optim.Adam`` state,
    betas (0.9, 0.999), eps 1e-8, bias correction; the last partial batch is averaged
    over its own size), except that dropout masks come from the kernel's own stream.
    One row per step (``batch_size`` 1, or a single row of data) runs the one-row
    kernel, larger batches the minibatch kernel; the numbers do not depend on which.

    Args:
        params: (n_members, n_params) float32, C-contiguous and writable; modified in place.
        layer_sizes: (n_layers + 1,) int64: input size, hidden sizes, 1.
        X: (n, d) float32 features. y: (n,) float32 labels in {0, 1}.
        orders: (n_members, epochs, n) int64: the row order of each member and epoch.
        batch_size: rows per step (>= 1). lr: Adam learning rate (> 0).
        dropout: drop probability after every hidden ReLU, in [0, 1).
        dropout_seeds: (n_members,) uint64: seed of each member's dropout stream.

    Returns:
        (n_members, epochs) float64: mean over the epoch's batches of the batch's mean
        loss, each computed in the forward pass before that step's update.
    """
    if not AVAILABLE:
        raise RuntimeError(f"The fused training backend is unavailable: {UNAVAILABLE_REASON}")
    problems = []
    if not (isinstance(params, np.ndarray) and params.dtype == np.float32 and params.ndim == 2):
        problems.append("params must be a 2-D float32 numpy array")
    elif not (params.flags.c_contiguous and params.flags.writeable):
        problems.append("params must be C-contiguous and writable (it is updated in place)")
    sizes = np.ascontiguousarray(layer_sizes, dtype=np.int64)
    if sizes.ndim != 1 or sizes.shape[0] < 2 or (sizes < 1).any() or sizes[-1] != 1:
        problems.append(f"layer_sizes must list >= 2 positive sizes ending in 1; got {sizes.tolist()}")
    elif isinstance(params, np.ndarray) and params.ndim == 2:
        expected = int(sum(i * o + o for i, o in zip(sizes[:-1], sizes[1:])))
        if params.shape[1] != expected:
            problems.append(f"params has {params.shape[1]} columns; layer_sizes {sizes.tolist()} need {expected}")
    X = np.ascontiguousarray(X, dtype=np.float32)
    y = np.ascontiguousarray(y, dtype=np.float32)
    orders = np.ascontiguousarray(orders, dtype=np.int64)
    seeds = np.ascontiguousarray(dropout_seeds, dtype=np.uint64)
    n_members = params.shape[0] if isinstance(params, np.ndarray) and params.ndim == 2 else -1
    if X.ndim != 2 or (sizes.ndim == 1 and sizes.shape[0] >= 1 and X.shape[1] != sizes[0]):
        problems.append(f"X must have shape (n, {sizes[0] if sizes.size else '?'}); got {X.shape}")
    if y.ndim != 1 or (X.ndim >= 1 and y.shape[0] != X.shape[0]):
        problems.append(f"y must have shape ({X.shape[0] if X.ndim else '?'},); got {y.shape}")
    if orders.ndim != 3 or orders.shape[0] != n_members or (X.ndim >= 1 and orders.shape[2] != X.shape[0]):
        rows = X.shape[0] if X.ndim else "?"
        problems.append(f"orders must have shape ({n_members}, epochs, {rows}); got {orders.shape}")
    elif orders.size and (orders.min() < 0 or orders.max() >= X.shape[0]):
        problems.append("orders contains row indices outside [0, n)")
    if seeds.shape != (n_members,):
        problems.append(f"dropout_seeds must have shape ({n_members},); got {seeds.shape}")
    if isinstance(batch_size, bool) or not isinstance(batch_size, (int, np.integer)) or batch_size < 1:
        problems.append(f"batch_size must be an int >= 1; got {batch_size!r}")
    if not (isinstance(lr, (int, float)) and lr > 0):
        problems.append(f"lr must be a float > 0; got {lr!r}")
    if not (isinstance(dropout, (int, float)) and 0.0 <= dropout < 1.0):
        problems.append(f"dropout must be a float in [0, 1); got {dropout!r}")
    if problems:
        raise ValueError("Invalid arguments to train_epochs: " + "; ".join(problems) + ".")

    losses = np.zeros((n_members, orders.shape[1]), dtype=np.float64)
    if orders.shape[1] == 0 or X.shape[0] == 0:
        return losses
    batch_size = int(batch_size)
    n_steps = orders.shape[1] * -(-X.shape[0] // batch_size)
    settings = (float(lr), float(dropout), _keep_threshold(float(dropout)), seeds, *_bias_corrections(n_steps))
    if min(batch_size, X.shape[0]) == 1:
        _train_one_row_kernel(params, sizes, X, y, orders, *settings, losses)
    else:
        _train_minibatch_kernel(params, sizes, X, y, orders, batch_size, *settings, losses)
    return losses
