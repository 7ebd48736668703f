"""Binary codes: K bits per item, packed as ``uint8[n, ceil(K/8)]``.

Conventions (see ARCHITECTURE.md): bit 1 means +1 and bit 0 means -1; bits are packed in numpy's
``bitorder="big"`` (the first bit is the most significant bit of the first byte); the unused
low bits of the last byte are always zero, so two code sets can be compared byte by byte.
K is any positive integer, not only a power of two.
"""

from __future__ import annotations

import dataclasses
import os
import re
from typing import Iterator, Sequence

import numpy as np

from learn2hash._codes_io import CODES_FORMAT, CODES_VERSION, codes_saved, load_codes, save_codes  # noqa: F401
from learn2hash.errors import CorruptFileError, Learn2HashError, check_int



def n_bytes(bits: int) -> int:
    """Bytes a ``bits``-bit code takes when packed."""
    return (int(bits) + 7) // 8


def _check_bits(bits: object, what: str = "bits") -> int:
    return check_int(bits, what, 1, expected="a positive integer (a code length K >= 1)")


_SHA256 = re.compile(r"^[0-9a-f]{64}$")


@dataclasses.dataclass(frozen=True)
class Provenance:
    """Where a set of codes came from: which saved hasher computed them, from what.

    ``hasher_sha256``: the identity of the hasher (:func:`learn2hash.methods.base.hasher_checksum`,
    the sha256 of its saved ``hasher.json``), None when it was never saved; ``source``: what was
    encoded (``"split:query"``, ``"images"``, ``"array"`` ...) and ``source_sha256`` a checksum of
    it, when known. Two code sets can be compared only when their hashers are the same one.
    """

    hasher_sha256: str | None = None
    source: str | None = None
    source_sha256: str | None = None

    def __post_init__(self) -> None:
        for key in ("hasher_sha256", "source_sha256"):
            value = getattr(self, key)
            if value is not None and not (isinstance(value, str) and _SHA256.match(value)):
                raise Learn2HashError(f"provenance {key} must be 64 lowercase hex digits (a sha256), got {value!r}")
        if self.source is not None and not isinstance(self.source, str):
            raise Learn2HashError(f"provenance source must be a string, got {self.source!r}")

    def to_json(self) -> dict:
        return {k: v for k, v in dataclasses.asdict(self).items() if v is not None}

    @classmethod
    def from_json(cls, obj: object, where: str) -> "Provenance":
        """Read what :meth:`to_json` wrote; anything else is a :class:`CorruptFileError` naming ``where``."""
        if not isinstance(obj, dict):
            raise CorruptFileError(f"{where}: 'provenance' is not an object")
        unknown = sorted(set(obj) - {"hasher_sha256", "source", "source_sha256"})
        if unknown:
            raise CorruptFileError(f"{where}: 'provenance' has unknown keys {', '.join(map(repr, unknown))}")
        try:
            return cls(**obj)
        except Learn2HashError as exc:
            raise CorruptFileError(f"{where}: {exc}") from None

    def describe(self) -> str:
        hasher = f"hasher {self.hasher_sha256[:12]}" if self.hasher_sha256 else "an unsaved hasher"
        return hasher + (f" from {self.source}" if self.source else "")


def same_hasher(a: "Codes", b: "Codes") -> bool | None:
    """Whether two code sets come from the same saved hasher: True / False, or None when either
    does not record its hasher (plain arrays, codes saved before codes recorded it)."""
    ha = a.provenance.hasher_sha256 if a.provenance else None
    hb = b.provenance.hasher_sha256 if b.provenance else None
    if ha is None or hb is None:
        return None
    return ha == hb


def hasher_mismatch(a: "Codes", b: "Codes", what_a: str = "query codes", what_b: str = "database codes") -> str | None:
    """A sentence saying that ``a`` and ``b`` come from different hashers (their Hamming distances
    mean nothing), or None when they come from the same one or either does not record its hasher."""
    if same_hasher(a, b) is not False:
        return None
    return (f"the {what_a} were computed by {a.provenance.describe()} and the {what_b} by "
            f"{b.provenance.describe()}: codes of two different hashers are not comparable")


