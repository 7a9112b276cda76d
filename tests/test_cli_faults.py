"""The command line never loses work and never shows a traceback: recovery after killed
saves, divergence, signals, a bad or busy output folder, resume flags, stale folders,
permissions, and one-line errors for odd inputs."""

import errno
import json
import os
import signal
import stat
import subprocess
import sys
import time

import pytest
import torch

from vidnoise.cli import main
from vidnoise.demo import DemoError
from vidnoise.demo.checkpoint import (
    find_checkpoint,
    load_checkpoint,
    lock_folder,
    save_checkpoint,
)
from vidnoise.demo.config import TrainConfig
from vidnoise.demo.model import ModelConfig
from vidnoise.demo.train import NonFiniteLoss, Trainer, train

TINY = ["--size", "16", "--frames", "4", "--batch-size", "4", "--width", "8", "--no-progress"]
MICRO = ModelConfig(width=4, mults=(1,), emb_dim=8, groups=2, stages=1, attention=False)


def micro(**kw):
    base = dict(size=8, frames=2, batch_size=2, stages=1, steps=2, minutes=None, warmup=1,
                model=MICRO)
    base.update(kw)
    return TrainConfig(**base)


def quiet(cfg, out, **kw):
    return train(cfg, out, progress=False, log=lambda m: None, signals=False, **kw)


def one_error_line(capsys, argv, match):
    rc = main(argv)
    err = capsys.readouterr().err.strip()
    assert rc == 2, err
    assert len(err.splitlines()) == 1, err
    assert err.startswith("vidnoise: error:") and "Traceback" not in err
    assert match in err, err
    return err


def subprocess_cli(args, **kw):
    return subprocess.run([sys.executable, "-m", "vidnoise", *args], capture_output=True,
                          text=True, timeout=300, **kw)


# ----------------------------------------------------------------------------- recovery
def test_two_kills_in_a_row_keep_the_newest_checkpoint(tmp_path, monkeypatch):
    """A save killed between its renames leaves `.old` (step 1) and a complete tmp folder
    (step 2); the next save must not delete `.old` before a checkpoint has the name."""
    path = tmp_path / "checkpoint"
    save_checkpoint(path, {"w": torch.ones(2)}, {"step": 1})
    save_checkpoint(tmp_path / "second", {"w": torch.full((2,), 2.0)}, {"step": 2})
    path.rename(tmp_path / "checkpoint.old")
    (tmp_path / "second").rename(tmp_path / ".checkpoint.tmp-killed")
    assert load_checkpoint(path)[1]["step"] == 2  # the newest complete one, read in place
    assert find_checkpoint(path).name == ".checkpoint.tmp-killed"
    real = os.rename

    def die_on_final_rename(src, dst):  # the second kill, at the last rename of a save
        if str(dst) == str(path) and ".checkpoint.tmp-" in str(src) and "killed" not in str(
                src):
            raise KeyboardInterrupt
        return real(src, dst)

    monkeypatch.setattr(os, "rename", die_on_final_rename)
    with pytest.raises(KeyboardInterrupt):
        save_checkpoint(path, {"w": torch.full((2,), 3.0)}, {"step": 3})
    monkeypatch.undo()
    tensors, state = load_checkpoint(path)  # step 2 (recovered) or 3 (complete), never gone
    assert state["step"] >= 2 and torch.equal(tensors["w"], torch.full((2,), state["step"] * 1.))
    save_checkpoint(path, {"w": torch.full((2,), 4.0)}, {"step": 4})
    assert load_checkpoint(path)[1]["step"] == 4
    assert sorted(p.name for p in tmp_path.iterdir()) == ["checkpoint"]  # stale ones cleaned


def test_stale_tmp_folders_cleaned_and_permissions_readable(tmp_path):
    path = tmp_path / "checkpoint"
    for i in range(3):  # left by killed saves
        (tmp_path / f".checkpoint.tmp-{i}").mkdir()
        (tmp_path / f".checkpoint.tmp-{i}" / "weights.safetensors").write_bytes(b"x" * 10)
    old = os.umask(0o077)
    try:
        save_checkpoint(path, {"w": torch.ones(2)}, {"step": 1})
    finally:
        os.umask(old)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["checkpoint"]
    assert stat.S_IMODE(path.stat().st_mode) == 0o755
    for f in path.iterdir():
        assert stat.S_IMODE(f.stat().st_mode) == 0o644, f


