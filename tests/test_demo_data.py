"""Demo data: MovingShapes determinism and range, VideoFolder on a GIF written here."""

import numpy as np
import pytest
import torch

from vidnoise.demo import DemoError
from vidnoise.demo.data import MovingShapes, VideoFolder


def test_moving_shapes_deterministic_and_in_range():
    ds = MovingShapes(size=16, frames=4, seed=3)
    a, b = ds[5], MovingShapes(size=16, frames=4, seed=3)[5]
    assert a.shape == (3, 4, 16, 16) and a.dtype == torch.float32
    assert torch.equal(a, b)  # same (seed, index) -> same clip, in any instance
    assert a.min() >= -1 and a.max() <= 1
    assert not torch.equal(ds[5], ds[6])
    assert not torch.equal(ds[5], MovingShapes(size=16, frames=4, seed=4)[5])
    batch = ds.batch([5, 6])
    assert batch.shape == (2, 3, 4, 16, 16) and torch.equal(batch[0], a)


def test_moving_shapes_moves_and_uses_range():
    x = MovingShapes(size=32, frames=8, seed=0).batch(range(16))
    assert x.min() < -0.6 and x.max() > 0.6  # dark backgrounds, bright shapes
    motion = (x[:, :, 1:] - x[:, :, :-1]).abs().mean()
    assert motion > 0.005  # shapes move
    g = MovingShapes(size=16, frames=2, channels=1)[0]
    assert g.shape == (1, 2, 16, 16)
    c5 = MovingShapes(size=16, frames=2, channels=5)[0]
    assert c5.shape == (5, 2, 16, 16) and c5.abs().max() <= 1


def test_moving_shapes_bad_args():
    with pytest.raises(ValueError, match="size"):
        MovingShapes(size=4)
    with pytest.raises(TypeError, match="index"):
        MovingShapes(size=16)["a"]


def _write_gif(path, frames):
    import imageio.v3 as iio

    iio.imwrite(path, frames, duration=100, loop=0)


def test_video_folder_reads_gif(tmp_path):
    rng = np.random.default_rng(0)
    # 10 frames 24x40 (non-square: centre crop), a red square moving right on blue
    frames = np.zeros((10, 24, 40, 3), np.uint8)
    frames[..., 2] = 200
    for t in range(10):
        frames[t, 8:16, 8 + 2 * t : 16 + 2 * t] = (230, 20, 20)
    _write_gif(tmp_path / "a.gif", frames)
    _write_gif(tmp_path / "b.gif", rng.integers(0, 255, (3, 16, 16, 3), dtype=np.uint8))
    (tmp_path / "notes.txt").write_text("not a video")
    ds = VideoFolder(tmp_path, size=16, frames=4)
    assert len(ds) == 2  # a.gif gives 2 clips of 4; b.gif has only 3 frames (skipped)
    assert any("b.gif" in f for f, _ in ds.skipped)
    clip = ds[0]
    assert clip.shape == (3, 4, 16, 16) and clip.dtype == torch.float32
    assert clip.min() >= -1 and clip.max() <= 1
    # red where the square is, blue elsewhere; the square moves between frames
    assert clip[0].max() > 0.5 and clip[2].max() > 0.2
    assert not torch.equal(clip[:, 0], clip[:, 1])
    assert ds.batch([0, 1]).shape == (2, 3, 4, 16, 16)


def test_video_folder_errors(tmp_path):
    with pytest.raises(DemoError, match="does not exist"):
        VideoFolder(tmp_path / "nope", size=16, frames=4)
    with pytest.raises(DemoError, match="no readable video"):
        VideoFolder(tmp_path, size=16, frames=4)
    (tmp_path / "broken.gif").write_bytes(b"GIF89a this is not a gif")
    with pytest.raises(DemoError, match="no readable video.*skipped"):
        VideoFolder(tmp_path, size=16, frames=4)