class Codes:
    """A set of ``n`` binary codes of ``bits`` bits each, packed into bytes.

    Build one with :meth:`from_signs` (real or +-1 values, ``>= 0`` gives bit 1),
    :meth:`from_bits` (0/1 or bool values) or :meth:`from_packed`; get values back with
    :meth:`to_signs` or :meth:`to_bits`, or the packed bytes with ``np.asarray(codes)``.

    It behaves as an array of rows: ``len(codes)`` is ``n``; ``codes[i]``, ``codes[2:5]``,
    ``codes[[7, 1]]`` and ``codes[mask]`` are :class:`Codes` (``codes[i]`` of one row); iterating
    gives the rows one at a time, each a one-row :class:`Codes`; :meth:`concat` (and
    ``np.concatenate`` / ``np.vstack`` of :class:`Codes`, which call it) joins code sets;
    ``a == b`` is True when two code sets hold the same bits. ``np.asarray(codes)`` (and
    ``codes.packed``) is the read-only ``uint8[n, ceil(bits/8)]`` array of packed bytes, the
    layout Faiss's binary indexes take; ``np.array(codes)`` a writable copy of it. Other NumPy
    functions and ufuncs see that array (``np.bitwise_count(codes)``); comparing codes with a
    plain array (``codes == array``) is an error that names the two ways to do it.

    The packed bytes are never shared writable: an array handed to the constructor or
    :meth:`from_packed` is copied unless it is already read-only, so the zero padding checked
    at construction stays zero.

    ``provenance`` (a :class:`Provenance`, or None when unknown) says which saved hasher computed
    the codes and from what; ``Hasher.encode`` of a saved or loaded hasher sets it, slicing keeps
    it, :meth:`concat` keeps what all parts share, :meth:`save` / :meth:`load` keep it.
    It does not take part in equality.
    """

    __slots__ = ("_packed", "_bits", "provenance")

    def __init__(self, packed: np.ndarray, bits: int, provenance: Provenance | None = None):
        bits = _check_bits(bits)
        packed = np.asarray(packed)
        if packed.dtype != np.uint8:
            raise Learn2HashError(f"packed codes must be uint8, got dtype {packed.dtype}")
        if packed.ndim != 2 or packed.shape[1] != n_bytes(bits):
            raise Learn2HashError(
                f"packed codes for {bits} bits must have shape [n, {n_bytes(bits)}], got {packed.shape}"
            )
        pad = 8 * n_bytes(bits) - bits
        if pad and packed.shape[0] and np.any(packed[:, -1] & np.uint8((1 << pad) - 1)):
            raise Learn2HashError(
                f"packed codes for {bits} bits have non-zero padding in the last {pad} bits of the last byte"
            )
        if provenance is not None and not isinstance(provenance, Provenance):
            raise Learn2HashError(f"provenance must be a learn2hash.codes.Provenance or None, "
                                  f"got {type(provenance).__name__}")
        self._packed = _read_only(packed)
        self._bits = bits
        self.provenance = provenance

    @classmethod
    def _own(cls, packed: np.ndarray, bits: int, provenance: Provenance | None = None) -> "Codes":
        """Codes of an array made here and referenced nowhere else (made read-only, not copied)."""
        packed.flags.writeable = False
        return cls(packed, bits, provenance)

    def with_provenance(self, provenance: Provenance | None) -> "Codes":
        """The same codes (not copied) with ``provenance``."""
        return Codes(self._packed, self._bits, provenance)

    # ---------------------------------------------------------------- construction
    @classmethod
    def from_packed(cls, packed: np.ndarray, bits: int) -> "Codes":
        """Codes of already packed ``uint8[n, ceil(bits/8)]`` bytes, as Faiss's binary indexes hold them
        (validated; copied unless the array is read-only)."""
        return cls(packed, bits)

    @classmethod
    def from_signs(cls, values: np.ndarray) -> "Codes":
        """Codes from a real or +-1 array ``[n, K]``: a value ``>= 0`` gives bit 1, ``< 0`` bit 0."""
        if hasattr(values, "detach"):  # a torch tensor
            values = values.detach().cpu().numpy()
        a = np.asarray(values)
        if a.ndim == 1:
            raise Learn2HashError(f"sign values must be a 2-D array [n, K], got a 1-D array of length {a.shape[0]}")
        if a.ndim != 2:
            raise Learn2HashError(f"sign values must be a 2-D array [n, K], got shape {a.shape}")
        if a.dtype == bool or not np.issubdtype(a.dtype, np.number):
            raise Learn2HashError(f"sign values must be a real array, got dtype {a.dtype} (use Codes.from_bits for 0/1)")
        if np.issubdtype(a.dtype, np.complexfloating):
            raise Learn2HashError("sign values must be real, got a complex array")
        if np.issubdtype(a.dtype, np.floating):
            bad = ~np.isfinite(a)
            if bad.any():
                row, col = np.argwhere(bad)[0]
                raise Learn2HashError(
                    f"sign values contain {int(bad.sum())} NaN or infinite entries (first at row {row}, column {col})"
                )
        bits = _check_bits(a.shape[1], "the number of columns (bits)")
        return cls._own(np.packbits(a >= 0, axis=1, bitorder="big"), bits)

    @classmethod
    def from_bits(cls, bits01: np.ndarray) -> "Codes":
        """Codes from a 0/1 or bool array ``[n, K]``."""
        a = np.asarray(bits01)
        if a.ndim != 2:
            raise Learn2HashError(f"bit values must be a 2-D array [n, K], got shape {a.shape}")
        if a.dtype != bool:
            if not np.issubdtype(a.dtype, np.number) or not np.isin(a, (0, 1)).all():
                raise Learn2HashError("bit values must be 0/1 or bool")
            a = a.astype(bool)
        bits = _check_bits(a.shape[1], "the number of columns (bits)")
        return cls._own(np.packbits(a, axis=1, bitorder="big"), bits)

    @classmethod
    def empty(cls, bits: int) -> "Codes":
        bits = _check_bits(bits)
        return cls._own(np.zeros((0, n_bytes(bits)), np.uint8), bits)

    @classmethod
    def concat(cls, parts: Sequence["Codes"]) -> "Codes":
        """Join code sets of the same bit length, in order (``np.concatenate`` of Codes calls this)."""
        parts = list(parts)
        if not parts:
            raise Learn2HashError("Codes.concat needs at least one Codes")
        for i, p in enumerate(parts):
            if not isinstance(p, Codes):
                raise Learn2HashError(
                    f"Codes.concat: part {i} is a {type(p).__name__}, expected Codes (wrap packed bytes with "
                    "Codes.from_packed(array, bits), or join plain arrays with np.concatenate([np.asarray(c), ...]))")
        bits = parts[0].bits
        for i, p in enumerate(parts):
            if p.bits != bits:
                raise Learn2HashError(f"cannot concatenate codes of {bits} and {p.bits} bits (part {i})")
        return cls._own(np.concatenate([p._packed for p in parts], axis=0), bits, _shared_provenance(parts))

    #: the earlier name of :meth:`concat`
    concatenate = concat

    # ---------------------------------------------------------------- access
    @property
    def bits(self) -> int:
        return self._bits

    @property
    def packed(self) -> np.ndarray:
        """The packed ``uint8[n, ceil(bits/8)]`` array, read-only (``np.asarray(codes)`` gives the same)."""
        return self._packed

    @property
    def n_bytes(self) -> int:
        return self._packed.shape[1]

    def __len__(self) -> int:
        return self._packed.shape[0]

    def __getitem__(self, key) -> "Codes":
        if isinstance(key, tuple):
            raise Learn2HashError(
                "Codes are indexed by rows only (codes[i], codes[2:5], codes[[7, 1]], codes[mask]); for bytes use "
                "np.asarray(codes)[...], for bits codes.to_bits()[...]")
        if isinstance(key, (int, np.integer)):
            i = int(key) + (len(self) if int(key) < 0 else 0)
            if not 0 <= i < len(self):
                raise IndexError(f"code {int(key)} is out of range for {len(self)} codes")
            key = slice(i, i + 1)
        if isinstance(key, Codes):
            raise Learn2HashError("Codes cannot be indexed by Codes; index by row numbers, a slice or a bool mask")
        sub = self._packed[key]
        if sub.ndim != 2:
            raise Learn2HashError("Codes are indexed by rows only (codes[i], codes[2:5], codes[[7, 1]], codes[mask])")
        if sub.flags.writeable:  # a new array (fancy indexing): ours alone
            return Codes._own(sub, self._bits, self.provenance)
        return Codes(sub, self._bits, self.provenance)

    def __iter__(self) -> Iterator["Codes"]:
        """The rows, each a one-row :class:`Codes` (``codes[i]``)."""
        for i in range(len(self)):
            yield self[i]

    def __eq__(self, other: object) -> bool:
        if isinstance(other, np.ndarray):
            raise _compare_error(other)
        if not isinstance(other, Codes):
            return NotImplemented
        return self._bits == other._bits and np.array_equal(self._packed, other._packed)

    # ---------------------------------------------------------------- NumPy protocols
    def __array__(self, dtype=None, copy=None) -> np.ndarray:
        """The packed bytes ``uint8[n, ceil(bits/8)]`` (read-only unless a copy is asked for)."""
        a = self._packed
        if dtype is not None and np.dtype(dtype) != a.dtype:
            if copy is False:
                raise ValueError(f"Codes hold uint8 bytes: a {np.dtype(dtype)} array needs a copy (copy=False given)")
            return a.astype(dtype)
        return a.copy() if copy else a

    def __array_function__(self, func, types, args, kwargs):
        if func in (np.concatenate, np.vstack):
            parts = args[0] if args else kwargs.get("arrays", kwargs.get("tup"))
            axis = kwargs.get("axis", args[1] if len(args) > 1 else 0) if func is np.concatenate else 0
            rest = {k: v for k, v in kwargs.items() if k not in ("axis", "arrays", "tup")}
            if axis != 0 or rest or len(args) > 2:
                raise Learn2HashError(
                    f"np.{func.__name__} of Codes joins rows only (axis=0, no other arguments): use Codes.concat(parts); "
                    "for bytes use np.concatenate([np.asarray(c) for c in parts], axis=...)")
            return Codes.concat(parts)
        if func is np.array_equal and not kwargs and len(args) == 2 and all(isinstance(a, Codes) for a in args):
            return args[0] == args[1]
        # anything else sees the packed bytes, as for a plain array
        return func(*_as_arrays(args), **_as_arrays(kwargs))

    def __array_ufunc__(self, ufunc, method, *inputs, **kwargs):
        if ufunc in (np.equal, np.not_equal) and method == "__call__":
            other = next((a for a in inputs if not isinstance(a, Codes)), None)
            if other is None:
                same = inputs[0] == inputs[1]
                return same if ufunc is np.equal else not same
            raise _compare_error(other)
        if "out" in kwargs and any(isinstance(o, Codes) for o in kwargs["out"]):
            raise Learn2HashError("Codes are read-only: a ufunc cannot write its output into them")
        return getattr(ufunc, method)(*_as_arrays(inputs), **_as_arrays(kwargs))

    def __hash__(self) -> int:  # mutable-looking container: identity hash
        return id(self)

    def __repr__(self) -> str:
        return f"Codes(n={len(self)}, bits={self._bits})"

    def to_bits(self) -> np.ndarray:
        """``bool[n, K]``."""
        return np.unpackbits(self._packed, axis=1, count=self._bits, bitorder="big").astype(bool)

    def to_signs(self, dtype=np.float32) -> np.ndarray:
        """``[n, K]`` array of +-1."""
        return np.where(self.to_bits(), 1, -1).astype(dtype)

    def bit_balance(self) -> np.ndarray:
        """Fraction of items with bit 1, per bit position (``float[K]``)."""
        if len(self) == 0:
            return np.full(self._bits, np.nan)
        return self.to_bits().mean(axis=0)

    def check_bits(self, bits: int, what: str = "codes") -> "Codes":
        """Raise a clear error unless these codes have ``bits`` bits; return self."""
        if self._bits != bits:
            raise Learn2HashError(f"{what} have {self._bits} bits, expected {bits}")
        return self

    # ---------------------------------------------------------------- distances
    def distances(self, other: "Codes", block_bytes: int = 64 << 20) -> np.ndarray:
        """Hamming distances ``int32[len(self), len(other)]`` (see :func:`hamming_distances`)."""
        return hamming_distances(self, other, block_bytes=block_bytes)

    # ---------------------------------------------------------------- persistence
    def save(self, path: str | os.PathLike) -> None:
        """Write the codes to ``path`` (a ``.npy`` of the packed bytes) and ``path + '.json'``, atomically as a pair.

        The packed array is written first under a name of its own, ``.NAME.<sha256 prefix>.npy`` beside
        ``path``; the metadata file ``path + '.json'`` (bits, count, checksum, and the name of
        that file) is replaced last, which switches readers to the new version; ``path`` itself
        becomes another name of the new array (a hard link, or a copy), for tools that read
        ``.npy`` files. A save killed at any point leaves the old codes or the new ones readable.
        Versions older than the previous one are deleted. Concurrent saves to one path take turns.
        """
        save_codes(self, path)

    @staticmethod
    def exists(path: str | os.PathLike) -> bool:
        """Whether codes were saved at ``path`` (its metadata file or the ``.npy`` is there)."""
        return codes_saved(path)

    @classmethod
    def load(cls, path: str | os.PathLike, mmap: bool = False) -> "Codes":
        """Read codes written by :meth:`save`; a missing, corrupt or mismatched file is a clear error.

        Reads both layouts: metadata version 2 names the data file; version 1 (before saves were
        versioned) describes ``path`` itself.
        """
        return load_codes(cls, path, mmap)


