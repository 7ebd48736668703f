"""The one image -> tensor path, used by training, ``encode``, ``search``, the service and the readers.

An image (a file path, the bytes of a file, or an opened :class:`PIL.Image.Image`) becomes a
``uint8[C, H, W]`` array through the same steps everywhere:

1. **decode** with Pillow; a JPEG whose output needs at most half its pixels is decoded at a
   reduced scale (``draft``: the DCT does the first halvings, which is several times faster);
2. **EXIF orientation** applied (``ImageOps.exif_transpose``), so a photograph taken upright is
   upright whatever the camera stored;
3. **mode** to RGB, or L for 1-channel networks (:func:`to_mode`): 16-bit grey (``I;16*``, ``I``)
   is scaled by 255/65535 (Pillow's own conversion would clip everything above 255 to white),
   float (``F``) is read as [0, 1], transparent images (RGBA, LA, P with transparency) are
   composited over white, CMYK, palette and bilevel images go through Pillow's conversions;
4. **geometry** (:class:`Geometry`, derived from the backbone's
   :class:`~learn2hash.nn.registry.InputSpec` by :func:`geometry`):

   - encoding (:func:`encode_image`): scale so that the shorter side is ``resize`` (or, without
     ``resize``, so that the image just covers the output), then the centre crop of ``size``;
   - training (:func:`train_image`): a random-resized crop (area 8-100 %, aspect 3/4-4/3, as
     torchvision's ``RandomResizedCrop``), resized to ``size``, and a horizontal flip with
     probability 1/2; the random numbers come from the generator the caller passes
     (:func:`item_rng`: one per item, epoch and seed, so worker processes do not matter).

   The crop and the resize are one bilinear (antialiased) Pillow resize of the crop box.

The network normalises (mean/std) itself, on its device; this module hands it ``uint8``.
A file that cannot be read raises :class:`~learn2hash.errors.CorruptFileError` naming it (a
missing file a :class:`~learn2hash.errors.Learn2HashError`).
"""

from __future__ import annotations

import io
import math
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Union

import numpy as np

from learn2hash.errors import CorruptFileError, Learn2HashError

#: file name endings read as images
IMAGE_EXTENSIONS = frozenset({".jpg", ".jpeg", ".png", ".bmp", ".gif", ".tif", ".tiff", ".webp", ".ppm", ".pgm"})
#: Pillow modes that hold one channel of grey
GRAY_MODES = frozenset({"1", "L", "LA", "La", "I", "I;16", "I;16B", "I;16L", "I;16N", "F", "P;L"})
_SIXTEEN_BIT = frozenset({"I", "I;16", "I;16B", "I;16L", "I;16N"})
#: RandomResizedCrop's ranges (torchvision's defaults)
CROP_SCALE = (0.08, 1.0)
CROP_RATIO = (3 / 4, 4 / 3)

Source = Union[str, os.PathLike, bytes, "Any"]


@dataclass(frozen=True)
class Geometry:
    """What the pipeline outputs: ``size = (H, W)``, ``channels`` (1 or 3), and ``resize``, the
    shorter side before the centre crop when encoding (``None``: just cover ``size``)."""

    size: tuple[int, int]
    channels: int = 3
    resize: int | None = None

    def __post_init__(self) -> None:
        if self.channels not in (1, 3):
            raise Learn2HashError(f"images have 1 (grey) or 3 (RGB) channels, not {self.channels}")
        if len(self.size) != 2 or min(self.size) < 1:
            raise Learn2HashError(f"image size must be (height, width) >= 1, got {self.size}")

    @property
    def item_shape(self) -> tuple[int, int, int]:
        return (self.channels, int(self.size[0]), int(self.size[1]))


def geometry(spec: Any, item_shape: tuple[int, ...]) -> Geometry:
    """The geometry a backbone declaring ``spec`` (an ``InputSpec``) takes for items of ``item_shape``
    ``(C, H, W)``: the spec's square ``size`` and ``resize`` when it declares them, else the items' own
    ``(H, W)``; the spec's channel count."""
    c, h, w = (int(s) for s in item_shape)
    channels = int(getattr(spec, "channels", c) or c)
    size = getattr(spec, "size", None)
    if size:
        return Geometry((int(size), int(size)), channels, getattr(spec, "resize", None))
    return Geometry((h, w), channels, None)


