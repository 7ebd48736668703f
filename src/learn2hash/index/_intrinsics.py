"""LLVM intrinsics the numba kernels use: ``popcount64``, ``unlikely`` and ``trailing_zeros64``."""

from __future__ import annotations

from llvmlite import ir
from numba import types
from numba.extending import intrinsic


@intrinsic
def popcount64(typingctx, x):
    """Population count of a ``uint64`` as ``int64`` (the ``popcnt`` instruction)."""
    sig = types.int64(types.uint64)

    def codegen(context, builder, signature, args):
        fn = builder.module.declare_intrinsic("llvm.ctpop", [ir.IntType(64)])
        return builder.call(fn, args)

    return sig, codegen


@intrinsic
def unlikely(typingctx, cond):
    """``cond``, marked as rarely true (``llvm.expect``): the compiler then keeps the common path of
    a scan free of taken branches and moves the rare one out of the loop."""
    sig = types.boolean(types.boolean)

    def codegen(context, builder, signature, args):
        i1 = ir.IntType(1)
        fn = builder.module.declare_intrinsic("llvm.expect", [i1], ir.FunctionType(i1, [i1, i1]))
        return builder.call(fn, [args[0], ir.Constant(i1, 0)])

    return sig, codegen


@intrinsic
def trailing_zeros64(typingctx, x):
    """Index of the lowest set bit of a non-zero ``uint64`` as ``int64`` (``tzcnt``)."""
    sig = types.int64(types.uint64)

    def codegen(context, builder, signature, args):
        i64, i1 = ir.IntType(64), ir.IntType(1)
        fn = builder.module.declare_intrinsic("llvm.cttz", [i64], ir.FunctionType(i64, [i64, i1]))
        return builder.call(fn, [args[0], ir.Constant(i1, 0)])

    return sig, codegen
