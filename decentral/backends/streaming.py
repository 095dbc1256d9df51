"""Non-temporal stores of whole parameter rows (numba intrinsics written with llvmlite).

The sparse form writes each unit's new row into a second [U, P] buffer that no cache holds
when the parameters are large. A plain store first reads every 64-byte line it writes (a read
for ownership): 64 KB read from memory per unit for nothing. `stream_row` writes the row with
non-temporal 64-byte stores instead (LLVM's `!nontemporal`, x86 `vmovntps`), which skip that
read and do not evict the neighbour rows that the following units read from cache. Rows
written this way are in memory, not in cache, so it pays only where the next step would not
find them in cache anyway: buffers of at least STREAM_MIN_BYTES (README: the measurements).
The numbers are the same either way: the row is computed first, then copied.
"""

from __future__ import annotations

import platform

import numpy as np

from .layers import _compiled, numba

STREAM_MIN_BYTES = 32 << 20  # one [U, P] buffer at least this large: new rows bypass the caches
LINE = 16  # float32 values per 64-byte line


X86 = platform.machine().lower() in ("x86_64", "amd64", "i386", "i686")  # sfence orders the stores


def streams(out: np.ndarray) -> bool:
    """Whether a sparse step writing out [U, P] should use `stream_row`: a float32 buffer of at
    least STREAM_MIN_BYTES whose values sit on 4-byte boundaries (the line arithmetic needs it)."""
    return out.dtype == np.float32 and out.ctypes.data % 4 == 0 and out.nbytes >= STREAM_MIN_BYTES


if numba is not None:
    from llvmlite import ir
    from numba import types
    from numba.core import cgutils
    from numba.extending import intrinsic

    def _float32_c(array) -> bool:
        return isinstance(array, types.Array) and array.dtype == types.float32 and array.layout == "C"

    @intrinsic
    def _address(typingctx, array, index):
        """The byte address of array.flat[index] (C-contiguous array)."""
        if not isinstance(array, types.Array) or array.layout != "C":
            return None

        def codegen(context, builder, signature, args):
            data = context.make_array(signature.args[0])(context, builder, args[0]).data
            return builder.ptrtoint(builder.gep(data, [args[1]]), ir.IntType(64))
        return types.int64(array, types.intp), codegen

    @intrinsic
    def _stream_line(typingctx, dst, dst_at, src, src_at):
        """dst.flat[dst_at:dst_at + 16] <- src.flat[src_at:src_at + 16] with one non-temporal
        store; dst.flat[dst_at] must sit on a 64-byte boundary (float32, C-contiguous)."""
        if not (_float32_c(dst) and _float32_c(src)):
            return None

        def codegen(context, builder, signature, args):
            line = ir.VectorType(ir.FloatType(), LINE)
            out = context.make_array(signature.args[0])(context, builder, args[0]).data
            row = context.make_array(signature.args[2])(context, builder, args[2]).data
            value = builder.load(builder.bitcast(builder.gep(row, [args[3]]), line.as_pointer()), align=4)
            store = builder.store(value, builder.bitcast(builder.gep(out, [args[1]]), line.as_pointer()), align=64)
            store.set_metadata("nontemporal", builder.module.add_metadata([ir.Constant(ir.IntType(32), 1)]))
            return context.get_dummy_value()
        return types.void(dst, types.intp, src, types.intp), codegen

    @intrinsic
    def _store_fence(typingctx):
        """Orders the non-temporal stores before it ahead of every later store, so the rows are
        in memory before another thread can learn they are done: x86's `sfence` (a locked
        instruction, which LLVM emits for a seq_cst fence, is not documented to order
        non-temporal stores), LLVM's seq_cst fence elsewhere."""
        def codegen(context, builder, signature, args):
            if X86:
                sfence = ir.FunctionType(ir.VoidType(), [])
                builder.call(cgutils.get_or_insert_function(builder.module, sfence, "llvm.x86.sse.sfence"), [])
            else:
                builder.fence("seq_cst")
            return context.get_dummy_value()
        return types.void(), codegen

    @_compiled()
    def stream_row(out, u, row):
        """out[u] <- row (out [U, P], row [P] float32): non-temporal stores on the 64-byte lines
        the row covers whole, plain stores on the partial lines at its two ends."""
        n_params, start = row.shape[0], u * out.shape[1]
        head = min((-(_address(out, start) >> 2)) & (LINE - 1), n_params)  # values before a line boundary
        target = out[u]
        for p in range(head):
            target[p] = row[p]
        body_end = head + (n_params - head) // LINE * LINE
        for p in range(head, body_end, LINE):
            _stream_line(out, start + p, row, p)
        for p in range(body_end, n_params):
            target[p] = row[p]
        _store_fence()
