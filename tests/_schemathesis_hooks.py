"""Schemathesis hooks for the search service's contract test (loaded through SCHEMATHESIS_HOOKS).

The OpenAPI document says the multipart field ``image`` of ``POST /search`` is a PNG, JPEG, GIF,
BMP or WEBP file (its ``encoding`` lists those content types). A JSON Schema cannot say "a
decodable image", so Schemathesis is told how to make one of each: small images of random size,
mode and pixels, written by Pillow. Generated requests that the document calls valid are then
valid for the server too, and ``positive_data_acceptance`` can hold the server to them.
"""

from __future__ import annotations

import io

import numpy as np
import schemathesis
from hypothesis import strategies as st
from PIL import Image

FORMATS = {"image/png": "PNG", "image/jpeg": "JPEG", "image/gif": "GIF", "image/bmp": "BMP", "image/webp": "WEBP"}


def image_files(fmt: str) -> st.SearchStrategy[bytes]:
    """Image files of format ``fmt``: 1-48 pixels a side, gray, RGB or RGBA (where the format has it)."""
    modes = ["L", "RGB"] + (["RGBA"] if fmt in ("PNG", "WEBP") else [])

    @st.composite
    def draw_file(draw) -> bytes:
        width, height = draw(st.integers(1, 48)), draw(st.integers(1, 48))
        mode = draw(st.sampled_from(modes))
        seed = draw(st.integers(0, 2**32 - 1))
        bands = len(mode)
        pixels = np.random.default_rng(seed).integers(0, 256, size=(height, width, bands), dtype=np.uint8)
        image = Image.fromarray(pixels[:, :, 0] if bands == 1 else pixels, mode=mode)
        buf = io.BytesIO()
        image.save(buf, format=fmt)
        return buf.getvalue()

    return draw_file()


for _media_type, _fmt in FORMATS.items():
    schemathesis.openapi.media_type(_media_type, image_files(_fmt))