def geometry_for(hasher: Any, item_shape: tuple[int, ...]) -> Geometry:
    """The geometry images are decoded to for ``hasher``: a deep hasher's own (its backbone's input,
    :meth:`~learn2hash.methods.deep.DeepHasher.image_geometry`), else items of ``item_shape``
    ``(C, H, W)`` as they are (a shallow hasher over pixels)."""
    own = hasher.image_geometry()
    if own is not None:
        return own
    c, h, w = (int(s) for s in item_shape)
    return Geometry((h, w), c)


def _name(source: Any, what: str | None) -> str:
    if what:
        return what
    if isinstance(source, (str, os.PathLike)):
        return f"image {source}"
    return "the image"


def open_image(source: Source, what: str | None = None):
    """Open ``source`` (path, bytes or an opened image) without decoding its pixels (header only)."""
    from PIL import Image

    if isinstance(source, Image.Image):
        return source
    name = _name(source, what)
    try:
        if isinstance(source, (bytes, bytearray, memoryview)):
            return Image.open(io.BytesIO(bytes(source)))
        return Image.open(Path(source))
    except FileNotFoundError:
        raise Learn2HashError(f"{name} does not exist") from None
    except IsADirectoryError:
        raise Learn2HashError(f"{name} is a folder, not an image file") from None
    except Image.UnidentifiedImageError:
        raise CorruptFileError(f"cannot decode {name}: not an image format Pillow can read") from None
    except (OSError, ValueError, SyntaxError, Image.DecompressionBombError) as exc:
        raise CorruptFileError(f"cannot decode {name}: {exc}") from None


def _orientation(img) -> int:
    try:
        return int(img.getexif().get(0x0112, 1) or 1)
    except Exception:  # a broken EXIF block is no reason to refuse the pixels
        return 1


def oriented_size(img) -> tuple[int, int]:
    """``(width, height)`` of an opened image as it is displayed (after its EXIF orientation)."""
    w, h = img.size
    return (h, w) if _orientation(img) in (5, 6, 7, 8) else (w, h)


def probe(source: Source, what: str | None = None) -> tuple[tuple[int, int], int]:
    """``((height, width), channels)`` of an image from its header (displayed size; 1 grey, 3 colour)."""
    from PIL import Image

    img = open_image(source, what)
    try:
        w, h = oriented_size(img)
        return (h, w), (1 if img.mode in GRAY_MODES else 3)
    finally:
        if not isinstance(source, Image.Image):
            img.close()


def to_mode(img, channels: int):
    """``img`` (any Pillow mode) as ``"RGB"`` (``channels=3``) or ``"L"`` (``channels=1``).

    16-bit grey is scaled by 255/65535 (rounded), float grey read as [0, 1]; transparency is
    composited over white.
    """
    from PIL import Image

    target = "L" if channels == 1 else "RGB"
    mode = img.mode
    if mode in _SIXTEEN_BIT:
        a = np.asarray(img).astype(np.int64)
        a = (2 * np.clip(a, 0, 65535) + 257) // 514  # round(v / 257) = round(v * 255 / 65535)
        img = Image.fromarray(a.astype(np.uint8), "L")
    elif mode == "F":
        a = np.nan_to_num(np.asarray(img, dtype=np.float64), nan=0.0)
        img = Image.fromarray(np.clip(np.rint(a * 255.0), 0, 255).astype(np.uint8), "L")
    elif mode in ("RGBA", "LA", "PA", "RGBa", "La") or (mode in ("P", "L", "RGB") and "transparency" in img.info):
        rgba = img if img.mode == "RGBA" else img.convert("RGBA")
        img = Image.new("RGB", rgba.size, (255, 255, 255))
        img.paste(rgba.convert("RGB"), mask=rgba.getchannel("A"))  # about 11 bytes a pixel at the peak
    if img.mode != target:
        img = img.convert(target)
    return img