def _read_only(a: np.ndarray) -> np.ndarray:
    """``a`` when neither it nor any array it views can be written, else a read-only copy."""
    base = a
    while isinstance(base, np.ndarray):
        if base.flags.writeable:
            a = a.copy()
            a.flags.writeable = False
            return a
        base = base.base
    return a


def _as_arrays(obj):
    """``obj`` with every :class:`Codes` in it (also inside lists, tuples and dicts) replaced by its packed bytes."""
    if isinstance(obj, Codes):
        return obj.packed
    if isinstance(obj, (list, tuple)):
        return type(obj)(_as_arrays(o) for o in obj)
    if isinstance(obj, dict):
        return {k: _as_arrays(v) for k, v in obj.items()}
    return obj


def _compare_error(other: object) -> Learn2HashError:
    return Learn2HashError(
        f"cannot compare Codes with a {type(other).__name__}: compare packed bytes with "
        "np.array_equal(np.asarray(codes), array), or codes with codes == Codes.from_packed(array, codes.bits)")


def _shared_provenance(parts: Sequence[Codes]) -> Provenance | None:
    """What every part's provenance agrees on (None when they come from different or unknown hashers)."""
    first = parts[0].provenance
    if first is None or first.hasher_sha256 is None:
        return None
    if any(p.provenance is None or p.provenance.hasher_sha256 != first.hasher_sha256 for p in parts):
        return None
    if all(p.provenance == first for p in parts):
        return first
    return Provenance(first.hasher_sha256)