def test_disk_full_during_save_is_one_line(tmp_path, capsys, monkeypatch):
    import safetensors.torch

    out = tmp_path / "run"
    assert main(["train", "--steps", "1", "--out", str(out), *TINY]) == 0
    capsys.readouterr()

    def full(*a, **k):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(safetensors.torch, "save_file", full)
    rc = main(["train", "--resume", str(out / "checkpoint"), "--steps", "2", "--out", str(out),
               "--no-progress"])
    err = capsys.readouterr().err.strip().splitlines()
    assert rc == 2 and "Traceback" not in "\n".join(err)
    assert err[-1].startswith("vidnoise: error: cannot save") and "disk is full" in err[-1]
    assert sum(line.startswith("vidnoise: error") for line in err) == 1
    monkeypatch.undo()
    assert load_checkpoint(out / "checkpoint")[1]["step"] == 1  # the old one survives
    assert sorted(p.name for p in out.iterdir()) == [".lock", "checkpoint"]


# ----------------------------------------------------------------------------- divergence
def test_nonfinite_loss_skips_then_stops_and_never_saves_nan(tmp_path, monkeypatch):
    good = quiet(micro(steps=2), tmp_path)
    before = load_checkpoint(tmp_path / "checkpoint")[0]
    t = Trainer.from_checkpoint(tmp_path / "checkpoint", overrides={"steps": 10})
    weights = {k: v.clone() for k, v in t.model.state_dict().items()}

    def nan_loss(batches, total, cond=None):
        return next(t.model.parameters()).sum() * float("nan")

    monkeypatch.setattr(t.loss_module, "forward", nan_loss)
    for _ in range(t.cfg.max_bad_steps):  # skipped: no update, not counted
        t.step()
    assert t.step_count == good["steps"] == 2 and t.skipped == t.cfg.max_bad_steps
    for k, v in t.model.state_dict().items():
        assert torch.equal(v, weights[k]), k
    with pytest.raises(NonFiniteLoss, match="not finite"):
        t.step()
    with torch.no_grad():
        next(t.model.parameters()).fill_(float("nan"))
    with pytest.raises(NonFiniteLoss, match="non-finite"):
        t.save(tmp_path / "checkpoint")
    after = load_checkpoint(tmp_path / "checkpoint")[0]
    assert all(torch.equal(before[k], after[k]) for k in before)


def test_divergent_lr_exits_nonzero_with_one_line(tmp_path, capsys):
    out = tmp_path / "run"
    err = one_error_line(capsys, ["train", "--steps", "40", "--lr", "90", "--out", str(out),
                                  "--checkpoint-every", "1", "--size", "16", "--frames", "2",
                                  "--batch-size", "4", "--width", "8", "--no-progress",
                                  "--threads", "1"], "")
    assert "not finite" in err or "non-finite" in err, err
    found = find_checkpoint(out / "checkpoint")
    if found is not None:  # whatever was saved is finite
        tensors, _ = load_checkpoint(found)
        assert all(torch.isfinite(v).all() for v in tensors.values() if v.is_floating_point())


