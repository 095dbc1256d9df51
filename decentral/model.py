"""Stacked MLP units: many units' parameters in one tensor, batched forward and backward.

A unit is `Linear(784, 20)`, then (D-1) times `ReLU, Linear(20, 20)`, then `ReLU, Linear(20, 10)`;
D = 0 is `Linear(784, 10)` (softmax regression). Biases everywhere. Each unit's parameters are
one flat row in PyTorch's `nn.Module.parameters()` order (weight [out, in], then bias [out],
layer by layer), so a row loads straight into the equivalent `nn.Sequential`.

The backward pass is written by hand for cross-entropy with stacked weights: on tiny layers
autograd's per-op overhead dominates.
"""

from __future__ import annotations

import functools
import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F


@dataclass(frozen=True)
class Architecture:
    """Shape of every unit (all units share it, as Eq. 2 requires)."""

    depth: int = 1  # D, number of hidden layers; 0 is linear softmax regression
    width: int = 20  # neurons per hidden layer (paper: 20)
    n_in: int = 784  # input pixels (28 x 28 MNIST)
    n_out: int = 10  # classes

    @property
    def layer_shapes(self) -> list[tuple[int, int]]:
        """(fan_in, fan_out) of each Linear layer, input to output."""
        sizes = [self.n_in] + [self.width] * self.depth + [self.n_out]
        return list(zip(sizes[:-1], sizes[1:]))

    @property
    def n_params(self) -> int:
        return sum(fan_out * fan_in + fan_out for fan_in, fan_out in self.layer_shapes)

    def to_module(self, row: torch.Tensor) -> torch.nn.Sequential:
        """The equivalent nn.Sequential holding one unit's parameters row [P] (for checks)."""
        mods: list[torch.nn.Module] = []
        for i, (fan_in, fan_out) in enumerate(self.layer_shapes):
            if i:
                mods.append(torch.nn.ReLU())
            mods.append(torch.nn.Linear(fan_in, fan_out))
        net = torch.nn.Sequential(*mods).to(row.device, row.dtype)
        torch.nn.utils.vector_to_parameters(row.detach().clone(), net.parameters())
        return net

    # The contract every architecture keeps (`functional.ModuleArch` is the generic one), so
    # callers never ask which kind they hold.

    def gradient_backend(self, chosen):
        """The gradient backend that steps these units: `chosen`, the one `backends.select` picked
        for the device and --kernels (the MLP runs on all of them)."""
        return chosen

    def loss_and_grad(self, theta: torch.Tensor, x, y: torch.Tensor, with_loss: bool = True):
        """Loss [U] and gradient [U, P] on the PyTorch path (:func:`loss_and_grad`)."""
        return _mlp_loss_and_grad(self, theta, x, y, with_loss)

    def per_sample_scores(self, theta: torch.Tensor, x, y: torch.Tensor):
        """Cross-entropy [U, T] and correctness [U, T] (:func:`per_sample_scores`)."""
        return _mlp_scores(self, theta, x, y)

    def init_params(self, generators: list[torch.Generator], scheme: str) -> torch.Tensor:
        """Initial parameters [U, P] (:func:`init_params`)."""
        return _mlp_init(self, generators, scheme)

    def describe(self) -> dict:
        """What params.safetensors records of the architecture."""
        return {"kind": "mlp", "depth": self.depth, "width": self.width, "n_in": self.n_in,
                "n_out": self.n_out, "n_params": self.n_params}

    def layout(self) -> list[dict]:
        """Name, shape and offset in a row of every parameter tensor, in storage order."""
        layout, offset = [], 0
        for i, (fan_in, fan_out) in enumerate(self.layer_shapes):
            for name, shape in ((f"layers.{i}.weight", [fan_out, fan_in]), (f"layers.{i}.bias", [fan_out])):
                layout.append({"name": name, "shape": shape, "offset": offset})
                offset += math.prod(shape)
        return layout


