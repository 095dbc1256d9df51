"""Compiled building blocks of one unit's local gradient (numba): the MLP's layers as loop nests.

The first layer's products are register-blocked loops over a batch tile [R, n_in] that stays in
the core's cache (`_tile_forward`, `_tile_weight_grad`); the small layers above it, ReLU,
softmax and their backward run in `_upper_unit`. `kernels` drives them over units and applies
Eq. 2; `_compiled` (numba.njit with the on-disk cache) compiles every kernel here and there.
"""

from __future__ import annotations

import os

import numpy as np

try:  # numba is a dependency; without it (or when disabled) the PyTorch path runs
    import numba
except ImportError:  # pragma: no cover - exercised only where numba is missing
    numba = None


def available() -> bool:
    """True where numba imports (the kernels can compile)."""
    return numba is not None



_FASTMATH = {"reassoc", "contract", "nsz"}  # vectorized sums; no nnan/ninf: NaN must propagate


# Tests only: DECENTRAL_NUMBA_BOUNDSCHECK=1 (read once, here) compiles every kernel with numba's
# bounds checks and without the on-disk cache, so an out-of-range index raises IndexError
# instead of reading or writing past an array (see tests/test_data_validation.py).
BOUNDSCHECK = os.environ.get("DECENTRAL_NUMBA_BOUNDSCHECK", "") not in ("", "0")


def _compiled(**options):
    """numba.njit with the on-disk cache, or without it where no cache folder is writable."""
    def wrap(fn):
        if BOUNDSCHECK:
            return numba.njit(boundscheck=True, fastmath=_FASTMATH, **options)(fn)
        try:
            return numba.njit(cache=True, fastmath=_FASTMATH, **options)(fn)
        except RuntimeError:  # numba found no writable cache locator (a read-only install)
            return numba.njit(fastmath=_FASTMATH, **options)(fn)
    return wrap