def _decode(img, scale: float, channels: int):
    """Decode (reduced by the JPEG draft when ``scale``, the output's share of each side, is <= 1/2),
    apply the EXIF orientation, convert the mode."""
    from PIL import ImageOps

    if scale <= 0.5 and getattr(img, "format", None) == "JPEG":
        w, h = img.size
        img.draft(img.mode, (max(1, math.ceil(w * scale)), max(1, math.ceil(h * scale))))
    img.load()
    if _orientation(img) != 1:  # exif_transpose copies the image even when there is nothing to do
        img = ImageOps.exif_transpose(img) or img
    return to_mode(img, channels)


def _finish(img, box: tuple[float, float, float, float], geom: Geometry, flip: bool) -> np.ndarray:
    from PIL import Image

    h, w = geom.size
    if img.size != (w, h) or box != (0, 0, w, h):
        img = img.resize((w, h), Image.Resampling.BILINEAR, box=box)
    if flip:
        img = img.transpose(Image.Transpose.FLIP_LEFT_RIGHT)
    a = np.asarray(img, dtype=np.uint8)
    return a[None] if a.ndim == 2 else a.transpose(2, 0, 1)


def _guarded(source: Source, what: str | None, work):
    from PIL import Image

    name = _name(source, what)
    img = open_image(source, what)
    try:
        return work(img)
    except Learn2HashError:
        raise
    except (OSError, ValueError, SyntaxError, EOFError, Image.DecompressionBombError) as exc:
        raise CorruptFileError(f"cannot decode {name}: {exc}") from None
    finally:
        if not isinstance(source, Image.Image):
            img.close()


def centre_box(width: float, height: float, geom: Geometry) -> tuple[float, float, float, float]:
    """The box of a ``width`` x ``height`` image that encoding keeps: scaled so that the shorter side is
    ``geom.resize`` (at least covering ``geom.size``), the centre ``geom.size``, in the image's pixels."""
    out_h, out_w = geom.size
    s = max(out_w / width, out_h / height)
    if geom.resize:
        s = max(s, geom.resize / min(width, height))
    cw, ch = out_w / s, out_h / s
    left, top = (width - cw) / 2, (height - ch) / 2
    return (left, top, left + cw, top + ch)


def encode_image(source: Source, geom: Geometry, what: str | None = None) -> np.ndarray:
    """``uint8[C, H, W]``: decode, orient, convert, resize and centre-crop ``source`` for encoding."""

    def work(img):
        w, h = oriented_size(img)
        left, top, right, bottom = centre_box(w, h, geom)
        scale = max(geom.size[1] / (right - left), geom.size[0] / (bottom - top))
        img = _decode(img, scale, geom.channels)
        fx, fy = img.size[0] / w, img.size[1] / h
        return _finish(img, (left * fx, top * fy, right * fx, bottom * fy), geom, False)

    return _guarded(source, what, work)


def random_crop_box(width: int, height: int, rng: np.random.Generator) -> tuple[int, int, int, int]:
    """A random-resized crop ``(left, top, right, bottom)`` of a ``width`` x ``height`` image (torchvision's
    rule: 10 tries at a random area and aspect, else the centre crop of the nearest allowed aspect)."""
    area = width * height
    log_ratio = (math.log(CROP_RATIO[0]), math.log(CROP_RATIO[1]))
    for _ in range(10):
        target = area * rng.uniform(*CROP_SCALE)
        aspect = math.exp(rng.uniform(*log_ratio))
        cw = int(round(math.sqrt(target * aspect)))
        ch = int(round(math.sqrt(target / aspect)))
        if 0 < cw <= width and 0 < ch <= height:
            top = int(rng.integers(0, height - ch + 1))
            left = int(rng.integers(0, width - cw + 1))
            return (left, top, left + cw, top + ch)
    ratio = width / height
    if ratio < CROP_RATIO[0]:
        cw, ch = width, int(round(width / CROP_RATIO[0]))
    elif ratio > CROP_RATIO[1]:
        cw, ch = int(round(height * CROP_RATIO[1])), height
    else:
        cw, ch = width, height
    left, top = (width - cw) // 2, (height - ch) // 2
    return (left, top, left + cw, top + ch)


