"""Data folders (what was skipped and why, .mp4 through the demo extra), --stages 1..4 end to
end, and the demo's report after a short run."""

import json

import numpy as np
import pytest
import torch

from vidnoise.cli import main
from vidnoise.demo import DemoError
from vidnoise.demo.config import TrainConfig, default_sample_ratios
from vidnoise.demo.data import VideoFolder


def _gif(path, frames=6, size=20):
    import imageio.v3 as iio

    rng = np.random.default_rng(0)
    iio.imwrite(path, rng.integers(0, 255, (frames, size, size, 3), dtype=np.uint8),
                extension=".gif")


def test_folder_says_what_it_skipped_and_why(tmp_path, capsys):
    _gif(tmp_path / "good.gif")
    (tmp_path / "empty.gif").write_bytes(b"")
    (tmp_path / "broken.gif").write_bytes(b"GIF89a not really")
    _gif(tmp_path / "short.gif", frames=2)
    ds = VideoFolder(tmp_path, size=16, frames=4)
    assert len(ds) == 1 and ds.files == 4
    reasons = dict(ds.skipped)
    assert set(reasons) == {"empty.gif", "broken.gif", "short.gif"}
    assert reasons["empty.gif"] == "empty file"
    assert "2 frame(s), fewer than 4" in reasons["short.gif"]
    line = ds.summary()
    assert line.startswith("data: 1 clips from 1 file(s)") and "skipped 3" in line
    assert "empty.gif (empty file)" in line
    # the command line prints it
    rc = main(["train", "--data", str(tmp_path), "--steps", "1", "--size", "16", "--frames",
               "4", "--batch-size", "4", "--width", "8", "--no-progress", "--out",
               str(tmp_path / "o"), "--threads", "1"])
    assert rc == 0
    assert "1 clips from 1 file(s)" in capsys.readouterr().err


def test_folder_of_broken_files_is_one_line_without_plugin_advice(tmp_path, capsys):
    (tmp_path / "empty.gif").write_bytes(b"")
    (tmp_path / "junk.gif").write_bytes(b"\x00" * 64)
    with pytest.raises(DemoError) as e:
        VideoFolder(tmp_path, size=16, frames=4)
    msg = str(e.value)
    assert "skipped 2" in msg and "empty.gif (empty file)" in msg and "junk.gif" in msg
    assert "plugin" not in msg and "pip install" not in msg
    rc = main(["train", "--data", str(tmp_path), "--steps", "1", "--no-progress", "--out",
               str(tmp_path / "o")])
    err = capsys.readouterr().err.strip()
    assert rc == 2 and len(err.splitlines()) == 1 and "no readable video" in err


def test_mp4_reads_with_the_demo_extra(tmp_path):
    pytest.importorskip("av", reason="PyAV (the demo extra's video backend) not installed")
    import imageio.v3 as iio

    t = np.arange(8)[:, None, None, None]
    frames = np.broadcast_to((t * 30 % 255), (8, 32, 32, 3)).astype(np.uint8)
    iio.imwrite(tmp_path / "clip.mp4", frames, plugin="pyav", codec="libx264", fps=8)
    ds = VideoFolder(tmp_path, size=16, frames=4)
    assert len(ds) == 2 and not ds.skipped
    # frame brightness follows what was written (lossy codec: within a few levels)
    means = (ds.clips.permute(0, 2, 1, 3, 4).reshape(8, -1).mean(1) + 1) * 127.5
    assert np.allclose(means.numpy(), (np.arange(8) * 30 % 255), atol=6)


@pytest.mark.parametrize("stages", [1, 2, 3, 4])
def test_defaults_follow_stages(stages):
    cfg = TrainConfig(stages=stages, steps=1)
    assert cfg.sample_ratios == default_sample_ratios(stages)
    assert len(cfg.sample_ratios) == stages and cfg.model.stages == stages
    assert default_sample_ratios(3) == (1, 2, 1)


@pytest.mark.parametrize("stages", [1, 2, 4])
def test_stages_train_and_sample_end_to_end(tmp_path, capsys, stages):
    out = tmp_path / "run"
    base = ["--size", "32", "--frames", "2", "--width", "8", "--no-progress", "--threads", "1"]
    assert main(["train", "--stages", str(stages), "--steps", "1", "--out", str(out),
                 *base]) == 0, capsys.readouterr().err
    s = json.loads((out / "checkpoint" / "state.json").read_text())["config"]
    assert s["stages"] == stages and len(s["sample_ratios"]) == stages
    assert s["batch_size"] % sum(s["sample_ratios"]) == 0
    assert main(["sample", "--checkpoint", str(out / "checkpoint"), "--n", "2", "--steps", "1",
                 "--out", str(tmp_path / "s"), "--no-progress"]) == 0
    assert (tmp_path / "s" / "samples.gif").stat().st_size > 0


@pytest.mark.slow
@pytest.mark.parametrize("stages", [1, 2, 4])
def test_stages_demo_end_to_end(tmp_path, stages):
    out = tmp_path / "demo"
    assert main(["demo", "--stages", str(stages), "--out", str(out), "--minutes", "2",
                 "--steps", "2", "--size", "32", "--frames", "2", "--width", "8",
                 "--sample-steps", "1", "--samples", "4", "--no-progress"]) == 0
    m = json.loads((out / "metrics.json").read_text())
    assert m["config"]["stages"] == stages
    share = sum(4.0 ** -(stages - 1 - k) for k in range(stages)) / stages
    assert abs(m["sampling"]["token_share_expected"] - share) < 1e-12


def test_report_reads_right_after_a_short_run(tmp_path):
    from vidnoise.demo.run import _loss_sentence, _time_reading

    m = {"training": {"steps": 5}, "loss_window": 2, "loss_first": 0.5, "loss_last": 0.4}
    text = _loss_sentence(m)
    assert "first 2 steps" in text and "last 2" in text and "warm-up" in text
    assert "50 steps" not in text and "last 50" not in text
    assert "too short" in _loss_sentence({"training": {"steps": 1}, "loss_last": 0.3})
    fast = _time_reading({"ratio_pyramid_over_flat": 0.031, "token_share_expected": 0.4375})
    assert "0.031 of the flat sampler's time" in fast and "32.3x faster" in fast
    assert "below it" in fast and "fixed per-call" not in fast
    slow = _time_reading({"ratio_pyramid_over_flat": 0.6, "token_share_expected": 0.4375})
    assert "above it" in slow and "fixed per-call" in slow


def test_demo_minutes_bounds_sampling_too(tmp_path, capsys):
    """A tiny budget lowers the number of quality samples instead of running over."""
    out = tmp_path / "demo"
    rc = main(["demo", "--out", str(out), "--minutes", "0.02", "--size", "16", "--frames",
               "2", "--width", "8", "--sample-steps", "1", "--samples", "64",
               "--no-progress", "--threads", "1"])
    err = capsys.readouterr().err
    assert rc == 0, err
    m = json.loads((out / "metrics.json").read_text())
    assert m["eval_samples"] < 64 and "do not fit" in err
    assert m["training"]["steps"] >= 1
    assert torch.isfinite(torch.tensor(m["quality"]["trained, pyramid sampler"]["fd"]))
