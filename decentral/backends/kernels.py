"""Fused CPU kernels (numba): a unit's whole local gradient in one compiled loop nest.

:class:`LocalGrad` serves units that each train on their own batch (the engine, Ray blocks).
Per unit, in parallel over units on PyTorch's thread count (numba's prange): copy the batch's
rows into a tile [B, 784] of its own, the first layer's forward product, ReLU, the small layers,
softmax and backward, then the first layer's weight gradient. The tile stays in the core's
cache from the copy to the last product, and no batch tensor, first-layer output or gradient
temporary is ever materialized (README's benchmarks give what this buys over MKL GEMMs).
The first layer's products are register-blocked loops (`layers`: the per-layer loop nests).
Given Eq. 2
it then updates each unit's row right away (`engine.FusedKernel`): on the complete graph in
mean-field form, in place on one copy of the parameters; on any other graph in sparse form from
W's CSR rows (`update.sparse_operator`), into a second buffer, since unit i's new row needs its
neighbours' rows at t (the engine swaps the two buffers every step); units in `locality` order
(neighbours close together in time).

:func:`upper_grad` serves inputs that meet the first layer elsewhere (an ensemble's shared
batches run it as one wide MKL GEMM): everything above the first layer.

`decentral.backends` offers them as the "numba" gradient backend for float32 CPU work; the
"torch" backend, `decentral.model.loss_and_grad`, is the reference that tests hold these
kernels to. Compiled once per machine and cached beside this file (numba's cache=True).
"""

from __future__ import annotations

import functools
import threading

import numpy as np
import torch

from . import inplace, locality
from .layers import _compiled, _unit_gradient, _upper_unit, available, numba  # noqa: F401


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