if numba is not None:
    _jit = _compiled()

    @_jit
    def _dense(w, bias, a, z):
        """z [fo, B] <- w [fo, fi] @ a [fi, B] + bias [fo] (loops vectorize over the batch)."""
        for o in range(w.shape[0]):
            for b in range(z.shape[1]):
                z[o, b] = bias[o]
            for i in range(w.shape[1]):
                for b in range(z.shape[1]):
                    z[o, b] += w[o, i] * a[i, b]

    @_jit
    def _relu(src, dst):
        """dst <- max(src, 0), NaN kept (as torch.relu does)."""
        for i in range(src.shape[0]):
            for b in range(src.shape[1]):
                v = src[i, b]
                dst[i, b] = np.float32(0) if v <= 0 else v

    @_jit
    def _softmax_delta(z, labels, d):
        """d [C, B] <- (softmax(z) - onehot(labels)) / B over classes; returns the mean cross-entropy."""
        n_classes, batch = z.shape
        top, total = z[0, :].copy(), np.zeros(batch, z.dtype)
        for c in range(1, n_classes):
            for b in range(batch):
                top[b] = max(top[b], z[c, b])
        for c in range(n_classes):
            for b in range(batch):
                d[c, b] = np.exp(z[c, b] - top[b])
                total[b] += d[c, b]
        loss = 0.0
        for b in range(batch):
            loss += np.log(total[b]) + top[b] - z[labels[b], b]
        scale = np.float32(1.0 / batch)
        for c in range(n_classes):
            for b in range(batch):
                d[c, b] = (d[c, b] / total[b] - np.float32(labels[b] == c)) * scale
        return loss / batch

    @_jit
    def _row_sum(m, row):
        acc = np.float32(0)
        for b in range(m.shape[1]):
            acc += m[row, b]
        return acc

    @_jit
    def _dense_backward(w, a, d, gw, gb, back):
        """gw [fo, fi] = d @ a^T, gb [fo] = rows of d summed, back [fi, B] = (w^T @ d) * (a > 0)."""
        batch = d.shape[1]
        back[:, :] = 0
        for o in range(w.shape[0]):
            gb[o] = _row_sum(d, o)
            for i in range(w.shape[1]):
                acc = np.float32(0)
                for b in range(batch):
                    acc += d[o, b] * a[i, b]
                gw[o, i] = acc
                for b in range(batch):
                    back[i, b] += w[o, i] * d[o, b]
        for i in range(back.shape[0]):
            for b in range(back.shape[1]):
                if a[i, b] <= 0:  # as threshold_backward: a NaN activation passes its gradient
                    back[i, b] = 0

    @_jit
    def _tile_forward(w, bias, tile, z):
        """z [H, R] <- w [H, K] @ tile [R, K]^T + bias [H], R even: dot products over K, 4x2 blocks."""
        n_out, fan_in = w.shape
        full = n_out - n_out % 4
        for h in range(0, full, 4):
            for b in range(0, tile.shape[0], 2):
                a00 = a01 = a10 = a11 = a20 = a21 = a30 = a31 = np.float32(0)
                for k in range(fan_in):
                    x0, x1 = tile[b, k], tile[b + 1, k]
                    w0, w1, w2, w3 = w[h, k], w[h + 1, k], w[h + 2, k], w[h + 3, k]
                    a00 += w0 * x0
                    a01 += w0 * x1
                    a10 += w1 * x0
                    a11 += w1 * x1
                    a20 += w2 * x0
                    a21 += w2 * x1
                    a30 += w3 * x0
                    a31 += w3 * x1
                z[h, b], z[h, b + 1] = a00 + bias[h], a01 + bias[h]
                z[h + 1, b], z[h + 1, b + 1] = a10 + bias[h + 1], a11 + bias[h + 1]
                z[h + 2, b], z[h + 2, b + 1] = a20 + bias[h + 2], a21 + bias[h + 2]
                z[h + 3, b], z[h + 3, b + 1] = a30 + bias[h + 3], a31 + bias[h + 3]
        for h in range(full, n_out):  # the rows left over (e.g. the 10 classes of D = 0)
            for b in range(0, tile.shape[0], 2):
                a0 = a1 = np.float32(0)
                for k in range(fan_in):
                    a0 += w[h, k] * tile[b, k]
                    a1 += w[h, k] * tile[b + 1, k]
                z[h, b], z[h, b + 1] = a0 + bias[h], a1 + bias[h]

    @_jit
    def _tile_weight_grad(d, tile, g):
        """g [H, K] <- d [H, R] @ tile [R, K], R a multiple of 4: rows of g as sums of tile rows,
        4 rows of g and 4 tile rows per pass."""
        n_out, fan_in = g.shape
        full = n_out - n_out % 4
        g[:, :] = 0
        for h in range(0, full, 4):
            for b in range(0, tile.shape[0], 4):
                e00, e01, e02, e03 = d[h, b], d[h, b + 1], d[h, b + 2], d[h, b + 3]
                e10, e11, e12, e13 = d[h + 1, b], d[h + 1, b + 1], d[h + 1, b + 2], d[h + 1, b + 3]
                e20, e21, e22, e23 = d[h + 2, b], d[h + 2, b + 1], d[h + 2, b + 2], d[h + 2, b + 3]
                e30, e31, e32, e33 = d[h + 3, b], d[h + 3, b + 1], d[h + 3, b + 2], d[h + 3, b + 3]
                for k in range(fan_in):
                    x0, x1, x2, x3 = tile[b, k], tile[b + 1, k], tile[b + 2, k], tile[b + 3, k]
                    g[h, k] += e00 * x0 + e01 * x1 + e02 * x2 + e03 * x3
                    g[h + 1, k] += e10 * x0 + e11 * x1 + e12 * x2 + e13 * x3
                    g[h + 2, k] += e20 * x0 + e21 * x1 + e22 * x2 + e23 * x3
                    g[h + 3, k] += e30 * x0 + e31 * x1 + e32 * x2 + e33 * x3
        for h in range(full, n_out):
            for b in range(0, tile.shape[0], 4):
                e0, e1, e2, e3 = d[h, b], d[h, b + 1], d[h, b + 2], d[h, b + 3]
                for k in range(fan_in):
                    g[h, k] += e0 * tile[b, k] + e1 * tile[b + 1, k] + e2 * tile[b + 2, k] + e3 * tile[b + 3, k]

    @_jit
    def _upper_unit(z0, theta, grad, labels, layout, delta0):
        """One unit above its first layer: ReLU, layers 1.., softmax, backward. z0 [H0, B] first-layer
        outputs, theta/grad [P] the unit's rows, labels [B]; writes dL/dz0 into delta0 [H0, B], the
        gradients of layers 1.. and of the first bias into grad; returns the mean cross-entropy."""
        n_layers, batch = layout.shape[0], z0.shape[1]
        width = max(z0.shape[0], layout[:, 1].max())
        acts = np.empty((n_layers, width, batch), z0.dtype)  # acts[l]: input of layer l (l >= 1)
        z = np.empty((width, batch), z0.dtype)  # pre-activations of the current layer
        d = np.empty((width, batch), z0.dtype)  # dL/d(pre-activations), going down
        back = np.empty((width, batch), z0.dtype)
        h = z0
        for l in range(1, n_layers):
            fan_in, fan_out, w_at, b_at = layout[l, 0], layout[l, 1], layout[l, 2], layout[l, 3]
            _relu(h, acts[l, :fan_in])
            _dense(theta[w_at:b_at].reshape((fan_out, fan_in)), theta[b_at:b_at + fan_out],
                   acts[l, :fan_in], z[:fan_out])
            h = z[:fan_out]
        loss = _softmax_delta(h, labels, d[:h.shape[0]])
        for l in range(n_layers - 1, 0, -1):
            fan_in, fan_out, w_at, b_at = layout[l, 0], layout[l, 1], layout[l, 2], layout[l, 3]
            _dense_backward(theta[w_at:b_at].reshape((fan_out, fan_in)), acts[l, :fan_in], d[:fan_out],
                            grad[w_at:b_at].reshape((fan_out, fan_in)), grad[b_at:b_at + fan_out], back[:fan_in])
            d[:fan_in] = back[:fan_in]
        delta0[:, :] = d[:z0.shape[0]]
        for o in range(z0.shape[0]):
            grad[layout[0, 3] + o] = _row_sum(d, o)
        return loss

    @_jit
    def _unit_gradient(source, rows, theta, label_source, label_rows, layout, u, g):
        """Unit u's local gradient into g [P] (no weight decay); returns its mean cross-entropy.
        Its batch source[rows[u]] is copied into a tile [R, n_in] of its own that stays in the
        core's cache for both first-layer products; classes label_source[label_rows[u]]."""
        batch, fan_in, width, w_at, b_at = rows.shape[1], layout[0, 0], layout[0, 1], layout[0, 2], layout[0, 3]
        padded = -(-batch // 4) * 4  # tile rows: a multiple of the 4-row blocks, zeros past the batch
        tile = np.empty((padded, fan_in), theta.dtype)  # [R, n_in]
        for b in range(batch):
            tile[b, :] = source[rows[u, b], :]
        tile[batch:, :] = 0
        z0 = np.empty((width, padded), theta.dtype)  # first-layer outputs [H0, R]
        w0 = theta[u, w_at:b_at].reshape((width, fan_in))
        _tile_forward(w0, theta[u, b_at:b_at + width], tile, z0)
        delta0 = np.zeros((width, padded), theta.dtype)  # dL/dz0, zeros past the batch
        labels = np.empty(batch, np.int64)
        for b in range(batch):
            labels[b] = label_source[label_rows[u, b]]
        loss = _upper_unit(z0[:, :batch], theta[u], g, labels, layout, delta0[:, :batch])
        _tile_weight_grad(delta0, tile, g[w_at:b_at].reshape((width, fan_in)))
        return loss
