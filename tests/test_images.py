"""The image pipeline (learn2hash.images) and everything that decodes images through it: the
DataLoader feeding of training and encoding, the readers, the CLI, the service, encode --images."""

from __future__ import annotations

import io
import json
import math

import numpy as np
import pytest
import torch
from PIL import Image

from learn2hash import images
from learn2hash.errors import CorruptFileError, Learn2HashError
from learn2hash.images import Geometry


def _pixels(img, channels=3) -> np.ndarray:
    """The pipeline's output for ``img`` at its own size (no resampling): uint8 [C, H, W]."""
    w, h = images.oriented_size(img)
    return images.encode_image(img, Geometry((h, w), channels))


# ----------------------------------------------------------------------------- modes, by hand
def test_grey_to_rgb_and_rgb_to_grey_by_hand():
    grey = Image.fromarray(np.array([[0, 77, 255]], dtype=np.uint8), "L")
    assert _pixels(grey).tolist() == [[[0, 77, 255]]] * 3
    rgb = Image.fromarray(np.array([[[200, 100, 50]]], dtype=np.uint8), "RGB")
    # ITU-R 601-2 luma: (200*299 + 100*587 + 50*114) / 1000 = 124.2
    assert _pixels(rgb, channels=1).tolist() == [[[124]]]


def test_rgba_is_composited_over_white_by_hand():
    a = np.array([[[200, 100, 50, 255], [200, 100, 50, 128], [0, 0, 0, 0]]], dtype=np.uint8)
    out = _pixels(Image.fromarray(a, "RGBA"))[:, 0, :].T  # [pixel, channel]
    assert out[0].tolist() == [200, 100, 50]      # opaque: unchanged
    assert out[2].tolist() == [255, 255, 255]     # transparent black: white, not black
    # half transparent: c * 128/255 + 255 * (1 - 128/255) = 227.4, 177.2, 152.1
    assert np.abs(out[1].astype(int) - [227, 177, 152]).max() <= 1


def test_cmyk_by_hand():
    img = Image.new("CMYK", (1, 1), (51, 102, 0, 51))
    # R = (255 - C)(255 - K)/255 = 204*204/255 = 163.2; G = 153*204/255 = 122.4; B = 255*204/255
    assert _pixels(img)[:, 0, 0].tolist() == [163, 122, 204]


@pytest.mark.parametrize("through_png", [False, True])
def test_16_bit_grey_is_scaled_not_clipped(through_png):
    values = np.array([[0, 1000, 25700, 65535]], dtype=np.uint16)
    img = Image.fromarray(values)
    assert img.mode == "I;16"
    if through_png:
        buf = io.BytesIO()
        img.save(buf, "PNG")
        img = Image.open(io.BytesIO(buf.getvalue()))
        assert img.mode.startswith("I")
    # round(v * 255 / 65535): 0, 3.89 -> 4, 100, 255 (Pillow's own convert("L") clips 1000 to 255)
    assert _pixels(img, channels=1).tolist() == [[[0, 4, 100, 255]]]
    assert _pixels(img, channels=3)[:, 0, :].tolist() == [[0, 4, 100, 255]] * 3


def test_32_bit_int_and_float_grey():
    ints = Image.fromarray(np.array([[-5, 257, 70000]], dtype=np.int32), "I")
    assert _pixels(ints, channels=1).tolist() == [[[0, 1, 255]]]   # clipped to 0..65535, / 257
    floats = Image.fromarray(np.array([[0.0, 0.5, 1.0, 2.0, -1.0]], dtype=np.float32), "F")
    assert _pixels(floats, channels=1).tolist() == [[[0, 128, 255, 255, 0]]]  # [0, 1] -> 0..255


def test_palette_with_transparency_and_bilevel():
    p = Image.new("P", (2, 1))
    p.putpalette([10, 20, 30, 0, 0, 0] + [0] * 762)
    p.putpixel((0, 0), 0)
    p.putpixel((1, 0), 1)
    p.info["transparency"] = 1
    assert _pixels(p)[:, 0, :].T.tolist() == [[10, 20, 30], [255, 255, 255]]
    bilevel = Image.fromarray(np.array([[True, False]]))
    assert bilevel.mode == "1"
    assert _pixels(bilevel, channels=1).tolist() == [[[255, 0]]]