class LocalGrad:
    """The whole-local-gradient kernel bound to one training source, for units that each train
    on their own batch; `__call__(theta, out, rows, y)` runs one step.

    Unit u's batch is source[rows[u]] (source [M, n_in] float32: a training split, or stacked
    batches with rows an arange; rows [U, B] int64); its classes come per call as y [U, B], or
    once as labels [M] of the source rows (`run_rows`); theta, out [U, P] (rows contiguous).
    Without mean_field, out receives the gradient of each unit's mean cross-entropy (no weight
    decay). With mean_field=(alpha [R], c [R], lr) it receives Eq. 2's new parameters,
    `update.mean_field_step` unit by unit while the unit's rows are in cache:
    out_u = alpha theta_u + c sum_j theta_j - lr grad_u, the sum over u's replica (units
    replica-major, U = R * N). With sparse=(crow [U+1], col, weight, diag [U], lr), the rows of
    `update.sparse_operator` over the U units: out_u = diag_u theta_u + sum_k weight_k theta_col_k
    - lr grad_u; out may be theta itself where `in_place` says so (`inplace`: lattice-like
    graphs), else it must be a separate buffer. No batch tensor is gathered: each unit copies its rows into a tile
    of its own and keeps it in cache for both first-layer products. Everything fixed across steps
    is converted once here.
    """

    def __init__(self, layer_shapes, source: torch.Tensor, labels: torch.Tensor | None = None,
                 mean_field: tuple | None = None, sparse: tuple | None = None):
        self.layout = _layout(tuple(layer_shapes))
        self._source = source.detach().contiguous().numpy()  # numpy views keep their tensors alive
        self._labels = None if labels is None else labels.detach().contiguous().numpy()  # [M]
        n_out = int(self.layout[-1, 1])  # the kernel indexes logits by label: check them once
        if self._labels is not None and len(self._labels) and \
                not (0 <= self._labels.min() and self._labels.max() < n_out):
            raise ValueError(f"labels outside 0..{n_out - 1} would index out of bounds in the kernel")
        alpha, c, lr = mean_field if mean_field is not None else ((), (), 0.0)
        self._alpha, self._c = _as_float32(alpha), _as_float32(c)
        crow, col, weight, diag, sparse_lr = sparse if sparse is not None else ((), (), (), (), 0.0)
        self._crow, self._col = _as_int64(crow), _as_int64(col)  # W's CSR structure over the U units
        self._weight, self._diag = _as_float32(weight), _as_float32(diag)
        self._lr = np.float32(lr if sparse is None else sparse_lr)
        self._plan = inplace.plan(self._crow, self._col) if sparse is not None else None
        self._sparse_order = locality.unit_order(self._crow, self._col) if sparse is not None else None
        self._pending = None  # [S, P] parked rows of the in-place sparse form, made on first use
        # sparse rows read their neighbours' old rows: in place only where `inplace` plans it
        self.in_place = sparse is None or self._plan is not None

    def _order(self, units: int) -> np.ndarray:
        """The order units are handed to threads: in sparse form `locality.unit_order` (runs of
        a depth-first order, shuffled: neighbours' rows are read while in cache, and a hub's many
        neighbour rows do not load one thread's contiguous block), else 0..U-1. Results do not
        depend on it: each unit's row is computed alone."""
        if self._sparse_order is None:
            return _identity_order(units)
        if len(self._sparse_order) != units:
            raise ValueError(f"sparse kernel built for {len(self._sparse_order)} units, called on {units}")
        return self._sparse_order

    def __call__(self, theta: torch.Tensor, out: torch.Tensor, rows: torch.Tensor, y: torch.Tensor) -> np.ndarray:
        """Loss [U] of each unit on its batch, at theta; fills out as the class docstring says.
        y [U, B] holds the batches' classes."""
        y_flat = y.contiguous().numpy().reshape(-1)
        return self.run(theta.detach().numpy(), out.numpy(), rows.contiguous().numpy(), y_flat,
                        _row_numbers(*y.shape))

    def run_rows(self, theta: np.ndarray, out: np.ndarray, rows: np.ndarray) -> np.ndarray:
        """The same on numpy views (the engine's hot loop), classes read from `labels` at rows.
        With mean_field, out may be theta itself: the step then updates theta in place (each unit
        reads only its own row and the replica sums, taken before any row changes)."""
        return self.run(theta, out, rows, self._labels, rows)

    def run(self, theta, out, rows, label_source, label_rows) -> np.ndarray:
        """Unit u's batch: source[rows[u]] with classes label_source[label_rows[u]]; theta, out [U, P]."""
        _match_threads()
        loss = np.empty(theta.shape[0], self._source.dtype)
        if self._plan is not None and out.ctypes.data == theta.ctypes.data:  # sparse form, one buffer (`inplace`)
            if self._pending is None or self._pending.shape[1] != theta.shape[1]:
                self._pending = np.empty((len(self._plan.parked), theta.shape[1]), theta.dtype)
            inplace.fused_sparse_in_place(self._source, rows, theta, label_source, label_rows, self.layout, loss,
                                          self._lr, self._crow, self._col, self._weight, self._diag,
                                          *self._plan, self._pending)
            return loss
        _fused_local(self._source, rows, theta, out, label_source, label_rows, self.layout, loss,
                     self._alpha, self._c, self._lr, self._crow, self._col, self._weight, self._diag,
                     self._order(theta.shape[0]))
        return loss


@functools.lru_cache(maxsize=8)
def _identity_order(units: int) -> np.ndarray:
    """0..U-1 (read only)."""
    order = np.arange(units)
    order.flags.writeable = False
    return order


@functools.lru_cache(maxsize=8)
def _row_numbers(units: int, batch: int) -> np.ndarray:
    """arange(units * batch) as [units, batch] (read only)."""
    rows = np.arange(units * batch, dtype=np.int64).reshape(units, batch)
    rows.flags.writeable = False
    return rows


def local_grad(layer_shapes, theta: torch.Tensor, grad: torch.Tensor, source: torch.Tensor,
               rows: torch.Tensor, y: torch.Tensor, with_loss: bool) -> torch.Tensor | None:
    """One call of :class:`LocalGrad` without coupling: fills grad [U, P], returns loss [U] or None."""
    loss = LocalGrad(layer_shapes, source)(theta, grad, rows, y)
    return torch.from_numpy(loss) if with_loss else None


