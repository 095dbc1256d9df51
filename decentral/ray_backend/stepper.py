"""One actor's block stepped with the local engine's fastest path, the rest of Q added after.

Eq. 2 for the block's units A splits into what the block holds and what it receives:

    theta_A(t+1) = [local step of A, coupled within A with Eq. 2's global N and row sums]
                   + c * X,    c = lr * sigma_c / N (sigma_c = tau * sigma on a coupling step)

where X [n, P] (or [1, P], broadcast) is sum_{j not in A} q_ij theta_j(t): under mean field the
other blocks' total sum (from the all-reduce, minus the block's own sum), else
`cross @ payloads` (plan.Block.cross times the sources' compressed snapshots). The local part
is the numba kernel of the local engine (`kernels.LocalGrad`, the same one `engine.FusedKernel`
runs): the gradient and the coupling within A in one pass per unit, in mean-field form
(alpha theta_u + c sum_{j in A} theta_j - lr g_u; in place) or in sparse form over Q[A, A]
with the full row sums in its diagonal. With DECENTRAL_KERNELS=torch (or no numba) the
gradient comes from the backend and the same two terms are formed with torch.
"""

from __future__ import annotations

import warnings

import numpy as np
import torch

from ..forms import mean_field_coefficients
from ..topology import Coupling
from .block import BlockHyper, make_indexer
from .plan import Block, coupling_sigma
from .sources import BlockData


def torch_csr(crow, col=None, values=None, shape=None) -> torch.Tensor:
    """A float32 torch sparse CSR tensor from CSR arrays (or a scipy CSR array as crow)."""
    if hasattr(crow, "indptr"):
        crow, col, values, shape = crow.indptr, crow.indices, crow.data, crow.shape
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)  # "sparse CSR support is in beta"
        return torch.sparse_csr_tensor(torch.from_numpy(np.asarray(crow, dtype=np.int64)),
                                       torch.from_numpy(np.asarray(col, dtype=np.int64)),
                                       torch.from_numpy(np.asarray(values, dtype=np.float32)), shape)


class BlockStepper:
    """step(theta [n, P], t, coupled, cross) -> theta(t+1) [n, P] for one block of units.
    theta is consumed: the kernel may overwrite it (callers keep only the returned tensor)."""

    def __init__(self, arch, hyper: BlockHyper, plan_block: Block, data: BlockData, backend):
        self.arch, self.hyper, self.plan, self.data, self.backend = arch, hyper, plan_block, data, backend
        self.indexer = make_indexer(hyper, plan_block.units, data)
        sigma = coupling_sigma(hyper.sigma, hyper.gossip_period)
        self.c = float(torch.tensor(hyper.lr * sigma / hyper.n_units, dtype=torch.float32))  # c of Eq. 2
        self.coupled_form = self._form(sigma)
        self.plain_form = {"mean_field": (np.array([1.0 - hyper.lr * hyper.weight_decay]), np.zeros(1), hyper.lr)}
        self.kernels, self._spare = None, None  # _spare: the sparse form's second buffer [n, P]
        if backend.fuses_coupling:
            x, y = data.train.x, data.train.y
            self.kernels = {True: backend.coupled_kernel(arch, x, y, self.coupled_form),
                            False: backend.coupled_kernel(arch, x, y, self.plain_form)}

    def _form(self, sigma: float) -> dict:
        """The kernel's Eq. 2 within the block (`kernels.LocalGrad` keywords), global N."""
        hyper, block = self.hyper, self.plan
        if block.mean_field:
            alpha, c = mean_field_coefficients(Coupling.complete(hyper.n_units),
                                               torch.tensor([[[sigma]]], dtype=torch.float32),
                                               hyper.lr, hyper.weight_decay)
            return {"mean_field": (alpha.numpy(), c.numpy(), hyper.lr)}
        local = block.local  # [n, n] CSR
        diag = (1.0 - hyper.lr * hyper.weight_decay) - self.c * block.degree  # [n], full row sums
        return {"sparse": (local.indptr.astype(np.int64), local.indices.astype(np.int64),
                           (self.c * local.data).astype(np.float32), diag.astype(np.float32), hyper.lr)}

    def step(self, theta: torch.Tensor, t: int, coupled: bool, cross: torch.Tensor | None) -> torch.Tensor:
        """theta(t+1): the local step (coupled within the block when `coupled`) plus c * cross
        (cross [n, P] or [1, P]: the rest of sum_j q_ij theta_j(t); None when not coupled)."""
        out = self._local(theta, t, coupled)  # [n, P]
        if coupled and cross is not None:
            out.add_(cross, alpha=self.c)
        return out

    def _local(self, theta: torch.Tensor, t: int, coupled: bool) -> torch.Tensor:
        if self.kernels is None:
            return self._local_torch(theta, t, coupled)
        kernel = self.kernels[coupled]
        if not theta.is_contiguous():
            theta = theta.contiguous()
        if kernel.in_place:
            out = theta
        else:  # sparse form reads the rows at t: write into the spare buffer, keep theta as the next spare
            out = self._spare if self._spare is not None and self._spare.shape == theta.shape else torch.empty_like(theta)
            self._spare = theta
        kernel.run_rows(theta.numpy(), out.numpy(), self.indexer.host_indices(t))
        return out

    def _local_torch(self, theta: torch.Tensor, t: int, coupled: bool) -> torch.Tensor:
        """The same local step from the backend's gradient (the PyTorch path)."""
        from ..model import UnitBatches

        idx = self.indexer.indices(t)  # [n, B]
        y = self.data.train.y.index_select(0, idx.reshape(-1)).view(idx.shape)  # [n, B]
        _, grad = self.backend.loss_and_grad(self.arch, theta, UnitBatches(self.data.train.x, idx), y,
                                             with_loss=False)
        form = self.coupled_form if coupled else self.plain_form
        if "mean_field" in form:
            alpha, c, lr = form["mean_field"]
            return float(alpha[0]) * theta + float(c[0]) * theta.sum(dim=0, keepdim=True) - lr * grad
        crow, col, weight, diag, lr = form["sparse"]
        n = theta.shape[0]
        w = torch_csr(crow, col, weight, (n, n))  # [n, n], c * Q[A, A]
        return torch.from_numpy(diag).unsqueeze(1) * theta + torch.sparse.mm(w, theta) - lr * grad
