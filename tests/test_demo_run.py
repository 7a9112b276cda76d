"""`vidnoise demo` end to end at a tiny size: every output file and figure is there."""

import json

from vidnoise.cli import main


def test_demo_end_to_end_tiny(tmp_path, capsys):
    out = tmp_path / "demo"
    rc = main(["demo", "--out", str(out), "--minutes", "10", "--steps", "2", "--size", "16",
               "--frames", "4", "--batch-size", "4", "--sample-steps", "1", "--samples", "4",
               "--no-progress"])
    assert rc == 0, capsys.readouterr().err
    for name in ("samples.gif", "frames.png", "metrics.json", "report.md"):
        assert (out / name).stat().st_size > 0, name
    m = json.loads((out / "metrics.json").read_text())
    assert m["training"]["steps"] == 2
    s = m["sampling"]
    assert s["pyramid_s"] > 0 and s["flat_s"] > 0 and abs(s["token_share_expected"] - 0.4375) < 1e-9
    assert set(m["quality"]) == {
        "real (held-out clips)",
        "trained, pyramid sampler",
        "untrained model",
        "ablation: renoise without block correlation (γ = 0)",
        "ablation: noise pyramid with constant x2 on bicubic",
    }
    for q in m["quality"].values():
        assert q["fd"] >= 0 and 0 <= q["colour_tv"] <= 1
    report = (out / "report.md").read_text()
    assert "ratio pyramid / flat" in report and "Fréchet distance" in report
    assert (out / "checkpoint" / "state.json").is_file()
