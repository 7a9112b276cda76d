"""The command line: train / sample end to end, and one clear error line for bad input."""

import os
import subprocess
import sys

import torch

from vidnoise.cli import main

TINY = ["--size", "16", "--frames", "4", "--batch-size", "4", "--width", "8", "--no-progress"]


def one_error_line(capsys, argv, match):
    rc = main(argv)
    err = capsys.readouterr().err.strip()
    assert rc != 0, err
    assert len(err.splitlines()) == 1, err
    assert err.startswith("vidnoise: error:") and "Traceback" not in err
    assert match in err, err
    return err


def test_train_then_sample(tmp_path, capsys):
    out = tmp_path / "run"
    assert main(["train", "--steps", "2", "--out", str(out), *TINY]) == 0
    assert (out / "checkpoint" / "weights.safetensors").is_file()
    assert main(["train", "--resume", str(out / "checkpoint"), "--steps", "3", "--out",
                 str(out), "--no-progress"]) == 0
    s = tmp_path / "s"
    assert main(["sample", "--checkpoint", str(out / "checkpoint"), "--n", "2", "--steps",
                 "2", "--out", str(s), "--no-progress"]) == 0
    assert (s / "samples.gif").stat().st_size > 0 and (s / "frames.png").stat().st_size > 0
    capsys.readouterr()


def test_bad_inputs_one_line_each(tmp_path, capsys):
    one_error_line(capsys, ["sample", "--checkpoint", str(tmp_path / "missing")],
                   "does not exist")
    bad = tmp_path / "bad"
    bad.mkdir()
    (bad / "weights.safetensors").write_bytes(b"garbage")
    (bad / "state.json").write_text("{")
    one_error_line(capsys, ["sample", "--checkpoint", str(bad)], "corrupt")
    one_error_line(capsys, ["train", "--resume", str(bad), "--steps", "2"], "corrupt")
    empty = tmp_path / "empty"
    empty.mkdir()
    one_error_line(capsys, ["train", "--data", str(empty), "--steps", "1", *TINY],
                   "no readable video")
    one_error_line(capsys, ["train", "--data", str(tmp_path / "nope"), "--steps", "1"],
                   "does not exist")
    one_error_line(capsys, ["train", "--steps", "1", "--size", "20", "--no-progress"],
                   "cannot be halved")
    one_error_line(capsys, ["demo", "--size", "36"], "cannot be halved")
    one_error_line(capsys, ["demo", "--minutes", "0"], "--minutes must be > 0")
    one_error_line(capsys, ["demo", "--minutes", "-1"], "--minutes must be > 0")
    one_error_line(capsys, ["train", "--minutes", "0"], "--minutes must be > 0")
    one_error_line(capsys, ["train", "--steps", "1", "--batch-size", "6", *TINY[:4]],
                   "multiple of sum")
    one_error_line(capsys, ["train"], "--steps or --minutes")
    one_error_line(capsys, ["bogus"], "invalid choice")
    one_error_line(capsys, ["sample"], "required")


def test_no_command_prints_help(capsys):
    assert main([]) == 2
    assert "demo" in capsys.readouterr().err


def test_subprocess_error_has_no_traceback(tmp_path):
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(sys.path))
    p = subprocess.run(
        [sys.executable, "-m", "vidnoise", "sample", "--checkpoint", str(tmp_path / "x")],
        capture_output=True, text=True, env=env, timeout=120,
    )
    assert p.returncode == 2
    assert p.stderr.strip().count("\n") == 0 and "Traceback" not in p.stderr
    assert "does not exist" in p.stderr


def test_import_vidnoise_stays_light():
    # the optional packages the demo imports inside its functions; tqdm only where torch
    # itself does not import it (torch.hub imports tqdm when it is installed)
    code = (
        "import sys, torch; pre = set(sys.modules); "
        "import vidnoise, vidnoise.cli, vidnoise.demo; "
        "bad = [m for m in ('imageio', 'safetensors', 'tqdm', 'PIL', 'av') "
        "if m in sys.modules and m not in pre]; "
        "print(bad)"
    )
    p = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                       timeout=120)
    assert p.stdout.strip() == "[]", p.stdout + p.stderr
    assert torch is not None


def test_image_to_video(tmp_path, capsys):
    from PIL import Image

    out = tmp_path / "i2v"
    assert main(["train", "--i2v", "--steps", "1", "--out", str(out), *TINY]) == 0
    img = tmp_path / "first.png"
    Image.new("RGB", (20, 24), (200, 30, 30)).save(img)
    s = tmp_path / "s"
    assert main(["sample", "--checkpoint", str(out / "checkpoint"), "--image", str(img),
                 "--n", "2", "--steps", "1", "--out", str(s), "--no-progress"]) == 0
    assert (s / "samples.gif").is_file()
    capsys.readouterr()
    one_error_line(capsys, ["sample", "--checkpoint", str(out / "checkpoint"), "--image",
                            str(tmp_path / "none.png")], "does not exist")
    plain = tmp_path / "plain"
    assert main(["train", "--steps", "1", "--out", str(plain), *TINY]) == 0
    capsys.readouterr()
    one_error_line(capsys, ["sample", "--checkpoint", str(plain / "checkpoint"), "--image",
                            str(img)], "--i2v")
