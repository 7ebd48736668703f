"""Clip backbones (c3d-small, framepool-small) and CSQ on clips, through the library and the CLI."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from _fake_fashion import write_fake_fashion
from learn2hash.cli import main
from learn2hash.codes import Codes
from learn2hash.errors import Learn2HashError
from learn2hash.methods import Hasher, create
from learn2hash.nn import create_backbone
from learn2hash.nn.video import C3DSmall, FramePool
from learn2hash.runs import Run

#: small networks that keep the tests fast
TINY_C3D = {"widths": [8, 16], "stem_stride": 2}
TINY_POOL = {"widths": [8, 16], "frame_size": None}


def moving_squares(n: int, frames: int = 8, size: int = 16, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """``uint8[n, frames, 1, size, size]`` clips of a bright 3x3 square crossing a dark frame
    left-to-right (class 0) or right-to-left (class 1) along a random row; the two classes are
    each other's clips with the frames reversed."""
    rng = np.random.default_rng(seed)
    x = np.zeros((n, frames, 1, size, size), dtype=np.uint8)
    direction = np.arange(n) % 2
    for i in range(n):
        row = rng.integers(0, size - 3)
        cols = np.linspace(0, size - 3, frames).round().astype(int)
        if direction[i]:
            cols = cols[::-1]
        for t, c in enumerate(cols):
            x[i, t, 0, row:row + 3, c:c + 3] = 255
    return x, direction


# --------------------------------------------------------------------------- shapes
@pytest.mark.parametrize("shape", [(16, 1, 64, 64), (8, 3, 32, 48), (5, 1, 20, 20), (1, 1, 4, 4)])
def test_backbones_give_one_feature_vector_per_clip(shape):
    torch.manual_seed(0)
    x = torch.rand((2,) + shape)
    for name, options, dim in (("c3d-small", {}, 128), ("framepool-small", {}, 64),
                               ("c3d-small", {"widths": [4, 6, 10]}, 10),
                               ("framepool-small", {"widths": [5, 7]}, 7)):
        net = create_backbone(name, shape, **options).eval()
        assert net.kind == "clip" and net.out_dim == dim
        assert net(x).shape == (2, dim), (name, shape)


def test_auto_backbone_of_clips_is_c3d_small():
    assert isinstance(create_backbone("auto", (16, 1, 64, 64)), C3DSmall)


def test_c3d_small_resolution_by_hand():
    # 16x64x64: stem (stride 1 in time, 4 in space) -> 16x16x16; then each stage halves an
    # axis while it is at least 8 long: 8x8x8, 4x4x4, 4x4x4
    net = create_backbone("c3d-small", (16, 1, 64, 64)).eval()
    h = torch.rand(2, 16, 1, 64, 64).transpose(1, 2)
    sizes = []
    for layer in net.features:
        h = layer(h)
        if isinstance(layer, torch.nn.Conv3d):
            sizes.append((h.shape[1],) + tuple(h.shape[2:]))
    assert sizes == [(16, 16, 16, 16), (32, 8, 8, 8), (64, 4, 4, 4), (128, 4, 4, 4)]


def test_framepool_shrinks_frames_before_the_frame_backbone():
    net = create_backbone("framepool-small", (4, 1, 64, 64)).eval()
    assert net.frame_hw == (32, 32) and net.frame.input_shape == (1, 32, 32)
    # each 2x2 block averaged: a clip made of constant 2x2 blocks gives the features of its 32x32 version
    small = torch.rand(2, 4, 1, 32, 32)
    big = small.repeat_interleave(2, dim=3).repeat_interleave(2, dim=4)
    with torch.no_grad():
        torch.testing.assert_close(net(big), net.frame(small.reshape(8, 1, 32, 32)).reshape(2, 4, -1).mean(1))


# --------------------------------------------------------------------------- bad shapes
@pytest.mark.parametrize("name", ["c3d-small", "framepool-small"])
def test_non_clip_items_are_a_clear_error(name):
    with pytest.raises(Learn2HashError, match="clip"):
        create_backbone(name, (1, 64, 64))
    with pytest.raises(Learn2HashError, match="clip"):
        create_backbone(name, (512,))


@pytest.mark.parametrize("cls", [C3DSmall, FramePool])
def test_constructing_on_other_shapes_is_a_clear_error(cls):
    with pytest.raises(Learn2HashError, match=r"\[T, C, H, W\]"):
        cls((1, 64, 64))


@pytest.mark.parametrize("name", ["c3d-small", "framepool-small"])
def test_batch_of_the_wrong_clip_shape_is_a_clear_error(name):
    net = create_backbone(name, (8, 1, 16, 16))
    with pytest.raises(Learn2HashError, match=r"\(8, 1, 16, 16\)"):
        net(torch.rand(2, 4, 1, 16, 16))  # other number of frames
    with pytest.raises(Learn2HashError, match=r"\(8, 1, 16, 16\)"):
        net(torch.rand(2, 8, 3, 16, 16))  # other number of channels
    with pytest.raises(Learn2HashError, match=r"batch of clips \[n, T, C, H, W\]"):
        net(torch.rand(2, 1, 16, 16))  # a batch of images


@pytest.mark.parametrize("options, message", [
    ({"widths": []}, "width"), ({"stem_kernel": [3, 4, 4]}, "stem_kernel"), ({"stem_stride": 0}, "stem_stride"),
    ({"dropout": 1.5}, "dropout")])
