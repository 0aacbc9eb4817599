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

Three kernels, one per shape of step. ``_train_one_row_kernel`` runs batch size 1 (the
study's retraining) of a single model: no batch dimension, each layer's outputs summed
four at a time. ``_train_ensemble_kernel`` runs batch size 1 of 2-8 members at once:
each operation of the members side by side in vector lanes (its layout below).
``_train_minibatch_kernel`` runs larger batches as vector loops over the rows of a
batch. :func:`train_epochs` checks the arguments once and picks the kernel by batch
size and number of members. All three sum every output in input order, draw the same
dropout decisions and do the same Adam arithmetic, so at batch size 1 they give the same
numbers, bit for bit (tests/test_fused.py, tests/test_fused_ensemble.py check it).

Layout (shared with ``_feedforward.py``): ``params`` is ``(n_members, n_params)``
float32; per member and layer the block holds ``W (out, in)`` row-major, then
``b (out,)``. The minibatch kernel stores activations unit-major, ``(n_units, batch)``,
so the inner loops of the forward pass and of the input-gradient run contiguously
over the batch. The ensemble kernel copies the weights into its own layout for the
call (the first layer ``[member][input][output]``, later layers
``[output][input][member]``) and back at the end; its vector operations are numba
intrinsics that emit LLVM vector IR (LLVM does not vectorise loops over 5 members).

If numba cannot be imported, ``AVAILABLE`` is False, ``UNAVAILABLE_REASON`` says why,
and the models train with the torch path.
"""

from __future__ import annotations

import functools
import logging
import time

import numpy as np

from recourse_ray.models._numba import AVAILABLE, UNAVAILABLE_REASON, jit

__all__ = ["AVAILABLE", "UNAVAILABLE_REASON", "train_epochs", "dropout_keep_mask", "warm_up"]

logger = logging.getLogger(__name__)

if AVAILABLE:  # numba imported (models/_numba.py); the ensemble kernel's intrinsics need these too
    import numba
    from llvmlite import ir as llvm_ir
    from numba.core import cgutils
    from numba.extending import intrinsic

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
# The ensemble kernel holds one unit of every member in an 8-lane vector, so it trains at
# most this many members together; train_epochs splits larger ensembles into groups.
_MAX_INTERLEAVED_MEMBERS = 8
# Width (float32 lanes) of the ensemble kernel's vectors over whole rows; padded blocks
# are multiples of it.
_VECTOR_LANES = 16


# One jit wrapper for every kernel of the package (robust to a read-only package folder).
_jit = jit


if AVAILABLE:

    @_jit(inline=True)
    def _splitmix64_output(state):
        """splitmix64's output function: 64 random bits from a state."""
        z = state
        z = (z ^ (z >> _S30)) * _MIX1
        z = (z ^ (z >> _S27)) * _MIX2
        return z ^ (z >> _S31)

    @_jit(inline=True)
    def _splitmix64(state):
        """One step of splitmix64 (Steele et al. 2014): returns (new state, 64 random bits)."""
        state = state + _GOLDEN
        return state, _splitmix64_output(state)

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


if AVAILABLE:
    # ------------------------------------------------------------------ ensemble kernel
    # The building blocks below are numba intrinsics that emit LLVM vector IR directly.
    # LLVM's loop vectoriser does not vectorise the loops they replace: loops over the
    # members of an ensemble are 2-8 iterations long, and the period-M patterns (a value
    # per member, repeated along a row) would become gathers. The IR is target-neutral
    # (plain <16 x float> / <8 x float> arithmetic, shufflevector, llvm.sqrt), so LLVM
    # lowers it to AVX-512, AVX2 or SSE alike; every operation is the IEEE float32
    # operation of the scalar code it replaces, in the same order (no FMA contraction).
    _F32 = llvm_ir.FloatType()
    _I32 = llvm_ir.IntType(32)
    _VEC16 = llvm_ir.VectorType(_F32, _VECTOR_LANES)
    _VEC8 = llvm_ir.VectorType(_F32, _MAX_INTERLEAVED_MEMBERS)

    def _vector_pointer(context, builder, array_type, array, index, vector_type):
        """Pointer to ``array[index:]`` as a ``vector_type`` (unaligned loads and stores)."""
        data = context.make_array(array_type)(context, builder, array).data
        return builder.bitcast(builder.gep(data, [index], inbounds=True), vector_type.as_pointer())

    def _load(context, builder, array_type, array, index, vector_type):
        ptr = _vector_pointer(context, builder, array_type, array, index, vector_type)
        return builder.load(ptr, align=4, typ=vector_type), ptr

    def _splat(builder, value, vector_type):
        one = builder.insert_element(llvm_ir.Constant(vector_type, None), value, llvm_ir.Constant(_I32, 0))
        zeros = llvm_ir.Constant(llvm_ir.VectorType(_I32, vector_type.count), [0] * vector_type.count)
        return builder.shuffle_vector(one, llvm_ir.Constant(vector_type, None), zeros)

    def _constant(value, vector_type=_VEC16):
        return llvm_ir.Constant(vector_type, [float(np.float32(value))] * vector_type.count)

    def _index(value, like):
        return llvm_ir.Constant(like.type, value)

    def _adam_lanes(builder, p, grad, exp_avg, exp_avg_sq, neg_step, bias_correction2_sqrt):
        """``_adam_step`` on 16 lanes, operation by operation: returns (p, exp_avg, exp_avg_sq)."""
        sqrt = cgutils.get_or_insert_function(
            builder.module, llvm_ir.FunctionType(_VEC16, [_VEC16]), f"llvm.sqrt.v{_VECTOR_LANES}f32"
        )
        exp_avg = builder.fadd(exp_avg, builder.fmul(_constant(1.0 - _BETA1), builder.fsub(grad, exp_avg)))
        scaled_grad = builder.fmul(_constant(1.0 - _BETA2), grad)
        exp_avg_sq = builder.fadd(builder.fmul(exp_avg_sq, _constant(_BETA2)), builder.fmul(scaled_grad, grad))
        denom = builder.fadd(builder.fdiv(builder.call(sqrt, [exp_avg_sq]), bias_correction2_sqrt), _constant(_EPS))
        return builder.fadd(p, builder.fdiv(builder.fmul(neg_step, exp_avg), denom)), exp_avg, exp_avg_sq

    def _member_pattern_masks(n_members):
        """Shuffle masks of the ``n_members`` 16-lane vectors that repeat one value per member.

        Lane ``u`` of vector ``q`` holds member ``(16 q + u) % n_members``: in a row laid
        out ``[.., member]`` the vector starting at element ``16 q`` (modulo ``16 M``) needs it.
        """
        return [
            llvm_ir.Constant(llvm_ir.VectorType(_I32, _VECTOR_LANES), [(16 * q + u) % n_members for u in range(16)])
            for q in range(n_members)
        ]

    def _concatenate(builder, vectors):
        """One vector of ``vectors`` (16 lanes each) end to end, padded to a power of two with undef."""
        count = 1
        while count < len(vectors):
            count *= 2
        vectors = list(vectors) + [llvm_ir.Constant(_VEC16, llvm_ir.Undefined)] * (count - len(vectors))
        width = _VECTOR_LANES
        while len(vectors) > 1:
            mask = llvm_ir.Constant(llvm_ir.VectorType(_I32, 2 * width), list(range(2 * width)))
            vectors = [builder.shuffle_vector(vectors[k], vectors[k + 1], mask) for k in range(0, len(vectors), 2)]
            width *= 2
        return vectors[0]

    def _strided_dot(n_rows, n_lanes, broadcast_x):
        """An intrinsic summing ``n_rows`` rows of ``n_lanes``-lane products, each over ``k`` in order.

        (The kernel uses it for the first layer: 16 lanes, ``x`` broadcast.)

        ``out[o0 + r * out_stride + u] = sum_k W[w0 + r * row_stride + k * k_stride + u] * xk[u]``
        for ``u < n_lanes``, with ``xk = x[x0 + k * x_stride + u]`` (or, broadcast, the scalar
        ``x[x0 + k * x_stride]`` in every lane). The partial sums stay in registers: ``n_rows``
        independent add chains hide the add latency.
        """
        vector_type = llvm_ir.VectorType(_F32, n_lanes)

        @intrinsic
        def strided_dot(typingctx, W, w0, row_stride, k_stride, x, x0, x_stride, count, out, o0, out_stride):
            sig = numba.types.void(W, w0, row_stride, k_stride, x, x0, x_stride, count, out, o0, out_stride)

            def codegen(context, builder, signature, args):
                W_, w0_, row_stride_, k_stride_, x_, x0_, x_stride_, count_, out_, o0_, out_stride_ = args
                types_ = signature.args
                sums = [cgutils.alloca_once_value(builder, llvm_ir.Constant(vector_type, None)) for _ in range(n_rows)]
                with cgutils.for_range(builder, count_) as loop:
                    k = loop.index
                    x_at = builder.add(x0_, builder.mul(k, x_stride_))
                    if broadcast_x:
                        scalar, _ = _load(context, builder, types_[4], x_, x_at, _F32)
                        xk = _splat(builder, scalar, vector_type)
                    else:
                        xk, _ = _load(context, builder, types_[4], x_, x_at, vector_type)
                    w_at = builder.add(w0_, builder.mul(k, k_stride_))
                    for r in range(n_rows):
                        at = builder.add(w_at, builder.mul(_index(r, w_at), row_stride_))
                        w, _ = _load(context, builder, types_[0], W_, at, vector_type)
                        total = builder.load(sums[r], typ=vector_type)
                        builder.store(builder.fadd(total, builder.fmul(w, xk)), sums[r])
                for r in range(n_rows):
                    at = builder.add(o0_, builder.mul(_index(r, o0_), out_stride_))
                    ptr = _vector_pointer(context, builder, types_[8], out_, at, vector_type)
                    builder.store(builder.load(sums[r], typ=vector_type), ptr, align=4)
                return context.get_dummy_value()

            return sig, codegen

        return strided_dot

    def _interleaved_dot(n_rows):
        """An intrinsic: the forward sums of ``n_rows`` output rows of an interleaved layer, one member per lane.

        ``out[o0 + 8 r + m] = sum_i W[w0 + r * row_stride + i * M + m] * x[x0 + i * M + m]``
        for ``m < M = len(lanes)`` (lanes ``M..7`` of each output get junk), each sum in
        input order. Loads run 16 lanes wide, ``G = 16 // M`` inputs of every member per
        load, as do the products; the ``G`` inputs' 8-lane parts are then added one after
        the other. (8-lane loads at a stride of ``M`` floats cross cache lines often and
        made the loads the limit.) Inputs beyond a multiple of ``G`` take 8-lane loads.
        """

        @intrinsic
        def interleaved_dot(typingctx, W, w0, row_stride, x, x0, n_inputs, out, o0, lanes):
            n_members = lanes.count
            group = _VECTOR_LANES // n_members
            sig = numba.types.void(W, w0, row_stride, x, x0, n_inputs, out, o0, lanes)
            parts = [
                llvm_ir.Constant(llvm_ir.VectorType(_I32, 8), list(range(g * n_members, g * n_members + 8)))
                for g in range(group)
            ]

            def codegen(context, builder, signature, args):
                W_, w0_, row_stride_, x_, x0_, n_inputs_, out_, o0_, _ = args
                types_ = signature.args
                undefined = llvm_ir.Constant(_VEC16, llvm_ir.Undefined)
                sums = [cgutils.alloca_once_value(builder, llvm_ir.Constant(_VEC8, None)) for _ in range(n_rows)]
                rows = [builder.add(w0_, builder.mul(_index(r, w0_), row_stride_)) for r in range(n_rows)]

                def accumulate(r, vector):
                    builder.store(builder.fadd(builder.load(sums[r], typ=_VEC8), vector), sums[r])

                n_groups = builder.udiv(n_inputs_, _index(group, n_inputs_))
                with cgutils.for_range(builder, n_groups) as loop:
                    offset = builder.mul(loop.index, _index(group * n_members, n_inputs_))
                    xs, _ = _load(context, builder, types_[3], x_, builder.add(x0_, offset), _VEC16)
                    for r in range(n_rows):
                        w, _ = _load(context, builder, types_[0], W_, builder.add(rows[r], offset), _VEC16)
                        products = builder.fmul(w, xs)
                        for g in range(group):
                            accumulate(r, builder.shuffle_vector(products, undefined, parts[g]))
                first = builder.mul(n_groups, _index(group, n_inputs_))
                with cgutils.for_range_slice(builder, first, n_inputs_, _index(1, first)) as (i, _):
                    offset = builder.mul(i, _index(n_members, i))
                    xs, _ = _load(context, builder, types_[3], x_, builder.add(x0_, offset), _VEC8)
                    for r in range(n_rows):
                        w, _ = _load(context, builder, types_[0], W_, builder.add(rows[r], offset), _VEC8)
                        accumulate(r, builder.fmul(w, xs))
                for r in range(n_rows):
                    at = builder.add(o0_, _index(8 * r, o0_))
                    ptr = _vector_pointer(context, builder, types_[6], out_, at, _VEC8)
                    builder.store(builder.load(sums[r], typ=_VEC8), ptr, align=4)
                return context.get_dummy_value()

            return sig, codegen

        return interleaved_dot

    _dot_8_interleaved_rows = _interleaved_dot(8)
    _dot_4_interleaved_rows = _interleaved_dot(4)
    _dot_1_interleaved_row = _interleaved_dot(1)
    _dot_4_rows_of_16_broadcast = _strided_dot(4, 16, True)
    _dot_2_rows_of_16_broadcast = _strided_dot(2, 16, True)
    _dot_1_row_of_16_broadcast = _strided_dot(1, 16, True)

    @intrinsic
    def _copy_8_lanes(typingctx, dst, d0, src, s0):
        """``dst[d0:d0 + 8] = src[s0:s0 + 8]``, one load and one store."""
        sig = numba.types.void(dst, d0, src, s0)

        def codegen(context, builder, signature, args):
            dst_, d0_, src_, s0_ = args
            value, _ = _load(context, builder, signature.args[2], src_, s0_, _VEC8)
            builder.store(value, _vector_pointer(context, builder, signature.args[0], dst_, d0_, _VEC8), align=4)
            return context.get_dummy_value()

        return sig, codegen

    @intrinsic
    def _interleaved_row_backward(
        typingctx, W, w0, delta_in, di0, x, x0, delta_out, do0, row_length, exp_avg, exp_avg_sq, neg_step,
        bias_correction2_sqrt, lanes,
    ):
        """Backward pass and Adam update of one output unit's row of an interleaved layer.

        The row ``W[w0 : w0 + row_length]`` holds the unit's weights ``[input][member]``;
        ``d_m = delta_out[do0 + m]`` is the unit's error per member (M = ``len(lanes)``).
        For every ``t = i * M + m``: ``delta_in[di0 + t] += W[t] * d_m`` (with the weight
        before the update), ``grad = d_m * x[x0 + t]`` and Adam updates ``W[t]`` (moments in
        ``exp_avg``/``exp_avg_sq`` at the same offsets). ``row_length`` is a multiple of 16.
        """
        n_members = lanes.count
        sig = numba.types.void(
            W, w0, delta_in, di0, x, x0, delta_out, do0, row_length, exp_avg, exp_avg_sq, neg_step,
            bias_correction2_sqrt, lanes,
        )

        def codegen(context, builder, signature, args):
            W_, w0_, delta_in_, di0_, x_, x0_, delta_out_, do0_, length_, avg_, avg_sq_, neg_step_, bc2_, _ = args
            types_ = signature.args
            errors, _ = _load(context, builder, types_[6], delta_out_, do0_, _VEC8)
            patterns = [builder.shuffle_vector(errors, errors, mask) for mask in _member_pattern_masks(n_members)]
            neg_step_v = _splat(builder, neg_step_, _VEC16)
            bc2_v = _splat(builder, bc2_, _VEC16)
            n_vectors = builder.udiv(length_, _index(_VECTOR_LANES, length_))

            def update(offset, pattern):
                at = builder.add(w0_, offset)
                w, w_ptr = _load(context, builder, types_[0], W_, at, _VEC16)
                d_in, d_in_ptr = _load(context, builder, types_[2], delta_in_, builder.add(di0_, offset), _VEC16)
                builder.store(builder.fadd(d_in, builder.fmul(w, pattern)), d_in_ptr, align=4)
                xs, _ = _load(context, builder, types_[4], x_, builder.add(x0_, offset), _VEC16)
                avg, avg_ptr = _load(context, builder, types_[9], avg_, at, _VEC16)
                avg_sq, avg_sq_ptr = _load(context, builder, types_[10], avg_sq_, at, _VEC16)
                w, avg, avg_sq = _adam_lanes(builder, w, builder.fmul(pattern, xs), avg, avg_sq, neg_step_v, bc2_v)
                builder.store(w, w_ptr, align=4)
                builder.store(avg, avg_ptr, align=4)
                builder.store(avg_sq, avg_sq_ptr, align=4)

            # Vector q of every block of M vectors uses pattern q.
            n_blocks = builder.udiv(n_vectors, _index(n_members, n_vectors))
            block = _index(_VECTOR_LANES * n_members, n_vectors)
            with cgutils.for_range(builder, n_blocks) as loop:
                start = builder.mul(loop.index, block)
                for q in range(n_members):
                    update(builder.add(start, _index(_VECTOR_LANES * q, start)), patterns[q])
            left = builder.sub(n_vectors, builder.mul(n_blocks, _index(n_members, n_vectors)))
            start = builder.mul(n_blocks, block)
            for q in range(n_members - 1):
                with builder.if_then(builder.icmp_unsigned(">", left, _index(q, left))):
                    update(builder.add(start, _index(_VECTOR_LANES * q, start)), patterns[q])
            return context.get_dummy_value()

        return sig, codegen

    @intrinsic
    def _transposed_rows_backward(
        typingctx, W, w0, delta_out, do0, x, x0, n_rows, row_length, exp_avg, exp_avg_sq, neg_step,
        bias_correction2_sqrt,
    ):
        """Gradient and Adam update of one member's block of the transposed (first) layer.

        Row ``i`` (input ``i``) of the block at ``w0`` holds the weights to every output:
        ``grad[i, j] = delta_out[do0 + j] * x[x0 + i]``; ``row_length`` is a multiple of 16.
        """
        sig = numba.types.void(
            W, w0, delta_out, do0, x, x0, n_rows, row_length, exp_avg, exp_avg_sq, neg_step, bias_correction2_sqrt
        )

        def codegen(context, builder, signature, args):
            W_, w0_, delta_out_, do0_, x_, x0_, n_rows_, length_, avg_, avg_sq_, neg_step_, bc2_ = args
            types_ = signature.args
            neg_step_v = _splat(builder, neg_step_, _VEC16)
            bc2_v = _splat(builder, bc2_, _VEC16)
            n_vectors = builder.udiv(length_, _index(_VECTOR_LANES, length_))
            with cgutils.for_range(builder, n_rows_) as rows:
                i = rows.index
                scalar, _ = _load(context, builder, types_[4], x_, builder.add(x0_, i), _F32)
                xi = _splat(builder, scalar, _VEC16)
                row = builder.add(w0_, builder.mul(i, length_))
                with cgutils.for_range(builder, n_vectors) as vectors:
                    offset = builder.mul(vectors.index, _index(_VECTOR_LANES, i))
                    d, _ = _load(context, builder, types_[2], delta_out_, builder.add(do0_, offset), _VEC16)
                    at = builder.add(row, offset)
                    w, w_ptr = _load(context, builder, types_[0], W_, at, _VEC16)
                    avg, avg_ptr = _load(context, builder, types_[8], avg_, at, _VEC16)
                    avg_sq, avg_sq_ptr = _load(context, builder, types_[9], avg_sq_, at, _VEC16)
                    w, avg, avg_sq = _adam_lanes(builder, w, builder.fmul(d, xi), avg, avg_sq, neg_step_v, bc2_v)
                    builder.store(w, w_ptr, align=4)
                    builder.store(avg, avg_ptr, align=4)
                    builder.store(avg_sq, avg_sq_ptr, align=4)
            return context.get_dummy_value()

        return sig, codegen

    @intrinsic
    def _to_interleaved(typingctx, dst, d0, src, s0, src_stride, count, lanes):
        """``dst[d0 + j * M + m] = src[s0 + m * src_stride + j]`` for ``j < count`` (a multiple of 16)."""
        n_members = lanes.count
        sig = numba.types.void(dst, d0, src, s0, src_stride, count, lanes)
        masks = [
            llvm_ir.Constant(
                llvm_ir.VectorType(_I32, _VECTOR_LANES),
                [((16 * q + u) % n_members) * 16 + (16 * q + u) // n_members for u in range(16)],
            )
            for q in range(n_members)
        ]

        def codegen(context, builder, signature, args):
            dst_, d0_, src_, s0_, stride_, count_, _ = args
            types_ = signature.args
            with cgutils.for_range(builder, builder.udiv(count_, _index(_VECTOR_LANES, count_))) as loop:
                j0 = builder.mul(loop.index, _index(_VECTOR_LANES, count_))
                rows = []
                for m in range(n_members):
                    at = builder.add(s0_, builder.add(builder.mul(_index(m, j0), stride_), j0))
                    rows.append(_load(context, builder, types_[2], src_, at, _VEC16)[0])
                members = _concatenate(builder, rows)
                undefined = llvm_ir.Constant(members.type, llvm_ir.Undefined)
                out = builder.add(d0_, builder.mul(j0, _index(n_members, j0)))
                for q in range(n_members):
                    vector = builder.shuffle_vector(members, undefined, masks[q])
                    at = builder.add(out, _index(_VECTOR_LANES * q, out))
                    builder.store(vector, _vector_pointer(context, builder, types_[0], dst_, at, _VEC16), align=4)
            return context.get_dummy_value()

        return sig, codegen

    @intrinsic
    def _to_member_major(typingctx, dst, d0, dst_stride, src, s0, count, lanes):
        """``dst[d0 + m * dst_stride + j] = src[s0 + j * M + m]`` for ``j < count`` (a multiple of 16)."""
        n_members = lanes.count
        sig = numba.types.void(dst, d0, dst_stride, src, s0, count, lanes)
        masks = [
            llvm_ir.Constant(llvm_ir.VectorType(_I32, _VECTOR_LANES), [u * n_members + m for u in range(16)])
            for m in range(n_members)
        ]

        def codegen(context, builder, signature, args):
            dst_, d0_, stride_, src_, s0_, count_, _ = args
            types_ = signature.args
            with cgutils.for_range(builder, builder.udiv(count_, _index(_VECTOR_LANES, count_))) as loop:
                j0 = builder.mul(loop.index, _index(_VECTOR_LANES, count_))
                start = builder.add(s0_, builder.mul(j0, _index(n_members, j0)))
                parts = []
                for q in range(n_members):
                    at = builder.add(start, _index(_VECTOR_LANES * q, start))
                    parts.append(_load(context, builder, types_[3], src_, at, _VEC16)[0])
                units = _concatenate(builder, parts)
                undefined = llvm_ir.Constant(units.type, llvm_ir.Undefined)
                for m in range(n_members):
                    vector = builder.shuffle_vector(units, undefined, masks[m])
                    at = builder.add(d0_, builder.add(builder.mul(_index(m, j0), stride_), j0))
                    builder.store(vector, _vector_pointer(context, builder, types_[0], dst_, at, _VEC16), align=4)
            return context.get_dummy_value()

        return sig, codegen

    @_jit(inline=True)
    def _relu_dropout_at(z, out, mult, stream_offsets, steps_drawn, use_dropout, keep_threshold, keep_scale):
        """``_relu_dropout`` with each draw computed from its position in its member's stream.

        splitmix64's state after ``n`` steps is ``seed + n * golden`` (mod 2^64), so the
        draw of entry ``k`` is the output function at ``stream_offsets[k] + steps_drawn``
        (``stream_offsets[k]`` = seed + (units before it in a step + 1) * golden, ``steps_drawn``
        = draws of the previous steps times golden): the same decisions as drawing the stream
        in order, but independent of each other, so the loop vectorises. ``out`` may be ``z``.
        """
        zero = np.float32(0.0)
        for k in range(z.shape[0]):
            scale = np.float32(1.0)
            if use_dropout:
                kept = (_splitmix64_output(stream_offsets[k] + steps_drawn) >> _S40) < keep_threshold
                scale = keep_scale if kept else zero
            zk = z[k]
            active = zk > zero
            out[k] = zk * scale if active else zero
            mult[k] = scale if active else zero

    @_jit
    def _train_ensemble_kernel(
        params, layer_sizes, X, y, orders, lr, dropout, keep_threshold, dropout_seeds,
        bias_correction1, bias_correction2_sqrt, losses, lanes,
    ):
        """``train_epochs`` at batch size 1 for 2-8 members at once.

        ``lanes`` is a tuple of ``n_members`` zeros: its length is a compile-time constant
        of the vector code (shuffle patterns, unrolled loops), so numba compiles the kernel
        once per group size. Computes, member by member, exactly what ``_train_one_row_kernel`` computes (same
        sums in the same order, same dropout decisions, same Adam arithmetic), with the
        members' copies of each operation side by side in vector lanes. The parameters are
        packed on entry into the kernel's own layout and unpacked at the end:

        - the first layer, **transposed** per member: ``W[member][input][output]`` (outputs
          padded to a multiple of 16 with zero weights, which stay zero), bias
          ``[member][output]``: its forward pass is a 16-lane vector over outputs;
        - every later layer **interleaved**: ``W[output][input][member]`` (each output's
          row padded to a multiple of 16 with zeros), bias ``[output][member]``: its
          forward pass sums in 8-lane vectors holding one member each, its backward pass
          and Adam run over whole rows in 16-lane vectors.

        Activations, their derivatives and errors of the later layers' units are stored
        ``[unit][member]``, one padded region per layer (``region``); the first layer's
        are also kept ``[member][unit]``. The backward pass computes the errors of a
        layer's inputs, the weight gradient and the Adam update in one pass over each row
        (the errors from the weights before their update), so the backward pass loads and
        stores each weight and its two moments once, and no gradient array exists.
        """
        n_members, n_par = params.shape
        n_epochs = orders.shape[1]
        n = orders.shape[2]
        n_layers = layer_sizes.shape[0] - 1
        n_in = layer_sizes[0]
        w_off, b_off, u_off = _layer_offsets(layer_sizes)
        n_hidden_units = u_off[n_layers] - n_in
        width0 = layer_sizes[1]
        padded0 = -(-width0 // _VECTOR_LANES) * _VECTOR_LANES
        zero = np.float32(0.0)

        # Packed parameters: block l at packed_w[l] (weights) and packed_b[l] (bias).
        packed_w = np.zeros(n_layers, np.int64)
        packed_b = np.zeros(n_layers, np.int64)
        row_length = np.zeros(n_layers, np.int64)  # padded row of an interleaved layer
        size = 0
        for l in range(n_layers):
            fan_in = layer_sizes[l]
            fan_out = layer_sizes[l + 1]
            packed_w[l] = size
            if l == 0:
                packed_b[l] = size + n_members * fan_in * padded0
                size = packed_b[l] + n_members * padded0
            else:
                row_length[l] = -(-(fan_in * n_members) // _VECTOR_LANES) * _VECTOR_LANES
                packed_b[l] = size + fan_out * row_length[l]
                size = packed_b[l] + fan_out * n_members
        # The 8-lane loads of the forward pass read up to 7 elements past a row.
        packed = np.zeros(size + 2 * _VECTOR_LANES, np.float32)
        exp_avg = np.zeros(size, np.float32)
        exp_avg_sq = np.zeros(size, np.float32)
        for m in range(n_members):
            for l in range(n_layers):
                fan_in = layer_sizes[l]
                fan_out = layer_sizes[l + 1]
                for j in range(fan_out):
                    for i in range(fan_in):
                        w = params[m, w_off[l] + j * fan_in + i]
                        if l == 0:
                            packed[packed_w[0] + (m * fan_in + i) * padded0 + j] = w
                        else:
                            packed[packed_w[l] + j * row_length[l] + i * n_members + m] = w
                    if l == 0:
                        packed[packed_b[0] + m * padded0 + j] = params[m, b_off[0] + j]
                    else:
                        packed[packed_b[l] + j * n_members + m] = params[m, b_off[l] + j]

        # Region g (1 <= g <= n_layers) holds the outputs of layer g - 1, [unit][member],
        # padded to a multiple of 16 plus 16 (vector loads and stores run past the end).
        region = np.zeros(n_layers + 2, np.int64)
        for g in range(1, n_layers + 1):
            units = padded0 if g == 1 else layer_sizes[g]
            region[g + 1] = region[g] + -(-(units * n_members) // _VECTOR_LANES) * _VECTOR_LANES + _VECTOR_LANES
        acts = np.zeros(region[n_layers + 1], np.float32)  # post-dropout activations, logits
        mult = np.zeros(region[n_layers + 1], np.float32)  # d(activation)/d(pre-activation)
        delta = np.zeros(region[n_layers + 1], np.float32)  # d(loss)/d(pre-activation)
        inputs = np.zeros(n_members * n_in + _VECTOR_LANES, np.float32)  # [member][input]
        z_first = np.zeros(n_members * padded0, np.float32)  # first layer, [member][unit]
        a_first = np.zeros(n_members * padded0, np.float32)
        mult_first = np.zeros(n_members * padded0, np.float32)
        delta_first = np.zeros(n_members * padded0, np.float32)
        widest = 1
        for l in range(1, n_layers):
            widest = max(widest, layer_sizes[l + 1])
        sums = np.zeros(widest * _MAX_INTERLEAVED_MEMBERS + _VECTOR_LANES, np.float32)  # [unit][8 lanes]

        # Dropout: entry k of a layer's units draws at position offsets[k] (+ the draws of
        # the previous steps) of its member's stream, in the order (layer, unit) of a step.
        offsets = np.zeros(n_members * padded0 + n_members * max(n_hidden_units, 1), np.uint64)
        for l in range(n_layers - 1):
            units_before = u_off[l + 1] - n_in
            for m in range(n_members):
                for j in range(layer_sizes[l + 1]):
                    position = dropout_seeds[m] + np.uint64(units_before + j + 1) * _GOLDEN
                    if l == 0:
                        offsets[m * padded0 + j] = position
                    else:
                        offsets[n_members * (padded0 + units_before - width0) + j * n_members + m] = position
        use_dropout = dropout > 0.0
        keep_scale = np.float32(1.0) / np.float32(1.0 - dropout)
        epoch_loss = np.zeros(n_members, np.float64)
        rows = np.zeros(n_members, np.int64)

        step = 0
        for e in range(n_epochs):
            epoch_loss[:] = 0.0
            for s in range(n):
                steps_drawn = np.uint64(step) * np.uint64(n_hidden_units) * _GOLDEN
                for m in range(n_members):
                    r = orders[m, e, s]
                    rows[m] = r
                    for i in range(n_in):
                        inputs[m * n_in + i] = X[r, i]

                # Forward, first layer: per member, 16 outputs per vector, each summed over
                # the inputs in order, then the bias.
                for m in range(n_members):
                    block = packed_w[0] + m * n_in * padded0
                    out = m * padded0
                    b = 0
                    while b + 4 * _VECTOR_LANES <= padded0:
                        _dot_4_rows_of_16_broadcast(
                            packed, block + b, _VECTOR_LANES, padded0, inputs, m * n_in, 1, n_in, z_first, out + b,
                            _VECTOR_LANES,
                        )
                        b += 4 * _VECTOR_LANES
                    if b + 2 * _VECTOR_LANES <= padded0:
                        _dot_2_rows_of_16_broadcast(
                            packed, block + b, _VECTOR_LANES, padded0, inputs, m * n_in, 1, n_in, z_first, out + b,
                            _VECTOR_LANES,
                        )
                        b += 2 * _VECTOR_LANES
                    if b < padded0:
                        _dot_1_row_of_16_broadcast(
                            packed, block + b, _VECTOR_LANES, padded0, inputs, m * n_in, 1, n_in, z_first, out + b,
                            _VECTOR_LANES,
                        )
                bias = packed[packed_b[0] : packed_b[0] + n_members * padded0]
                for k in range(n_members * padded0):
                    z_first[k] = z_first[k] + bias[k]
                if n_layers == 1:
                    for m in range(n_members):
                        acts[region[1] + m] = z_first[m * padded0]
                else:
                    _relu_dropout_at(
                        z_first, a_first, mult_first, offsets[: n_members * padded0], steps_drawn, use_dropout,
                        keep_threshold, keep_scale,
                    )
                    _to_interleaved(acts, region[1], a_first, 0, padded0, padded0, lanes)
                    _to_interleaved(mult, region[1], mult_first, 0, padded0, padded0, lanes)

                # Forward, interleaved layers: 8 outputs at a time, one member per lane.
                for l in range(1, n_layers):
                    fan_in = layer_sizes[l]
                    fan_out = layer_sizes[l + 1]
                    length = row_length[l]
                    x0 = region[l]
                    j = 0
                    while j + 8 <= fan_out:
                        w0 = packed_w[l] + j * length
                        _dot_8_interleaved_rows(packed, w0, length, acts, x0, fan_in, sums, j * 8, lanes)
                        j += 8
                    while j + 4 <= fan_out:
                        w0 = packed_w[l] + j * length
                        _dot_4_interleaved_rows(packed, w0, length, acts, x0, fan_in, sums, j * 8, lanes)
                        j += 4
                    while j < fan_out:
                        w0 = packed_w[l] + j * length
                        _dot_1_interleaved_row(packed, w0, length, acts, x0, fan_in, sums, j * 8, lanes)
                        j += 1
                    out = region[l + 1]
                    for j in range(fan_out):  # in order: each copy's 8 - M spare lanes are overwritten by the next
                        _copy_8_lanes(acts, out + j * n_members, sums, j * 8)
                    n_out = fan_out * n_members
                    # The last copy's spare lanes: the padding of the next layer's rows reads zeros.
                    acts[out + n_out : out + n_out + 8] = zero
                    z = acts[out : out + n_out]
                    bias = packed[packed_b[l] : packed_b[l] + n_out]
                    for k in range(n_out):
                        z[k] = z[k] + bias[k]
                    if l < n_layers - 1:
                        first = n_members * (padded0 + u_off[l + 1] - n_in - width0)
                        _relu_dropout_at(
                            z, z, mult[out : out + n_out], offsets[first : first + n_out], steps_drawn, use_dropout,
                            keep_threshold, keep_scale,
                        )

                for m in range(n_members):
                    loss, dz = _bce_with_logits(acts[region[n_layers] + m], y[rows[m]])
                    delta[region[n_layers] + m] = dz
                    epoch_loss[m] += np.float64(loss)

                # Backward and Adam, interleaved layers, top down.
                neg_step = np.float32(-(lr / bias_correction1[step]))
                bc2 = bias_correction2_sqrt[step]
                for l in range(n_layers - 1, 0, -1):
                    fan_in = layer_sizes[l]
                    fan_out = layer_sizes[l + 1]
                    length = row_length[l]
                    n_in_units = fan_in * n_members
                    delta_in = delta[region[l] : region[l] + n_in_units]
                    delta_in[:] = zero
                    for j in range(fan_out):
                        _interleaved_row_backward(
                            packed, packed_w[l] + j * length, delta, region[l], acts, region[l], delta,
                            region[l + 1] + j * n_members, length, exp_avg, exp_avg_sq, neg_step, bc2, lanes,
                        )
                    at = packed_b[l]
                    n_out = fan_out * n_members
                    _adam_step(
                        packed[at : at + n_out], delta[region[l + 1] : region[l + 1] + n_out], exp_avg[at : at + n_out],
                        exp_avg_sq[at : at + n_out], neg_step, bc2,
                    )
                    mult_in = mult[region[l] : region[l] + n_in_units]
                    for k in range(n_in_units):
                        delta_in[k] *= mult_in[k]

                # Backward and Adam, first layer, member by member.
                if n_layers == 1:
                    for m in range(n_members):
                        delta_first[m * padded0] = delta[region[1] + m]
                else:
                    _to_member_major(delta_first, 0, padded0, delta, region[1], padded0, lanes)
                block = n_in * padded0
                for m in range(n_members):
                    _transposed_rows_backward(
                        packed, packed_w[0] + m * block, delta_first, m * padded0, inputs, m * n_in, n_in, padded0,
                        exp_avg, exp_avg_sq, neg_step, bc2,
                    )
                at = packed_b[0]
                _adam_step(
                    packed[at : at + n_members * padded0], delta_first, exp_avg[at : at + n_members * padded0],
                    exp_avg_sq[at : at + n_members * padded0], neg_step, bc2,
                )
                step += 1
            for m in range(n_members):
                losses[m, e] = epoch_loss[m] / n

        for m in range(n_members):
            for l in range(n_layers):
                fan_in = layer_sizes[l]
                fan_out = layer_sizes[l + 1]
                for j in range(fan_out):
                    for i in range(fan_in):
                        if l == 0:
                            w = packed[packed_w[0] + (m * fan_in + i) * padded0 + j]
                        else:
                            w = packed[packed_w[l] + j * row_length[l] + i * n_members + m]
                        params[m, w_off[l] + j * fan_in + i] = w
                    if l == 0:
                        params[m, b_off[0] + j] = packed[packed_b[0] + m * padded0 + j]
                    else:
                        params[m, b_off[l] + j] = packed[packed_b[l] + j * n_members + m]


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


def _member_groups(n_members: int) -> list[tuple[int, int]]:
    """(start, stop) of the member groups the ensemble kernel trains together: as equal as possible, <= 8 each."""
    n_groups = -(-n_members // _MAX_INTERLEAVED_MEMBERS)
    bounds = [round(g * n_members / n_groups) for g in range(n_groups + 1)]
    return list(zip(bounds[:-1], bounds[1:]))


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


def warm_up(ensemble_members: int = 5) -> float:
    """Compile (or load from the cache) the kernels now; returns the seconds it took.

    The one-row and minibatch kernels, and the ensemble kernel for groups of
    ``ensemble_members`` members (it is compiled once per group size; the study's deep
    ensembles have 5; 0 or 1 skips it). A sweep driver can call this once per node before
    starting tasks, so that the tasks load the cached kernels instead of compiling them
    side by side.
    """
    start = time.perf_counter()
    X, y = np.zeros((2, 2), dtype=np.float32), np.zeros(2, dtype=np.float32)
    runs = [(1, 1), (1, 2)]  # (members, batch size): the one-row kernel, then the minibatch kernel
    if ensemble_members > 1:
        runs.append((min(int(ensemble_members), _MAX_INTERLEAVED_MEMBERS), 1))
    for members, batch_size in runs:
        params = np.zeros((members, 3), dtype=np.float32)
        orders = np.zeros((members, 1, 2), dtype=np.int64)
        train_epochs(params, np.array([2, 1]), X, y, orders, batch_size, 1e-3, 0.0, np.zeros(members, dtype=np.uint64))
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
    kernel for one member and the ensemble kernel for several (groups of at most 8
    members trained together), larger batches the minibatch kernel; the numbers do not
    depend on which.

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
    if min(batch_size, X.shape[0]) == 1 and n_members == 1:
        _train_one_row_kernel(params, sizes, X, y, orders, *settings, losses)
    elif min(batch_size, X.shape[0]) == 1:
        lr_, dropout_, keep_threshold, _, bias_correction1, bias_correction2_sqrt = settings
        for start, stop in _member_groups(n_members):
            _train_ensemble_kernel(
                params[start:stop], sizes, X, y, orders[start:stop], lr_, dropout_, keep_threshold, seeds[start:stop],
                bias_correction1, bias_correction2_sqrt, losses[start:stop], (0,) * (stop - start),
            )
    else:
        _train_minibatch_kernel(params, sizes, X, y, orders, batch_size, *settings, losses)
    return losses