def train_image(source: Source, geom: Geometry, rng: np.random.Generator, flip: bool = True,
                what: str | None = None) -> np.ndarray:
    """``uint8[C, H, W]``: a random-resized crop of ``source`` at ``geom.size``, flipped with probability
    1/2 when ``flip``; every random number is drawn from ``rng``."""

    def work(img):
        w, h = oriented_size(img)
        left, top, right, bottom = random_crop_box(w, h, rng)
        mirrored = bool(flip and rng.random() < 0.5)
        scale = max(geom.size[1] / (right - left), geom.size[0] / (bottom - top))
        img = _decode(img, scale, geom.channels)
        fx, fy = img.size[0] / w, img.size[1] / h
        return _finish(img, (left * fx, top * fy, right * fx, bottom * fy), geom, mirrored)

    return _guarded(source, what, work)


def item_rng(seed: int, epoch: int, index: int) -> np.random.Generator:
    """The generator of one training item's transform: a function of (seed, epoch, item) only."""
    return np.random.default_rng([int(seed) & 0xFFFFFFFF, int(epoch), int(index)])


def is_image_file(path: Path) -> bool:
    return path.suffix.lower() in IMAGE_EXTENSIONS and path.is_file() and not path.name.startswith(".")


def list_images(source: str | os.PathLike) -> tuple[Path, list[Path]]:
    """``(root, files)`` for ``encode --images``: a folder (its images, recursively, sorted by relative
    path) or a list file (one path per line, relative to the list's folder; blank lines and ``#``
    comments skipped; anything after the path, such as labels, is ignored). See :func:`list_image_names`."""
    root, names = list_image_names(source)
    return root, [root / name for name in names]


def list_image_names(source: str | os.PathLike) -> tuple[Path, list[str]]:
    """:func:`list_images` as ``(root, names)``: each file as written relative to ``root`` (for a
    folder its ``/``-separated path under it), plain strings, about a tenth of the memory of paths
    (a collection lists millions). A folder is walked without following links to folders; files
    whose name starts with a dot are left out."""
    src = Path(source)
    if src.is_dir():
        names: list[str] = []
        stack = [(os.fspath(src), "")]
        while stack:
            folder, prefix = stack.pop()
            with os.scandir(folder) as entries:
                for entry in entries:
                    try:
                        is_dir = entry.is_dir() and not entry.is_symlink()
                    except OSError:
                        is_dir = False
                    if is_dir:
                        stack.append((entry.path, f"{prefix}{entry.name}/"))
                    elif (not entry.name.startswith(".") and os.path.splitext(entry.name)[1].lower() in IMAGE_EXTENSIONS
                          and entry.is_file()):
                        names.append(prefix + entry.name)
        if not names:
            raise Learn2HashError(f"{src} holds no images ({', '.join(sorted(IMAGE_EXTENSIONS))})")
        names.sort()
        return src, names
    if not src.is_file():
        raise Learn2HashError(f"--images {src} is neither a folder of images nor a list file")
    if src.suffix.lower() in IMAGE_EXTENSIONS:
        return src.parent, [src.name]
    try:
        lines = src.read_text(encoding="utf-8").splitlines()
    except (OSError, UnicodeDecodeError) as exc:
        raise Learn2HashError(f"cannot read the image list {src}: {exc}") from None
    names = []
    for line in lines:
        parts = line.split()
        if parts and not parts[0].startswith("#"):
            names.append(parts[0])
    if not names:
        raise Learn2HashError(f"the image list {src} names no images")
    return src.parent, names


def image_paths(x: Any) -> list[Path] | None:
    """The image files behind a lazily read split (image-list / image-folder readers), else ``None``."""
    paths = getattr(x, "paths", None)
    if paths is not None:
        return list(paths)
    base, indices = getattr(x, "base", None), getattr(x, "indices", None)
    if base is not None and indices is not None:
        inner = image_paths(base)
        if inner is not None:
            return [inner[int(i)] for i in indices]
    return None