def test_bad_c3d_options_are_clear_errors(options, message):
    with pytest.raises(Learn2HashError, match=message):
        create_backbone("c3d-small", (8, 1, 16, 16), **options)


def test_bad_framepool_options_are_clear_errors():
    with pytest.raises(Learn2HashError, match="'mlp' takes features items"):
        create_backbone("framepool-small", (8, 1, 16, 16), frame_backbone="mlp")
    with pytest.raises(Learn2HashError, match="frame_size"):
        create_backbone("framepool-small", (8, 1, 16, 16), frame_size=0)
    with pytest.raises(Learn2HashError, match="unknown backbone"):
        create_backbone("framepool-small", (8, 1, 16, 16), frame_backbone="nope")


# --------------------------------------------------------------------------- frame order
_POOL = create_backbone("framepool-small", (8, 1, 16, 16), **TINY_POOL).eval()


@settings(max_examples=25, deadline=None)
@given(perm=st.permutations(list(range(8))), seed=st.integers(0, 2**31 - 1))
def test_framepool_features_do_not_depend_on_frame_order(perm, seed):
    x = torch.rand((3, 8, 1, 16, 16), generator=torch.Generator().manual_seed(seed))
    with torch.no_grad():
        torch.testing.assert_close(_POOL(x[:, perm]), _POOL(x), rtol=1e-5, atol=1e-6)


def test_c3d_features_depend_on_frame_order():
    torch.manual_seed(0)
    net = create_backbone("c3d-small", (8, 1, 16, 16), **TINY_C3D).eval()
    x = torch.from_numpy(moving_squares(6)[0]).float() / 255
    with torch.no_grad():
        f, f_rev = net(x), net(x.flip(1))
    # reversing the frames changes every clip's features by far more than rounding could
    change = (f - f_rev).norm(dim=1) / f.norm(dim=1)
    assert (change > 1e-2).all(), change


# --------------------------------------------------------------------------- CSQ on clips
def test_tiny_csq_fit_encodes_clips_and_round_trips(tmp_path):
    x, y = moving_squares(12)
    h = create("csq", bits=12, backbone="c3d-small", backbone_options=TINY_C3D, epochs=1, batch_size=6,
               device="cpu", seed=1).fit(x, y)
    codes = h.encode(x)
    assert isinstance(codes, Codes) and codes.bits == 12 and len(codes) == 12 and codes.packed.shape == (12, 2)
    h.save(tmp_path / "h")
    assert Hasher.load(tmp_path / "h").encode(x) == codes
    with pytest.raises(Learn2HashError, match=r"\[n, 8, 1, 16, 16\]"):
        h.encode(x[:, :4])


def test_csq_with_c3d_tells_reversed_twins_apart_framepool_cannot():
    x, y = moving_squares(64, seed=0)
    test_x, test_y = moving_squares(32, seed=1)
    u = {}
    for name, options in (("c3d-small", TINY_C3D), ("framepool-small", TINY_POOL)):
        h = create("csq", bits=16, backbone=name, backbone_options=options, epochs=12, batch_size=16, lr=5e-3,
                   device="cpu", seed=0).fit(x, y)
        u[name] = (h.transform(test_x), h.transform(test_x[:, ::-1]))
    # framepool: a clip and its reversed twin get the same continuous code, whatever the training
    np.testing.assert_allclose(*u["framepool-small"], rtol=1e-4, atol=1e-5)
    # c3d: the code's signs tell the direction; the twin (the other class) lands on the other center
    bits, twin_bits = u["c3d-small"][0] > 0, u["c3d-small"][1] > 0
    same_class = (test_y[:, None] == test_y[None, :])
    d = (bits[:, None, :] != bits[None, :, :]).sum(-1)
    assert d[same_class].mean() + 4 < d[~same_class].mean()
    assert (bits != twin_bits).sum(1).mean() > 4


def test_cli_trains_encodes_indexes_and_searches_moving_fashion(tmp_path, monkeypatch, capsys):
    write_fake_fashion(tmp_path / "fm", n_train=40, n_test=20)
    monkeypatch.setenv("LEARN2HASH_DATA", str(tmp_path / "fm"))
    out = tmp_path / "run"
    assert main(["train", "--method", "csq", "--dataset", "moving-fashion", "--backbone", "c3d-small", "--bits", "64",
                 "--epochs", "1", "--batch-size", "8", "--param", 'backbone_options={"widths": [4, 8]}',
                 "--param", "device=cpu", "--data-param", "train_size=16", "--data-param", "query_size=6",
                 "--data-param", "database_size=20", "--out", str(out), "--no-progress"]) == 0
    assert "mAP@100" in capsys.readouterr().out
    run = Run.open(out)
    assert run.metrics()["topk"] == 100 and run.hasher().get_params()["backbone"] == "c3d-small"
    query = run.codes("query")
    assert query.bits == 64 and len(query) == 6
    assert main(["encode", "--run", str(out), "--split", "query", "--out", str(tmp_path / "q.npy")]) == 0
    assert Codes.load(tmp_path / "q.npy") == query
    assert main(["index", "build", "--run", str(out)]) == 0
    clip = np.asarray(run.dataset().query.x[2])
    np.save(tmp_path / "clip.npy", clip)
    capsys.readouterr()
    assert main(["search", "--run", str(out), "--query", str(tmp_path / "clip.npy"), "-k", "3"]) == 0
    printed = capsys.readouterr().out
    assert "3 nearest of 20 database items" in printed