# ----------------------------------------------------------------------------- signals
@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT])
def test_signal_saves_a_checkpoint_before_exiting(tmp_path, sig):
    out = tmp_path / "run"
    p = subprocess.Popen(
        [sys.executable, "-m", "vidnoise", "train", "--minutes", "10", "--out", str(out),
         "--checkpoint-every", "1", "--threads", "1", *TINY],
        stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 240
    while find_checkpoint(out / "checkpoint") is None:  # training is running
        assert p.poll() is None and time.monotonic() < deadline, p.stderr.read()
        time.sleep(0.2)
    p.send_signal(sig)
    err = p.communicate(timeout=240)[1]
    assert p.returncode == 128 + sig, err
    assert "Traceback" not in err and f"stopped by {signal.Signals(sig).name}" in err
    tensors, state = load_checkpoint(out / "checkpoint")
    assert state["step"] >= 1 and state["config"]["minutes"] == 10


# ----------------------------------------------------------------------------- output folder
def test_bad_out_is_found_before_training(tmp_path, capsys):
    f = tmp_path / "file"
    f.write_text("x")
    # a budget that would take hours: the error must come before any training
    one_error_line(capsys, ["train", "--steps", "100000", "--out", str(f), *TINY],
                   "existing file")
    one_error_line(capsys, ["train", "--steps", "100000", "--out", str(f / "sub"), *TINY],
                   "not writable")
    one_error_line(capsys, ["sample", "--checkpoint", str(tmp_path / "nope"), "--out",
                            str(f)], "existing file")


def test_second_run_on_one_folder_refuses(tmp_path):
    out = tmp_path / "run"
    with lock_folder(out):  # this process trains on `out`; another one starts
        p = subprocess_cli(["train", "--steps", "1", "--out", str(out), *TINY])
    assert p.returncode == 2, p.stderr
    assert p.stderr.strip().count("\n") == 0 and "Traceback" not in p.stderr
    assert "in use by another vidnoise run" in p.stderr and str(out) in p.stderr
    assert not (out / "checkpoint").exists()


# ----------------------------------------------------------------------------- resume flags
def test_resume_refuses_config_flags_and_applies_budget_flags(tmp_path, capsys):
    out = tmp_path / "run"
    assert main(["train", "--steps", "1", "--out", str(out), *TINY]) == 0
    capsys.readouterr()
    ck = str(out / "checkpoint")
    for flag in (["--size", "32"], ["--lr", "0.1"], ["--stages", "2"], ["--width", "16"],
                 ["--data", str(tmp_path)], ["--flat"]):
        err = one_error_line(capsys, ["train", "--resume", ck, "--steps", "2", "--out",
                                      str(out), *flag], flag[0])
        assert "cannot change" in err
    capsys.readouterr()
    assert main(["train", "--resume", ck, "--steps", "3", "--checkpoint-every", "1",
                 "--out", str(out), "--no-progress"]) == 0
    err = capsys.readouterr().err
    assert "applying steps 3, checkpoint every 1 steps" in err
    assert load_checkpoint(ck)[1]["step"] == 3
    with pytest.raises(DemoError, match="only steps, minutes"):
        quiet(None, out, resume=ck, overrides={"steps": 4, "lr": 1.0})


# ----------------------------------------------------------------------------- one line
def test_one_line_errors_for_odd_numbers(tmp_path, capsys):
    out = str(tmp_path / "o")
    one_error_line(capsys, ["train", "--steps", "1", "--seed", str(2**63), "--out", out,
                            *TINY], "--seed must be >= 0 and <= 9223372036854775807")
    one_error_line(capsys, ["train", "--steps", "1", "--lr", "1e308", "--out", out, *TINY],
                   "lr 1e+308 is too large")
    one_error_line(capsys, ["train", "--steps", "1", "--frames", "1", "--width", "4",
                            "--size", "16", "--batch-size", "4", "--out", out,
                            "--no-progress"], "cannot run on 1 frame(s)")
    one_error_line(capsys, ["train", "--steps", "1", "--size", "65536", "--out", out,
                            "--no-progress"], "GiB")
    # the largest seed works (seeds are reduced modulo 2^64 for the generators)
    assert main(["train", "--steps", "1", "--seed", str(2**63 - 1), "--out", out, *TINY]) == 0
    assert main(["sample", "--checkpoint", out + "/checkpoint", "--n", "1", "--steps", "1",
                 "--seed", str(2**63 - 1), "--out", out + "/s", "--no-progress"]) == 0


@pytest.fixture(scope="module")
def checkpoints(tmp_path_factory):
    root = tmp_path_factory.mktemp("ck")
    quiet(micro(size=16, stages=3, batch_size=4, model=ModelConfig(
        width=4, mults=(1,), emb_dim=8, groups=2, stages=3, attention=False)), root / "pyr")
    quiet(micro(flat=True), root / "flat")
    return root


def _copy(src, dst):
    import shutil

    shutil.copytree(src, dst)
    return dst


def test_sample_refuses_mismatched_and_broken_checkpoints(checkpoints, tmp_path, capsys):
    pyr, flat = checkpoints / "pyr" / "checkpoint", checkpoints / "flat" / "checkpoint"
    one_error_line(capsys, ["sample", "--checkpoint", str(pyr), "--flat", "--out",
                            str(tmp_path / "a")], "sample it without --flat")
    one_error_line(capsys, ["sample", "--checkpoint", str(flat), "--out",
                            str(tmp_path / "a")], "sample it with --flat")
    # non-finite weights
    bad = _copy(pyr, tmp_path / "nan")
    from safetensors.torch import load_file, save_file

    t = load_file(str(bad / "weights.safetensors"))
    k = next(k for k in t if k.startswith("ema."))
    t[k] = torch.full_like(t[k], float("nan"))
    save_file(t, str(bad / "weights.safetensors"))
    one_error_line(capsys, ["sample", "--checkpoint", str(bad), "--out", str(tmp_path / "b")],
                   "non-finite weights")
    assert not (tmp_path / "b" / "samples.gif").exists()
    # a missing optimizer tensor: found at load, not at the first step
    miss = _copy(pyr, tmp_path / "miss")
    t = load_file(str(miss / "weights.safetensors"))
    del t[next(k for k in t if k.startswith("optim."))]
    save_file(t, str(miss / "weights.safetensors"))
    one_error_line(capsys, ["train", "--resume", str(miss), "--steps", "9", "--out",
                            str(tmp_path / "m"), "--no-progress"], "optimizer tensor")


@pytest.mark.parametrize("change,match", [
    ({"size": 18}, "multiple of"), ({"lr": -1}, "lr"), ({"batch_size": 0}, "batch_size"),
    ({"model": {"groups": 0}}, "groups"), ({"stages": "three"}, "stages"),
])
def test_invalid_config_in_state_json_is_one_line(checkpoints, tmp_path, capsys, change,
                                                   match):
    ck = _copy(checkpoints / "pyr" / "checkpoint", tmp_path / "ck")
    state = json.loads((ck / "state.json").read_text())
    for key, value in change.items():
        if isinstance(value, dict):
            state["config"][key].update(value)
        else:
            state["config"][key] = value
    (ck / "state.json").write_text(json.dumps(state))
    one_error_line(capsys, ["sample", "--checkpoint", str(ck), "--out", str(tmp_path / "s")],
                   match)
    one_error_line(capsys, ["train", "--resume", str(ck), "--steps", "9", "--out",
                            str(tmp_path / "r"), "--no-progress"], match)


def test_demo_api_rejects_out_of_range_arguments():
    from vidnoise.demo.data import MovingShapes
    from vidnoise.demo.metrics import colour_histogram_distance, features
    from vidnoise.demo.model import TinyVideoUNet

    m = TinyVideoUNet(MICRO)
    x = torch.zeros(2, 3, 2, 8, 8)
    with pytest.raises(ValueError, match="stage must be >= 0 and <= 0, got 1"):
        m(x, 500.0, 1)
    with pytest.raises(ValueError, match=r"timestep must be .*\(2,\) tensor"):
        m(x, torch.zeros(3), 0)
    with pytest.raises(ValueError, match="groups must be >= 1"):
        TinyVideoUNet(ModelConfig(groups=0))
    with pytest.raises(ValueError, match="bins must be >= 1"):
        colour_histogram_distance(x, x, bins=0)
    with pytest.raises(ValueError, match="radius"):
        MovingShapes(size=16, radius=(4.0, 20.0))
    with pytest.raises(ValueError, match="channels"):
        features(torch.zeros(2, 1, 2, 8, 8), None if False else __import__(
            "vidnoise.demo.metrics", fromlist=["x"]).RandomVideoEncoder(3))


def test_main_sets_a_passive_wait_policy_and_threads(tmp_path, capsys):
    assert os.environ.get("OMP_WAIT_POLICY") or True  # may be set by the environment
    n = torch.get_num_threads()
    try:
        assert main(["train", "--steps", "1", "--threads", "1", "--out", str(tmp_path),
                     *TINY]) == 0
        assert torch.get_num_threads() == 1
    finally:
        torch.set_num_threads(n)
    assert "OMP_WAIT_POLICY" in os.environ or "GOMP_SPINCOUNT" in os.environ
    p = subprocess_cli(["train", "--help"])
    assert p.returncode == 0 and "(default: 0)" in p.stdout and "--threads" in p.stdout


def test_every_flag_has_help_with_its_default():
    import argparse

    from vidnoise.cli import _Formatter, build_parser

    parser = build_parser()
    sub = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
    for name, p in sub.choices.items():
        fmt = _Formatter(prog=name)
        for action in p._actions:
            if isinstance(action, argparse._HelpAction):
                continue
            text = fmt._get_help_string(action)
            assert text, (name, action.dest)
            if action.default is not None and action.default is not False:
                assert "default" in text, (name, action.dest, text)


def test_thread_env_follows_the_load(monkeypatch):
    """Busy machine: passive waiting; idle: a brief spin; the user's settings win."""
    from vidnoise import cli

    monkeypatch.delenv("OMP_WAIT_POLICY", raising=False)
    monkeypatch.delenv("GOMP_SPINCOUNT", raising=False)
    monkeypatch.setattr(cli, "available_cores", lambda: 2)
    monkeypatch.setattr(os, "getloadavg", lambda: (1.6, 1.0, 1.0))
    assert cli.thread_env() == {"OMP_WAIT_POLICY": "PASSIVE"}
    monkeypatch.setattr(os, "getloadavg", lambda: (0.3, 1.0, 1.0))
    assert cli.thread_env() == {"GOMP_SPINCOUNT": "2000"}
    monkeypatch.setenv("OMP_WAIT_POLICY", "ACTIVE")
    assert cli.thread_env() == {}