def as_codes(x: "Codes | np.ndarray", what: str = "codes") -> Codes:
    """Accept :class:`Codes` (returned as is); anything else is a clear error."""
    if isinstance(x, Codes):
        return x
    raise Learn2HashError(
        f"{what} must be learn2hash.Codes (build them with Codes.from_signs or Codes.from_bits), got {type(x).__name__}"
    )


def iter_distance_blocks(
    a: Codes, b: Codes, block_bytes: int = 64 << 20, rows: int | None = None
) -> Iterator[tuple[slice, np.ndarray]]:
    """Yield ``(row_slice, int32[rows, len(b)])`` blocks of Hamming distances between ``a`` and ``b``.

    The working memory per block is bounded by about ``block_bytes``; the caller decides what to
    keep from each block, so distances for 10,000 x 1,000,000 codes can be reduced without ever
    holding the full matrix.
    """
    a = as_codes(a, "query codes")
    b = as_codes(b, "database codes")
    if a.bits != b.bits:
        raise Learn2HashError(f"query codes have {a.bits} bits but database codes have {b.bits} bits")
    nb = len(b)
    # Work on 64-bit words where possible: pad each code to a multiple of 8 bytes.
    words = (a.n_bytes + 7) // 8
    bw = as_words(b.packed)
    per_row = max(1, nb * words * 8 * 2 + nb * 4)
    step = rows or max(1, min(len(a), block_bytes // per_row))
    for start in range(0, len(a), step):
        stop = min(len(a), start + step)
        aw = as_words(a.packed[start:stop])
        dist = np.zeros((stop - start, nb), dtype=np.int32)
        for w in range(words):
            dist += np.bitwise_count(aw[:, w, None] ^ bw[None, :, w])
        yield slice(start, stop), dist


def as_words(packed: np.ndarray) -> np.ndarray:
    """``uint64[n, W]`` words of packed ``uint8[n, nbytes]`` codes, ``W = ceil(nbytes / 8)``, the last
    word zero-padded (a view when ``nbytes % 8 == 0`` and the array is contiguous and aligned)."""
    n, nbytes = packed.shape
    words = (nbytes + 7) // 8
    if nbytes == 8 * words and packed.flags.c_contiguous and packed.ctypes.data % 8 == 0:
        return packed.view(np.uint64)
    out = np.zeros((n, 8 * words), dtype=np.uint8)
    out[:, :nbytes] = packed
    return out.view(np.uint64)


def hamming_distances(a: Codes, b: Codes, block_bytes: int = 64 << 20) -> np.ndarray:
    """Full Hamming distance matrix ``int32[len(a), len(b)]``, computed block by block."""
    out = np.empty((len(a), len(b)), dtype=np.int32)
    for rows, block in iter_distance_blocks(a, b, block_bytes):
        out[rows] = block
    return out
