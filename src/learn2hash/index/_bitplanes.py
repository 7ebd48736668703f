"""Bit-sliced ("bit-plane") layout of the database and the SIMD kernel the linear scan runs on.

Why. A scan that computes ``popcount(x ^ q)`` per 64-bit word needs about one cycle per word pair
on a core without AVX-512 ``VPOPCNTDQ``. Stored bit-sliced, the codes let one vector instruction
work on one bit of 512 codes at once (256 without AVX-512), and the distance test needs no popcount.

Layout. The database is cut into blocks of :data:`BLOCK` = ``64 * LANES`` codes (:data:`LANES` =
8 where numba targets AVX-512, else 4; the last block padded with
zero codes). A block is ``PB`` *planes* of :data:`LANES` ``uint64`` words; lane ``l``, bit ``j``
of a plane belongs to code ``BLOCK * block + 64 * l + j``:

- planes ``0 .. P-1``, ``P = 8 * ceil(K / 8)``: bit ``p`` of every code, i.e. bit ``p % 64`` of
  its little-endian word ``p // 64`` (the padding bits of a code are zero);
- plane ``P``: all zeros (the target of a query's padding slots);
- planes ``P+1 .. P+M``: the bits of ``Z = 2^M - 1 - |x| - P`` (``|x|`` = popcount of the code).

Distance test. With ``C = |x & q|``, ``d(x, q) = |x| + |q| - 2C``: only the planes where the query
has a one matter, and no xor is needed. A query with more ones than zeros uses its complement
``q'`` instead (``C' = |x & q'| = |x| - C``), so at most ``P / 2`` planes are read. The kernel
adds those planes into a bit-sliced counter ``C`` (a tree of full adders, each one ternary-logic
instruction on AVX-512; no carry is rippled through the counter per plane), then, with a query
constant ``h``, decides ``d < t`` for all codes of the block at once as the carry out of
``2 (C + h) + Z + c`` over ``M`` bits, where ``Z`` is the block's stored ``2^M - 1 - |x| - P``
(or, for a complemented query, ``~(2 (C' + h)) + Y + c`` with ``Y = |x| + P = ~Z``, which is the
complement of the carry out of ``2 (C' + h) + Z + 1 - c``: one set of stored planes serves both;
``2h`` is added with ``2C`` and ``Z`` by one layer of full adders). The result is a mask of the
codes that may enter the answer. The sum itself is ``2^M + t - 1 - d``, so its low bits, kept by
the kernel, give the exact distance of each code that passes.

The kernel is an ``@intrinsic`` that writes LLVM vector IR (``<LANES x i64>``): no target-specific
intrinsics, so LLVM lowers it to AVX2, SSE2 or NEON, whichever the machine has. Its shape depends
on the code length only through ``S`` (steps of 8 planes: straight-line code up to
:data:`UNROLLED_STEPS`, a loop beyond, i.e. for codes longer than 256 bits); kernels receive a
tuple of ``S`` zeros so that numba compiles (and caches) one version per ``S``.
"""

from __future__ import annotations

import numpy as np
from llvmlite import ir
from llvmlite.binding import get_host_cpu_features
from numba import njit, types
from numba.core import config
from numba.extending import intrinsic

from learn2hash.kernels import popcount64

def _vector_lanes() -> int:
    """64-bit lanes of the widest vector register the compiled kernels may use: 8 (512 bits) where
    numba targets AVX-512, else 4 (256 bits; LLVM splits them into two halves on 128-bit cores)."""
    features = config.CPU_FEATURES if config.CPU_FEATURES is not None else get_host_cpu_features().flatten()
    if config.CPU_NAME is not None and config.CPU_FEATURES is None:
        features = ""  # a named target CPU (e.g. "generic" for a portable cache): assume no AVX-512
    return 8 if "+avx512f" in features.split(",") else 4


