"""Demo training: bit-for-bit resume, atomic checkpoints, flat baseline, sampling outputs."""

import json

import pytest
import torch

from vidnoise.demo import DemoError
from vidnoise.demo.checkpoint import load_checkpoint, save_checkpoint
from vidnoise.demo.model import ModelConfig
from vidnoise.demo.train import TrainConfig, load_model, train

TINY_MODEL = ModelConfig(width=8, mults=(1, 2), emb_dim=32, groups=4, stages=3)


def tiny(**kw):
    base = dict(size=16, frames=4, batch_size=4, steps=4, minutes=None, model=TINY_MODEL,
                warmup=2)
    base.update(kw)
    return TrainConfig(**base)


def run(cfg=None, out=None, **kw):
    return train(cfg, out, progress=False, log=lambda m: None, **kw)


def test_resume_two_plus_two_equals_four_bit_for_bit(tmp_path):
    a = run(tiny(steps=2), tmp_path / "a")
    assert a["steps"] == 2
    b = run(None, tmp_path / "b", resume=tmp_path / "a" / "checkpoint", overrides={"steps": 4})
    c = run(tiny(steps=4), tmp_path / "c")
    assert b["steps"] == c["steps"] == 4
    assert b["losses"] == c["losses"][2:]  # the same steps 3 and 4
    tb, sb = load_checkpoint(tmp_path / "b" / "checkpoint")
    tc, sc = load_checkpoint(tmp_path / "c" / "checkpoint")
    assert sorted(tb) == sorted(tc)
    assert any(k.startswith("optim.") for k in tb) and any(k.startswith("ema.") for k in tb)
    for k in tb:
        assert torch.equal(tb[k], tc[k]), k
    assert sb["rng"] == sc["rng"] and sb["step"] == sc["step"] == 4


def test_flat_baseline_trains_and_samples(tmp_path):
    from vidnoise.demo.sample import sample_videos

    cfg = tiny(flat=True, steps=3, model=ModelConfig(width=8, mults=(1, 2), emb_dim=32,
                                                     groups=4, stages=1))
    r = run(cfg, tmp_path)
    assert len(r["losses"]) == 3 and all(l == l for l in r["losses"])
    model, cfg2, state = load_model(tmp_path / "checkpoint")
    assert cfg2.flat and state["step"] == 3
    x = sample_videos(model, cfg2, 2, steps=2)
    assert x.shape == (2, 3, 4, 16, 16) and torch.isfinite(x).all()
    with pytest.raises(DemoError, match="flat"):
        sample_videos(model, cfg2, 2, steps=2, flat=False)


def test_pyramid_samples_ablations_and_images(tmp_path):
    from vidnoise.demo.sample import sample_videos, save_frames_png, save_gif

    run(tiny(steps=1), tmp_path)
    model, cfg, _ = load_model(tmp_path / "checkpoint")
    x = sample_videos(model, cfg, 3, steps=2, seed=1, batch=2)
    assert x.shape == (3, 3, 4, 16, 16)
    # one generator per sample: the batch size does not change the samples (up to the
    # rounding of batched convolutions)
    y = sample_videos(model, cfg, 3, steps=2, seed=1, batch=3)
    assert torch.allclose(x, y, atol=1e-5)
    for ab in ("iid-renoise", "x2-bicubic"):
        y = sample_videos(model, cfg, 2, steps=2, seed=1, ablation=ab)
        assert y.shape == (2, 3, 4, 16, 16) and not torch.equal(y, x[:2])
    flat = sample_videos(model, cfg, 2, steps=2, flat=True)
    assert flat.shape == (2, 3, 4, 16, 16)
    gif = save_gif(x, tmp_path / "s.gif")
    png = save_frames_png(x, tmp_path / "f.png", labels=["a", "b", "c"])
    assert gif.stat().st_size > 0 and png.stat().st_size > 0
    import imageio.v3 as iio

    assert iio.imread(gif, index=None).shape[0] == 4  # one GIF frame per video frame


def test_wrong_x2_pyramid_has_the_wrong_variance():
    from vidnoise.demo.sample import wrong_x2_pyramid_noise
    from vidnoise.noise import noise_pyramid

    g = torch.Generator().manual_seed(0)
    n = wrong_x2_pyramid_noise((64, 1, 2, 32, 32), 3, generator=g)
    coarse = noise_pyramid(n, 3)[0]  # what sample_pyramid starts from
    assert 2.6 < coarse.var().item() < 3.8  # bicubic x2 twice: about 3.1 at 32 -> 8, not 1


def test_failed_save_never_overwrites_a_checkpoint(tmp_path, monkeypatch):
    import safetensors.torch

    path = tmp_path / "ckpt"
    save_checkpoint(path, {"w": torch.ones(3)}, {"step": 1})

    def broken(*a, **k):
        raise OSError("disk full")

    monkeypatch.setattr(safetensors.torch, "save_file", broken)
    with pytest.raises(DemoError, match="cannot save checkpoint.*disk full"):
        save_checkpoint(path, {"w": torch.zeros(3)}, {"step": 2})
    monkeypatch.undo()
    with pytest.raises(TypeError):  # a state that JSON cannot write fails after the weights
        save_checkpoint(path, {"w": torch.zeros(3)}, {"step": object()})
    tensors, state = load_checkpoint(path)
    assert torch.equal(tensors["w"], torch.ones(3)) and state["step"] == 1
    assert sorted(p.name for p in tmp_path.iterdir()) == ["ckpt"]  # no temp folders left
    save_checkpoint(path, {"w": torch.zeros(3)}, {"step": 2})  # a good save replaces it
    assert load_checkpoint(path)[1]["step"] == 2


def test_crash_between_renames_recovers_previous(tmp_path):
    path = tmp_path / "ckpt"
    save_checkpoint(path, {"w": torch.ones(2)}, {"step": 7})
    path.rename(tmp_path / "ckpt.old")  # as if a save died after moving the old one aside
    assert load_checkpoint(path)[1]["step"] == 7


def test_corrupt_checkpoints_raise_one_clear_error(tmp_path):
    path = tmp_path / "ckpt"
    with pytest.raises(DemoError, match="does not exist"):
        load_checkpoint(path)
    save_checkpoint(path, {"w": torch.ones(2)}, {"step": 1})
    (path / "weights.safetensors").write_bytes(b"\x00garbage")
    with pytest.raises(DemoError, match="corrupt"):
        load_checkpoint(path)
    (path / "state.json").write_text("{not json")
    with pytest.raises(DemoError, match="corrupt"):
        load_checkpoint(path)
    (path / "state.json").write_text(json.dumps({"format": "other"}))
    with pytest.raises(DemoError, match="not a vidnoise"):
        load_checkpoint(path)


def test_config_errors():
    with pytest.raises(DemoError, match="multiple of 8"):
        tiny(size=20).check()
    with pytest.raises(DemoError, match="minutes"):
        tiny(minutes=0.0).check()
    with pytest.raises(DemoError, match="multiple of sum"):
        tiny(batch_size=6).check()
    with pytest.raises(DemoError, match="steps"):
        tiny(steps=None, minutes=None).check()


@pytest.mark.slow
def test_short_training_learns(tmp_path):
    cfg = tiny(steps=150, batch_size=8, model=ModelConfig(width=16, mults=(1, 2), emb_dim=64,
                                                           groups=8, stages=3))
    losses = run(cfg, tmp_path)["losses"]
    first, last = sum(losses[:10]) / 10, sum(losses[-30:]) / 30
    assert last < 0.6 * first, (first, last)
