"""A fused CPU kernel (numba) for everything above a unit's first layer.

Above the first layer every tensor of the paper's units is tiny ([U, 20, 32] at batch 32), so
the ~20 PyTorch ops of their forward pass, softmax and backward pass cost mostly per-op
overhead: measured ~280 us per step for N=10, D=2 against ~80 us for this one compiled loop
nest per unit; units run in parallel on PyTorch's thread count (numba's prange). The first
layer's two large products stay in PyTorch (MKL).

`decentral.model.loss_and_grad` calls :func:`upper_grad` for float32 CPU tensors when numba
imports and DECENTRAL_KERNELS is not "torch"; its PyTorch path (GPU, other dtypes, or
DECENTRAL_KERNELS=torch) is the reference that tests hold this kernel to. Compiled once per
machine and cached beside this file (numba's cache=True).
"""

from __future__ import annotations

import functools
import os

import numpy as np
import torch

from .errors import UserInputError

try:  # numba is a dependency; without it (or when disabled) the PyTorch path runs
    import numba
except ImportError:  # pragma: no cover - exercised only where numba is missing
    numba = None

KERNELS_ENV = "DECENTRAL_KERNELS"  # "torch" forces the PyTorch path everywhere


def usable(theta: torch.Tensor) -> bool:
    """True when the fused kernel can take this step: numba present, CPU float32, not disabled."""
    mode = os.environ.get(KERNELS_ENV, "fused")
    if mode not in ("fused", "torch"):
        raise UserInputError(f"{KERNELS_ENV}={mode!r}: expected 'fused' (the default) or 'torch'")
    return numba is not None and theta.device.type == "cpu" and theta.dtype == torch.float32 and mode == "fused"


@functools.lru_cache(maxsize=16)
def _layout(layer_shapes: tuple) -> np.ndarray:
    """[L, 4] int64 rows (fan_in, fan_out, weight offset, bias offset) into a parameter row."""
    rows, offset = [], 0
    for fan_in, fan_out in layer_shapes:
        rows.append((fan_in, fan_out, offset, offset + fan_in * fan_out))
        offset += fan_in * fan_out + fan_out
    return np.array(rows, dtype=np.int64)


def upper_grad(layer_shapes, theta: torch.Tensor, grad: torch.Tensor, z0: torch.Tensor,
               y: torch.Tensor, with_loss: bool) -> tuple[torch.Tensor | None, torch.Tensor]:
    """Loss [U] (or None) and dL/dz0 [U, H0, B] from first-layer outputs z0 [U, H0, B].

    theta, grad [U, P] (rows contiguous); y [U, B] class indices. Writes the gradients of
    layers 1.. and of the first layer's bias into grad; the caller adds the first layer's
    weight gradient (dL/dz0 times its inputs).
    """
    _match_threads()
    z0 = z0.detach().contiguous()
    delta0 = torch.empty_like(z0)
    loss = torch.empty(z0.shape[0], dtype=z0.dtype)
    _fused_upper(z0.numpy(), theta.detach().numpy(), grad.numpy(), y.contiguous().numpy(),
                 _layout(tuple(layer_shapes)), loss.numpy(), delta0.numpy())
    return (loss if with_loss else None), delta0


def _match_threads() -> None:
    """Run the kernel's units on as many threads as PyTorch uses (--threads, Ray's one CPU)."""
    wanted = max(1, min(torch.get_num_threads(), numba.config.NUMBA_NUM_THREADS))
    if numba.get_num_threads() != wanted:
        numba.set_num_threads(wanted)


_FASTMATH = {"reassoc", "contract", "nsz"}  # vectorized sums; no nnan/ninf: NaN must propagate


def _compiled(**options):
    """numba.njit with the on-disk cache, or without it where no cache folder is writable."""
    def wrap(fn):
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

    @_compiled(parallel=True)
    def _fused_upper(z0, theta, grad, labels, layout, loss, delta0):
        """Per unit: ReLU, layers 1.., softmax, backward to dL/dz0 (see `upper_grad`)."""
        n_layers, batch = layout.shape[0], z0.shape[2]
        width = max(z0.shape[1], layout[:, 1].max())
        for u in numba.prange(z0.shape[0]):  # units in parallel, each with its own scratch
            acts = np.empty((n_layers, width, batch), z0.dtype)  # acts[l]: input of layer l (l >= 1)
            z = np.empty((width, batch), z0.dtype)  # pre-activations of the current layer
            d = np.empty((width, batch), z0.dtype)  # dL/d(pre-activations), going down
            back = np.empty((width, batch), z0.dtype)
            h = z0[u]
            for l in range(1, n_layers):
                fan_in, fan_out, w_at, b_at = layout[l, 0], layout[l, 1], layout[l, 2], layout[l, 3]
                _relu(h, acts[l, :fan_in])
                w = theta[u, w_at:b_at].reshape((fan_out, fan_in))
                _dense(w, theta[u, b_at:b_at + fan_out], acts[l, :fan_in], z[:fan_out])
                h = z[:fan_out]
            loss[u] = _softmax_delta(h, labels[u], d[:h.shape[0]])
            for l in range(n_layers - 1, 0, -1):
                fan_in, fan_out, w_at, b_at = layout[l, 0], layout[l, 1], layout[l, 2], layout[l, 3]
                gw = grad[u, w_at:b_at].reshape((fan_out, fan_in))
                w = theta[u, w_at:b_at].reshape((fan_out, fan_in))
                _dense_backward(w, acts[l, :fan_in], d[:fan_out], gw, grad[u, b_at:b_at + fan_out], back[:fan_in])
                d[:fan_in] = back[:fan_in]
            delta0[u] = d[:z0.shape[1]]
            b0 = layout[0, 3]
            for o in range(z0.shape[1]):
                grad[u, b0 + o] = _row_sum(d, o)