def forward(arch: Architecture, theta: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
    """Logits [U, B, C] of units theta [U, P] on inputs x [U, B, n_in] or shared x [B, n_in]
    (a transposed view of :func:`transposed_logits`)."""
    return transposed_logits(arch, theta, x).transpose(1, 2)


def transposed_logits(arch: Architecture, theta: torch.Tensor, x) -> torch.Tensor:
    """Logits [U, C, B] of units theta [U, P] on inputs x [U, B, n_in], shared x [B, n_in], or
    an object with UnitBatches' `forward` contract (e.g. :func:`shared_inputs` of a test set).

    Shared inputs (the test set) meet every unit's first layer in one wide GEMM
    [U*width, n_in] x [n_in, B] with the bias fused; activations stay [U, width, B] throughout.
    """
    layers = layer_views(arch, theta if theta.stride(-1) == 1 else theta.contiguous())
    w, b = layers[0]
    if not isinstance(x, torch.Tensor):
        h = x.forward(w, b)  # [U, fan_out, B]
    elif x.dim() == 2:
        n_units, fan_out, fan_in = w.shape
        h = torch.addmm(b.reshape(-1, 1), w.reshape(-1, fan_in), x.T).view(n_units, fan_out, -1)
    else:
        h = UnitBatches.stacked(x).forward(w, b)  # [U, fan_out, B]
    return _upper_layers(layers, h)


class SharedInputs:
    """Fixed inputs x [T, n_in] (a test set) prepared for the first layer of many units.

    Pixels that are zero in every image are dropped (their products are exact zeros; MNIST's
    test set has 116 of 784), and a row of ones carries the bias, so the first layer is one
    plain GEMM [U*H, K+1] x [K+1, T] with no separate bias pass (README: what it saves)."""

    def __init__(self, x: torch.Tensor):
        self.x = x  # [T, n_in] (what generic models read, `decentral.functional`)
        self.live = torch.nonzero((x != 0).any(dim=0)).flatten()  # [K] pixels that are ever nonzero
        ones = torch.ones(1, x.shape[0], dtype=x.dtype, device=x.device)
        self.xt = torch.cat([x.T[self.live], ones]).contiguous()  # [K+1, T]

    def forward(self, w: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
        """W x^T + b as [U, fan_out, T] from w [U, fan_out, n_in], b [U, fan_out, 1]."""
        n_units, fan_out, fan_in = w.shape
        wide = torch.cat([w.reshape(-1, fan_in).index_select(1, self.live), b.reshape(-1, 1)], dim=1)
        return torch.mm(wide, self.xt).view(n_units, fan_out, -1)


@functools.lru_cache(maxsize=4)
def shared_inputs(x: torch.Tensor) -> SharedInputs:
    """SharedInputs of x, prepared once per tensor (keyed by identity; x must not change)."""
    return SharedInputs(x)


def _upper_layers(layers, h: torch.Tensor, hidden: list | None = None) -> torch.Tensor:
    """ReLU then layers 1.. on first-layer outputs h [U, width, B] (in place); the ReLU
    outputs are appended to `hidden` when given (the backward pass needs them)."""
    for w, b in layers[1:]:
        h = h.relu_()
        if hidden is not None:
            hidden.append(h)
        h = torch.baddbmm(b, w, h)  # [U, fan_out, B]
    return h


def layer_views(arch: Architecture, theta: torch.Tensor) -> list[tuple[torch.Tensor, torch.Tensor]]:
    """Views (W [U, out, in], b [U, out, 1]) into theta [U, P] (rows contiguous), one strided
    view each: the training step builds them every step, so they cost one op apiece."""
    units, unit_stride, base = theta.shape[0], theta.stride(0), theta.storage_offset()
    views, offset = [], 0
    for fan_in, fan_out in arch.layer_shapes:
        w = theta.as_strided((units, fan_out, fan_in), (unit_stride, fan_in, 1), base + offset)
        offset += fan_out * fan_in
        b = theta.as_strided((units, fan_out, 1), (unit_stride, 1, 1), base + offset)
        offset += fan_out
        views.append((w, b))
    return views


class UnitBatches:
    """Each unit's own batch, given as rows of a source matrix: unit u trains on source[rows[u]].

    The engine passes the training split and the step's batch indices, so no batch tensor is
    gathered on the numba backend (`kernels.local_grad` copies each unit's rows into a tile of
    its own); the PyTorch path gathers x [U, B, n_in] once, on first use. `loss_and_grad` touches
    the inputs only here; `decentral.ensemble.SharedBatches` is the same contract for replicas
    that share a batch (one wide GEMM per batch).
    """

    def __init__(self, source: torch.Tensor, rows: torch.Tensor, x: torch.Tensor | None = None):
        self.source = source  # [M, n_in]
        self.rows = rows  # [U, B] indices into source
        self.batch_size = rows.shape[1]
        self._x = x

    @classmethod
    def stacked(cls, x: torch.Tensor) -> "UnitBatches":
        """Batches already stacked as x [U, B, n_in]."""
        units, batch = x.shape[:2]
        return cls(x.reshape(units * batch, -1), _row_numbers(units, batch, x.device), x)

    def unit_x(self) -> torch.Tensor:
        """Every unit's batch [U, B, n_in] (the generic models' input, `decentral.functional`)."""
        return self.x

    @property
    def x(self) -> torch.Tensor:
        """The batches as one tensor [U, B, n_in] (gathered on first use)."""
        if self._x is None:
            self._x = self.source.index_select(0, self.rows.reshape(-1)).view(*self.rows.shape, -1)
        return self._x

    def forward(self, w: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
        """W x^T + b, transposed: [U, fan_out, B] from w [U, fan_out, n_in], b [U, fan_out, 1]."""
        return torch.baddbmm(b, w, self.x.transpose(1, 2))

    def weight_grad(self, delta: torch.Tensor, out: torch.Tensor) -> None:
        """out [U, fan_out, n_in] <- delta [U, fan_out, B] @ x."""
        out.copy_(torch.bmm(delta, self.x))


@functools.lru_cache(maxsize=8)
def _row_numbers(units: int, batch: int, device: torch.device) -> torch.Tensor:
    """arange(units * batch) as [units, batch] (read only): rows of stacked batches."""
    return torch.arange(units * batch, device=device).view(units, batch)


def loss_and_grad(arch, theta: torch.Tensor, x, y: torch.Tensor, with_loss: bool = True,
                  ) -> tuple[torch.Tensor | None, torch.Tensor]:
    """Mean cross-entropy per unit [U] and its gradient [U, P] (no weight decay), as the
    architecture computes it (`Architecture`: below; `functional.ModuleArch`: torch.func).

    theta [U, P], x [U, B, n_in] or UnitBatches (or an object with its forward/weight_grad
    contract), y [U, B] (class indices). with_loss=False skips the loss (returns None for it).
    """
    return arch.loss_and_grad(theta, x, y, with_loss)


def _mlp_loss_and_grad(arch: Architecture, theta: torch.Tensor, x, y: torch.Tensor, with_loss: bool = True,
                       ) -> tuple[torch.Tensor | None, torch.Tensor]:
    """:func:`loss_and_grad` of the MLP: the PyTorch reference of every gradient backend
    (`decentral.backends`). The first layer runs as batched GEMMs through the inputs' contract,
    the layers above as PyTorch ops; activations are kept transposed, [U, width, B], so every
    product is W @ h with W as stored (faster than h @ W^T for these thin layers)."""
    inputs = UnitBatches.stacked(x) if isinstance(x, torch.Tensor) else x
    if theta.stride(-1) != 1:
        theta = theta.contiguous()
    grad = torch.empty_like(theta)
    layers = layer_views(arch, theta)
    z0 = inputs.forward(*layers[0])  # first-layer outputs, transposed [U, width, B]
    grad_layers = layer_views(arch, grad)
    loss, delta = _upper_grad(layers, grad_layers, z0, y, with_loss)
    inputs.weight_grad(delta, grad_layers[0][0])  # the first layer meets the inputs
    return loss, grad


def _upper_grad(layers, grad_layers, z0, y, with_loss):
    """PyTorch path: loss [U] (or None) and dL/dz0 from first-layer outputs z0 [U, H, B]; fills
    grad_layers' views of layers 1.. and the first bias, last layer first."""
    hidden = []  # transposed outputs of the hidden layers after ReLU: [U, width, B]
    h = _upper_layers(layers, z0, hidden)  # logits [U, C, B]
    loss, delta = logits_grad(h, y, with_loss)  # dL/dlogits, transposed [U, C, B]
    for i in range(len(layers) - 1, 0, -1):
        gw, gb = grad_layers[i]
        gw.copy_(torch.bmm(delta, hidden[i - 1].transpose(1, 2)))  # [U, fan_out, fan_in]
        torch.sum(delta, dim=2, keepdim=True, out=gb)
        back = torch.bmm(layers[i][0].transpose(1, 2), delta)  # [U, fan_in, B]
        delta = torch.ops.aten.threshold_backward(back, hidden[i - 1], 0)  # ReLU mask, one pass
    torch.sum(delta, dim=2, keepdim=True, out=grad_layers[0][1])
    return loss, delta


def logits_grad(by_class: torch.Tensor, y: torch.Tensor, with_loss: bool) -> tuple[torch.Tensor | None, torch.Tensor]:
    """Mean cross-entropy per unit [U] (None unless with_loss) and its gradient with respect to
    the logits, (softmax - one-hot) / B [U, C, B], from logits by_class [U, C, B] and classes y
    [U, B] (the MLP's path here and generic models' `functional.ModuleArch.loss_and_grad`)."""
    labels = y.unsqueeze(1)  # [U, 1, B]
    loss = None
    if with_loss:
        log_p = torch.log_softmax(by_class, dim=1)  # [U, C, B]
        loss = -log_p.gather(1, labels).squeeze(1).mean(dim=1)  # [U]
        delta = log_p.exp_()
    else:
        delta = torch.softmax(by_class, dim=1)
    delta.scatter_add_(1, labels, _minus_ones(tuple(labels.shape), delta.dtype, delta.device))  # softmax - onehot
    return loss, delta.mul_(1.0 / by_class.shape[2])


@functools.lru_cache(maxsize=8)
def _minus_ones(shape: tuple, dtype: torch.dtype, device: torch.device) -> torch.Tensor:
    """A constant tensor of -1 (read only), made once per (shape, dtype, device): one op less per step."""
    return torch.full(shape, -1.0, dtype=dtype, device=device)


def per_sample_scores(arch, theta: torch.Tensor, x, y: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Cross-entropy [U, T] and correctness [U, T] of every unit on shared test data x [T, n_in]
    (or its :func:`shared_inputs`), as the architecture computes them."""
    return arch.per_sample_scores(theta, x, y)


def _mlp_scores(arch: Architecture, theta: torch.Tensor, x, y: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """:func:`per_sample_scores` of the MLP."""
    logits = transposed_logits(arch, theta, x)  # [U, C, T]
    loss = F.cross_entropy(logits, y.expand(logits.shape[0], -1), reduction="none")
    correct = (logits.max(dim=1).indices == y).to(theta.dtype)  # argmax (first max) over classes
    return loss, correct


def init_params(arch, generators: list[torch.Generator], scheme: str) -> torch.Tensor:
    """Initial parameters [U, P], unit u drawn from its own generators[u] (CPU, float32), as the
    architecture draws them. The MLP's:

    scheme "pytorch": nn.Linear's default, weights and biases U(-1/sqrt(fan_in), 1/sqrt(fan_in))
    (kaiming_uniform with a=sqrt(5)); scheme "normal": every parameter N(0, 1) (the paper's text).
    """
    return arch.init_params(generators, scheme)


def _mlp_init(arch: Architecture, generators: list[torch.Generator], scheme: str) -> torch.Tensor:
    """:func:`init_params` of the MLP."""
    rows = []
    for gen in generators:
        parts = []
        for fan_in, fan_out in arch.layer_shapes:
            for numel in (fan_out * fan_in, fan_out):
                if scheme == "normal":
                    parts.append(torch.randn(numel, generator=gen))
                else:
                    bound = 1.0 / fan_in**0.5
                    parts.append(torch.rand(numel, generator=gen) * (2 * bound) - bound)
        rows.append(torch.cat(parts))
    return torch.stack(rows)
