"""LLVM intrinsics for numba kernels: ``popcount64``, ``trailing_zeros64``, ``bswap64`` and ``unlikely``.

The public low-level kernel module: the index (:mod:`learn2hash.index`) and the metrics
(:mod:`learn2hash.metrics`) both build on it, while the index's own modules (``index._*``) stay
private to the index. Packed codes as ``uint64`` words: :func:`learn2hash.codes.as_words`.
"""

from __future__ import annotations

from llvmlite import ir
from numba import types
from numba.extending import intrinsic

_I1 = ir.IntType(1)
_I64 = ir.IntType(64)


def _on_uint64(name: str, llvm_name: str, result, doc: str, *flags: ir.Constant):
    """An intrinsic ``name(x: uint64) -> result`` that calls ``llvm_name`` on ``x`` (and ``flags``)."""

    def typer(typingctx, x):
        def codegen(context, builder, signature, args):
            fnty = ir.FunctionType(_I64, [_I64] + [f.type for f in flags])
            return builder.call(builder.module.declare_intrinsic(llvm_name, [_I64], fnty), [args[0], *flags])

        return result(types.uint64), codegen

    typer.__name__ = typer.__qualname__ = name
    typer.__doc__ = doc
    return intrinsic(typer)


popcount64 = _on_uint64("popcount64", "llvm.ctpop", types.int64,
                        "Population count of a ``uint64`` as ``int64`` (the ``popcnt`` instruction).")
trailing_zeros64 = _on_uint64("trailing_zeros64", "llvm.cttz", types.int64,
                              "Index of the lowest set bit of a non-zero ``uint64`` as ``int64`` (``tzcnt``).",
                              ir.Constant(_I1, 0))
bswap64 = _on_uint64("bswap64", "llvm.bswap", types.uint64,
                     "Byte swap of a ``uint64`` (code bit 0 becomes the most significant bit).")


@intrinsic
def unlikely(typingctx, cond):
    """``cond``, marked as rarely true (``llvm.expect``): the compiler then keeps the common path of
    a scan free of taken branches and moves the rare one out of the loop."""
    sig = types.boolean(types.boolean)

    def codegen(context, builder, signature, args):
        fn = builder.module.declare_intrinsic("llvm.expect", [_I1], ir.FunctionType(_I1, [_I1, _I1]))
        return builder.call(fn, [args[0], ir.Constant(_I1, 0)])

    return sig, codegen