def _as_float32(values) -> np.ndarray:
    return np.ascontiguousarray(torch.as_tensor(values).detach().cpu().numpy(), dtype=np.float32).reshape(-1)


def _as_int64(values) -> np.ndarray:
    return np.ascontiguousarray(np.asarray(values, dtype=np.int64)).reshape(-1)


_THREADS_SET: dict = {}  # calling thread -> the count last given to numba (numba's setting is per thread)


def _match_threads() -> None:
    """Run the kernel's units on as many threads as PyTorch uses (--threads, Ray's one CPU)."""
    wanted = max(1, min(torch.get_num_threads(), numba.config.NUMBA_NUM_THREADS))
    caller = threading.get_ident()
    if _THREADS_SET.get(caller) != wanted:
        numba.set_num_threads(wanted)
        _THREADS_SET[caller] = wanted


if numba is not None:
    _jit = _compiled()

    @_compiled(parallel=True)
    def _fused_upper(z0, theta, grad, labels, layout, loss, delta0):
        """Per unit: ReLU, layers 1.., softmax, backward to dL/dz0 (see `upper_grad`)."""
        for u in numba.prange(z0.shape[0]):  # units in parallel, each with its own scratch
            loss[u] = _upper_unit(z0[u], theta[u], grad[u], labels[u], layout, delta0[u])

    @_compiled(parallel=True)
    def _fused_local(source, rows, theta, grad, label_source, label_rows, layout, loss, alpha, c, lr,
                     crow, col, weight, diag, order):
        """Per unit: its local gradient (`layers._unit_gradient`), then Eq. 2: in mean-field form
        when alpha and c hold one value per replica, in sparse form when crow holds W's row
        pointers (see `LocalGrad`)."""
        mean_field, sparse = alpha.shape[0] > 0, crow.shape[0] > 0
        per_replica = theta.shape[0] // max(alpha.shape[0], 1)
        total = _replica_sums(theta, alpha.shape[0]) if mean_field else theta[:0]  # [R, P]
        for i in numba.prange(rows.shape[0]):
            u = order[i]  # units in `order`: each thread's share of the units (and their edges) evens out
            coupled = mean_field or sparse
            g = np.empty(theta.shape[1], theta.dtype) if coupled else grad[u]  # the unit's gradient [P]
            loss[u] = _unit_gradient(source, rows, theta, label_source, label_rows, layout, u, g)
            if mean_field:  # Eq. 2; grad may be theta itself: unit u reads no other unit's row
                r = u // per_replica
                a, cr, row, own, out = alpha[r], c[r], total[r], theta[u], grad[u]
                for p in range(out.shape[0]):
                    out[p] = a * own[p] + cr * row[p] - lr * g[p]
            elif sparse:  # Eq. 2 from the neighbours' rows at t; grad is a separate buffer
                _sparse_row(theta, g, grad[u], u, crow, col, weight, diag[u], lr)

    @_jit
    def _sparse_row(theta, g, out, u, crow, col, weight, d, lr):
        """out <- d * theta[u] - lr * g + sum_k weight[k] * theta[col[k]] over row u of W (CSR)."""
        own = theta[u]
        for p in range(out.shape[0]):
            out[p] = d * own[p] - lr * g[p]
        for k in range(crow[u], crow[u + 1]):
            w, src = weight[k], theta[col[k]]
            for p in range(out.shape[0]):
                out[p] += w * src[p]

    @_compiled(parallel=True)
    def _replica_sums(theta, n_replicas):
        """[R, P]: the sum of each replica's units (rows of theta [R*N, P], replica-major),
        in parallel over blocks of parameters."""
        per_replica, n_params = theta.shape[0] // n_replicas, theta.shape[1]
        total = np.zeros((n_replicas, n_params), theta.dtype)
        n_blocks = -(-n_params // 1024)
        for block in numba.prange(n_replicas * n_blocks):
            r, start = block // n_blocks, (block % n_blocks) * 1024
            stop = min(start + 1024, n_params)
            for u in range(r * per_replica, (r + 1) * per_replica):
                for p in range(start, stop):
                    total[r, p] += theta[u, p]
        return total