# ----------------------------------------------------------------------------- EXIF, geometry
def _two_halves(w=40, h=20) -> Image.Image:
    a = np.zeros((h, w, 3), dtype=np.uint8)
    a[:, : w // 2] = (255, 0, 0)
    a[:, w // 2:] = (0, 0, 255)
    return Image.fromarray(a)


@pytest.mark.parametrize("fmt", ["PNG", "JPEG"])
def test_exif_orientation_is_applied(fmt):
    exif = Image.Exif()
    exif[0x0112] = 6  # stored 40x20; shown rotated 90 degrees clockwise: 20 wide, 40 high
    buf = io.BytesIO()
    _two_halves().save(buf, fmt, exif=exif.tobytes())
    data = buf.getvalue()
    assert images.probe(data) == ((40, 20), 3)
    out = images.encode_image(data, Geometry((40, 20)))
    assert out.shape == (3, 40, 20)
    top, bottom = out[:, 2:18].reshape(3, -1).mean(1), out[:, 22:38].reshape(3, -1).mean(1)
    # the stored left half (red) is at the top once the image is upright
    assert top[0] > 200 and top[2] < 50 and bottom[2] > 200 and bottom[0] < 50


def test_encode_transform_resizes_the_shorter_side_and_keeps_the_centre():
    cols = Image.fromarray(np.array([[10, 20, 30, 40]] * 2, dtype=np.uint8), "L")  # 4 wide, 2 high
    assert images.encode_image(cols, Geometry((2, 2), 1)).tolist() == [[[20, 30], [20, 30]]]
    # 400x200 in three bands; shorter side to 100 (scale 1/2), centre 100x100 = the middle band
    a = np.zeros((200, 400, 3), dtype=np.uint8)
    a[:, :100], a[:, 100:300], a[:, 300:] = (255, 0, 0), (0, 255, 0), (0, 0, 255)
    out = images.encode_image(Image.fromarray(a), Geometry((100, 100), 3, resize=100))
    inner = out[:, :, 2:-2]  # the filter reads a pixel beyond the box at its edges
    assert out.shape == (3, 100, 100) and inner[1].min() >= 250 and inner[0].max() <= 5 and inner[2].max() <= 5
    # resize larger than the crop: shorter side 200 -> the centre 100x100 of the (unscaled) middle band
    assert images.encode_image(Image.fromarray(a), Geometry((50, 60), 3, resize=200)).shape == (3, 50, 60)


@pytest.mark.parametrize("size,resize", [((224, 224), 256), ((32, 48), None), ((7, 5), None)])
def test_train_and_encode_transforms_give_the_geometry(size, resize):
    img = Image.fromarray(np.random.default_rng(0).integers(0, 255, (130, 300, 3), dtype=np.uint8))
    geom = Geometry(size, 3, resize)
    assert images.encode_image(img, geom).shape == (3,) + size
    for i in range(5):
        assert images.train_image(img, geom, images.item_rng(0, 0, i)).shape == (3,) + size
    assert images.encode_image(img, Geometry(size, 1, resize)).shape == (1,) + size


def test_train_transform_is_a_function_of_seed_epoch_item():
    img = Image.fromarray(np.random.default_rng(1).integers(0, 255, (60, 80, 3), dtype=np.uint8))
    geom = Geometry((16, 16))
    a = images.train_image(img, geom, images.item_rng(3, 1, 7))
    assert np.array_equal(a, images.train_image(img, geom, images.item_rng(3, 1, 7)))
    others = [images.train_image(img, geom, images.item_rng(3, e, 7)) for e in range(2, 6)]
    assert not all(np.array_equal(a, o) for o in others)


def test_random_crop_box_follows_the_area_and_aspect_ranges():
    rng = np.random.default_rng(0)
    for w, h in [(300, 200), (50, 400), (64, 64)]:
        for _ in range(200):
            left, top, right, bottom = images.random_crop_box(w, h, rng)
            cw, ch = right - left, bottom - top
            assert 0 <= left < right <= w and 0 <= top < bottom <= h
            if (cw, ch) != (w, h) and not (cw == w or ch == h):  # not the fallback
                assert 0.08 * w * h * 0.9 <= cw * ch <= w * h
                assert 3 / 4 * 0.9 <= cw / ch <= 4 / 3 * 1.1


def test_a_reduced_jpeg_decode_matches_the_full_decode():
    rng = np.random.default_rng(0)
    small = rng.integers(0, 255, (30, 40, 3), dtype=np.uint8)
    big = Image.fromarray(small).resize((1600, 1200), Image.Resampling.BILINEAR)  # smooth, like a photo
    buf = io.BytesIO()
    big.save(buf, "JPEG", quality=95)
    geom = Geometry((64, 64), 3, 72)
    fast = images.encode_image(buf.getvalue(), geom).astype(int)
    full = Image.open(io.BytesIO(buf.getvalue())).convert("RGB")
    slow = images._finish(full, images.centre_box(1600, 1200, geom), geom, False).astype(int)
    assert np.abs(fast - slow).mean() < 3


def test_corrupt_and_missing_images_name_their_path(tmp_path):
    bad = tmp_path / "broken.jpg"
    buf = io.BytesIO()
    _two_halves().save(buf, "JPEG")
    bad.write_bytes(buf.getvalue()[:150])
    with pytest.raises(CorruptFileError, match="broken.jpg"):
        images.encode_image(bad, Geometry((8, 8)))
    (tmp_path / "text.png").write_text("not an image")
    with pytest.raises(CorruptFileError, match="text.png"):
        images.train_image(tmp_path / "text.png", Geometry((8, 8)), images.item_rng(0, 0, 0))
    with pytest.raises(Learn2HashError, match="missing.png"):
        images.encode_image(tmp_path / "missing.png", Geometry((8, 8)))


def test_geometry_comes_from_the_backbone_spec():
    from learn2hash.nn.registry import InputSpec

    assert images.geometry(InputSpec(size=224, resize=256), (1, 28, 28)) == Geometry((224, 224), 3, 256)
    assert images.geometry(InputSpec(channels=1), (1, 28, 30)) == Geometry((28, 30), 1, None)
    assert images.geometry(None, (3, 12, 16)) == Geometry((12, 16), 3, None)


@pytest.mark.parametrize("size", [(300, 200), (200, 333), (256, 256)])
def test_resize_crop_gives_torchvisions_crops_for_a_fixed_seed(tmp_path, size):
    """The recipes' training crop (augmentation ``crop,flip``) is torchvision's Resize(256) + RandomCrop(224)
    + RandomHorizontalFlip(): the same pixels for the same seed."""
    import torch
    from PIL import Image

    from learn2hash.nn._torchvision import import_torchvision

    T = import_torchvision().transforms
    rng = np.random.default_rng(0)
    path = tmp_path / "photo.png"
    Image.fromarray(rng.integers(0, 256, (size[1], size[0], 3), dtype=np.uint8)).save(path)
    geom = images.Geometry((224, 224), 3, resize=256)
    reference = T.Compose([T.Resize(256), T.RandomCrop(224), T.RandomHorizontalFlip()])
    outputs = []
    for seed in range(8):
        torch.manual_seed(seed)
        with Image.open(path) as im:
            expect = np.asarray(reference(im.convert("RGB"))).transpose(2, 0, 1)
        ours = images.resize_crop_image(path, geom, torch.Generator().manual_seed(seed))
        np.testing.assert_array_equal(ours, expect)
        outputs.append(ours.tobytes())
    # the seeds give different crops and flips (a square 256 image has only the flip to vary)
    assert len(set(outputs)) > (1 if size == (256, 256) else 4)


def test_crop_augmentation_is_refused_for_arrays_and_with_an_argument():
    from learn2hash.nn import augment as aug

    assert aug.parse("crop,flip") == [("crop", None), ("flip", None)]
    with pytest.raises(Learn2HashError, match="'crop' takes no argument"):
        aug.parse("crop:256")
    from learn2hash import datasets, methods

    ds = datasets.load("digits")
    with pytest.raises(Learn2HashError, match="'crop' is the training crop of image files"):
        methods.create("csq", bits=8, epochs=1, augment="crop,flip").fit(ds.train)