#: 64-bit lanes per plane (one vector register: 512 bits with AVX-512, else 256).
LANES = _vector_lanes()
#: Codes per block.
BLOCK = 64 * LANES
#: Up to this many steps of 8 planes the kernel is straight-line code; longer codes get a loop.
UNROLLED_STEPS = 16

_I64 = ir.IntType(64)
_I32 = ir.IntType(32)


class Shape:
    """Sizes of the bit-plane layout of ``bits``-bit codes.

    ``P`` bit planes, ``M`` bits of the stored sums, ``S`` kernel steps of 8 planes, ``PB`` planes
    per block, ``tag``: the tuple of ``S`` zeros passed to the kernels.
    """

    def __init__(self, bits: int):
        self.bits = bits
        self.W = (bits + 63) // 64
        self.P = 8 * ((bits + 7) // 8)
        self.S = max(1, -(-(self.P // 2) // 8))
        self.M = sum_bits(self.S)
        self.PB = self.P + 1 + self.M
        self.tag = (0,) * self.S


def sum_bits(S: int) -> int:
    """``M`` for ``S`` steps: ``2^M`` exceeds ``4P + 2`` for every ``P`` that needs ``S`` steps
    (``P <= 16 S + 1``), so neither sum overflows ``M + 1`` bits."""
    return (64 * S + 6).bit_length()


# ------------------------------------------------------------------------------------- building
def zeros(blocks: int, PB: int) -> np.ndarray:
    """Zeroed ``uint64[blocks, PB, LANES]`` planes starting on a 64-byte boundary, so that no
    vector load of the kernel straddles two cache lines."""
    count = blocks * PB * LANES
    raw = np.zeros(count + 8, np.uint64)
    skip = (-raw.ctypes.data % 64) // 8
    return raw[skip:skip + count].reshape(blocks, PB, LANES)


def sample(planes: np.ndarray, stride: int, blocks: int) -> np.ndarray:
    """Every ``stride``-th of the first ``blocks`` blocks, as new aligned planes."""
    picked = planes[:blocks:stride]
    out = zeros(picked.shape[0], planes.shape[1])
    out[:] = picked
    return out


@njit(cache=True, inline="always")
def _transpose64(a):
    """Transpose the 64 x 64 bit matrix ``a`` in place: bit ``j`` of ``a[i]`` <- bit ``i`` of ``a[j]``."""
    j = 32
    m = np.uint64(0x00000000FFFFFFFF)
    while j != 0:
        sj = np.uint64(j)
        k = 0
        while k < 64:
            for r in range(k, k + j):
                t = ((a[r] >> sj) ^ a[r + j]) & m
                a[r + j] ^= t
                a[r] ^= t << sj
            k += 2 * j
        j //= 2
        m ^= m << np.uint64(j)


@njit(nogil=True, cache=True)
def build_planes(words, n, W, P, M, planes, first_block):
    """Write blocks ``first_block ..`` of ``planes`` (``uint64[nblocks, PB, LANES]``) from the first
    ``n`` codes of ``words`` (flat ``uint64[n * W]``); codes past ``n`` count as zero codes."""
    nb = (n + BLOCK - 1) // BLOCK
    rows = np.empty(64, np.uint64)
    sums = np.empty(64, np.int64)
    for b in range(first_block, nb):
        for lane in range(LANES):
            base = b * BLOCK + lane * 64
            for j in range(64):
                sums[j] = 0
            for w in range(W):
                for j in range(64):
                    rows[j] = words[(base + j) * W + w] if base + j < n else np.uint64(0)
                    sums[j] += popcount64(rows[j])
                _transpose64(rows)
                for p in range(64):
                    bit = 64 * w + p
                    if bit < P:
                        planes[b, bit, lane] = rows[p]
            planes[b, P, lane] = 0
            for m in range(M):
                z = np.uint64(0)
                for j in range(64):
                    zj = (1 << M) - 1 - sums[j] - P
                    z |= np.uint64((zj >> m) & 1) << np.uint64(j)
                planes[b, P + 1 + m, lane] = z


@njit(nogil=True, cache=True)
def query_plan(qw, P, S):
    """Per query: the plane offsets its kernel reads (``int64[q, 8 S]``, in ``uint64`` units within
    a block; unused slots point at the zero plane), its popcount, and whether it is complemented."""
    nq, W = qw.shape
    offs = np.full((nq, 8 * S), P * LANES, np.int64)
    pop = np.zeros(nq, np.int64)
    comp = np.zeros(nq, np.bool_)
    one = np.uint64(1)
    for i in range(nq):
        c = 0
        for p in range(P):
            c += np.int64((qw[i, p // 64] >> np.uint64(p % 64)) & one)
        pop[i] = c
        flip = 2 * c > P
        comp[i] = flip
        s = 0
        for p in range(P):
            bit = (qw[i, p // 64] >> np.uint64(p % 64)) & one
            if (bit == one) != flip:
                offs[i, s] = p * LANES
                s += 1
    return offs, pop, comp


# --------------------------------------------------------------------------------------- kernel
def _splat(builder, scalar, vt):
    v = builder.insert_element(ir.Constant(vt, ir.Undefined), scalar, ir.Constant(_I32, 0))
    zeros = ir.Constant(ir.VectorType(_I32, vt.count), [0] * vt.count)
    return builder.shuffle_vector(v, ir.Constant(vt, ir.Undefined), zeros)


def _bit_mask(builder, value, i):
    """``-1`` if bit ``i`` of the ``i64`` ``value`` is set, else ``0``."""
    bit = builder.and_(builder.lshr(value, ir.Constant(_I64, i)), ir.Constant(_I64, 1))
    return builder.sub(ir.Constant(_I64, 0), bit)


#: The AVX-512 ternary-logic instruction as an LLVM intrinsic, and its tables for the majority
#: and the three-way xor of its operands.
_TERNLOG, _MAJORITY, _XOR3 = "llvm.x86.avx512.pternlog.q.512", 0xE8, 0x96


def _ternary(builder, table, a, b, c, generic):
    """``generic(a, b, c)``, a bitwise function of three vectors given by its truth ``table``, as
    one ternary-logic instruction on AVX-512. LLVM fuses only two levels of logic into one such
    instruction (the majority ``(a & b) | (c & (a | b))`` has three), so with 512-bit lanes the
    instruction is asked for by name, unless an input is a constant, which the generic form folds
    away; other targets get the generic form."""
    if LANES == 8 and not any(isinstance(v, ir.Constant) for v in (a, b, c)):
        fn = builder.module.declare_intrinsic(_TERNLOG, fnty=ir.FunctionType(a.type, [a.type] * 3 + [_I32]))
        return builder.call(fn, [a, b, c, ir.Constant(_I32, table)])
    return generic(a, b, c)


def _csa(builder, a, b, c):
    """Full adder on every lane: ``(carry, sum)``, each one ternary-logic instruction on AVX-512."""
    return (_ternary(builder, _MAJORITY, a, b, c,
                     lambda a, b, c: builder.or_(builder.and_(a, b), builder.and_(c, builder.or_(a, b)))),
            _ternary(builder, _XOR3, a, b, c, lambda a, b, c: builder.xor(builder.xor(a, b), c)))


def _add_planes(builder, vt, counter, planes):
    """``counter`` (bit-sliced: one vector per bit, low bit first) plus the bit ``planes``, in as
    many bits: a tree of full adders (no carry rippled through the counter per plane), then half
    adders where two terms of one weight are left. Carries past the top bit are dropped: the
    caller's sum fits."""
    nb = len(counter)
    cols = [[] if v is None else [v] for v in counter]  # cols[j]: terms of weight 2^j (None: no term)

    def push(j, v):
        while j < nb:
            cols[j].append(v)
            if len(cols[j]) < 3:
                return
            v, total = _csa(builder, *cols[j])
            cols[j] = [total]
            j += 1

    for x in planes:
        push(0, x)
    for j in range(nb):
        if len(cols[j]) == 2:
            a, b = cols[j]
            cols[j] = [builder.xor(a, b)]
            push(j + 1, builder.and_(a, b))
    return [c[0] if c else ir.Constant(vt, [0] * vt.count) for c in cols]


def _carry_out(builder, vt, plane, counter, h, cm, cin, zoff, M, sums):
    """The block test's mask: the carry out of ``2 (C + h) + Z + cin`` over ``M`` bits (``C``: the
    ``counter``, ``Z``: the stored planes at ``zoff``), or for a complemented query (``cm`` = -1)
    the carry out of ``~(2 (C + h)) + Y + cin``, which is the complement of the carry out of
    ``2 (C + h) + Z + (1 - cin)`` (``Y = ~Z``). ``2h`` joins ``2C`` and
    ``Z`` in one layer of full adders, then the carries ripple; the low ``M`` bits of the sum
    (complemented for a complemented query, i.e. those of the first form) go to ``sums``, unless
    it is ``None`` (the test alone)."""
    zero = ir.Constant(vt, [0] * vt.count)
    cmask = _splat(builder, cm, vt)
    r = _splat(builder, builder.sub(ir.Constant(_I64, 0), builder.xor(cin, builder.and_(cm, ir.Constant(_I64, 1)))), vt)
    k = zero
    sptr = None if sums is None else builder.bitcast(sums, vt.as_pointer())
    for j in range(M):
        z = plane(builder.add(zoff, ir.Constant(_I64, vt.count * j)))
        if j == 0:  # 2C and 2h are even
            s, k_next = z, zero
        else:
            k_next, s = _csa(builder, counter[j - 1], _splat(builder, _bit_mask(builder, h, j - 1), vt), z)
        if sptr is not None:
            out = builder.xor(builder.xor(builder.xor(s, k), r), cmask)
            builder.store(out, builder.gep(sptr, [ir.Constant(_I64, j)]), align=8)
        r, _ = _csa(builder, s, k, r)
        k = k_next
    return builder.xor(builder.or_(k, r), cmask)


def _loop(builder, vt, counter, total, body):
    """``counter`` after ``body(counter, first)`` for ``first = 0, 8, .. total - 8``, as an IR loop."""
    entry = builder.block
    loop = builder.append_basic_block("bitplane_steps")
    done = builder.append_basic_block("bitplane_sum")
    builder.branch(loop)
    builder.position_at_end(loop)
    first = builder.phi(_I64)
    first.add_incoming(ir.Constant(_I64, 0), entry)
    phis = []
    for value in counter:
        phis.append(builder.phi(vt))
        phis[-1].add_incoming(value, entry)
    counter = body(phis, first)
    after = builder.add(first, ir.Constant(_I64, 8))
    first.add_incoming(after, builder.block)
    for phi, value in zip(phis, counter):
        phi.add_incoming(value, builder.block)
    builder.cbranch(builder.icmp_signed("<", after, ir.Constant(_I64, total)), loop, done)
    builder.position_at_end(done)
    return counter


#: ``cm`` of :func:`below` fixed when compiled: a plain query, a complemented one.
PLAIN, COMPLEMENTED = (0,), (0, 0)


@intrinsic
def below(typingctx, planes, base, offs, ostart, h, cm, cin, zoff, tag, sums):
    """Mask of the :data:`BLOCK` codes of one block that pass the distance test, as :data:`LANES`
    ``uint64`` lanes, followed by a flag word that is non-zero when any lane is (see :func:`any_lane`).

    ``planes``: flat ``uint64`` planes, the block starting at ``base``; ``offs[ostart:ostart+8S]``:
    the query's plane offsets; ``h``: the counter's start value; ``cm``: 0, or -1 for a
    complemented query (or, fixed when compiled, :data:`PLAIN` or :data:`COMPLEMENTED`); ``cin``:
    the carry in (0 or 1); ``zoff``: offset of the stored ``Z`` planes; ``tag``: a tuple of ``S`` zeros.
    The low ``M`` bits of the final sum, ``t - 1 - d`` for every code that passes, are stored
    bit-sliced into ``sums[:M * LANES]`` for :func:`distance_at`; ``sums=None`` (fixed when
    compiled) skips them and tests the block only.
    """
    if not isinstance(tag, types.UniTuple):
        return None
    S = tag.count
    M = sum_bits(S)
    NB = M - 1
    sig = types.UniTuple(types.uint64, LANES + 1)(planes, base, offs, ostart, h, cm, cin, zoff, tag, sums)

    def codegen(context, builder, signature, args):
        pv, basev, ov, ostartv, hv, cmv, cinv, zoffv, _, sv = args
        vt = ir.VectorType(_I64, LANES)
        parr = context.make_array(signature.args[0])(context, builder, pv)
        oarr = context.make_array(signature.args[2])(context, builder, ov)
        block = builder.gep(parr.data, [basev])
        optr = builder.gep(oarr.data, [ostartv])

        def plane(offset):
            return builder.load(builder.bitcast(builder.gep(block, [offset]), vt.as_pointer()), align=8)

        def add(st, first, count):  # the counter st plus the planes at offs[first:first + count]
            return _add_planes(builder, vt, st, [plane(builder.load(builder.gep(optr, [builder.add(
                first, ir.Constant(_I64, g))]))) for g in range(count)])

        zero = ir.Constant(vt, [0] * LANES)
        if S <= UNROLLED_STEPS:
            st = add([None] * NB, ir.Constant(_I64, 0), 8 * S)
        else:  # a loop over steps of 8 planes keeps the compile time of long codes in bounds
            st = _loop(builder, vt, [zero] * NB, 8 * S, lambda st, first: add(st, first, 8))
        if isinstance(signature.args[5], types.UniTuple):  # known when compiled: 0 or -1 in every lane
            cm64 = ir.Constant(_I64, 0 if signature.args[5].count == 1 else -1)
        else:
            cm64 = cmv
        if isinstance(signature.args[9], types.NoneType):
            sums_ptr = None
        else:
            sums_ptr = context.make_array(signature.args[9])(context, builder, sv).data
        c = _carry_out(builder, vt, plane, st, hv, cm64, cinv, zoffv, M, sums_ptr)
        lanes = [builder.extract_element(c, ir.Constant(_I32, i)) for i in range(LANES)]
        nonzero = builder.icmp_unsigned("!=", c, ir.Constant(vt, [0] * LANES))  # one mask-register test
        lanes.append(builder.zext(builder.bitcast(nonzero, ir.IntType(LANES)), _I64))
        return context.make_tuple(builder, signature.return_type, lanes)

    return sig, codegen


@njit(cache=True, inline="always")
def any_lane(m):
    """Whether the mask ``m`` returned by :func:`below` keeps any code."""
    return m[LANES] != 0


@njit(cache=True, inline="always")
def distance_at(sums, lane, j, t, M):
    """Exact distance of code ``64 * lane + j`` of a block that passed :func:`below` with threshold
    ``t``: the test's sum is ``2^M + t - 1 - d``, and its low ``M`` bits are in ``sums``."""
    sj = np.uint64(j)
    one = np.uint64(1)
    low = 0
    for b in range(M):
        low |= np.int64((sums[b * LANES + lane] >> sj) & one) << b
    return t - 1 - low


@njit(cache=True, inline="always")
def threshold_args(t, pop, comp, P, M):
    """``(h, cm, cin, zoff)`` of :func:`below` for threshold ``t`` (``1 <= t <= P + 1``): the kernel
    then keeps exactly the codes at distance ``< t`` from a query of popcount ``pop``."""
    if comp:
        v = pop + P + 1 - t
        return v >> 1, np.int64(-1), 1 - (v & 1), (P + 1) * LANES
    v = t - pop + P
    return v >> 1, np.int64(0), v & 1, (P + 1) * LANES
