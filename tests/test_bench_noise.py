"""Smoke test of benchmarks/bench_noise.py (tiny shapes): it runs, prints its table, and the
reference per-block loop is slower than block_noise by a wide margin (a ratio, not a time)."""

import importlib.util
from pathlib import Path

import pytest

BENCH = Path(__file__).resolve().parents[1] / "benchmarks" / "bench_noise.py"


@pytest.fixture(scope="module")
def bench():
    spec = importlib.util.spec_from_file_location("bench_noise", BENCH)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_bench_noise_quick(bench, capsys):
    rows = bench.main(["--quick"])
    out = capsys.readouterr().out
    assert "vidnoise.block_noise" in out and "torch.randn (floor)" in out
    assert "noise_pyramid, 3 levels, bicubic" in out and rows[0]["pyramid_bicubic"] > 0
    row = rows[0]
    assert row["loop"] > 10 * row["block"]


def test_reference_rearrange_matches_block_layout(bench):
    import torch

    blocks = torch.arange(16.0).reshape(4, 4)  # 4 blocks of (p, q) = 2x2
    x = bench.rearrange_blocks(blocks, (1, 1, 1, 4, 4))
    assert x[0, 0, 0, :2, :2].flatten().tolist() == [0.0, 1.0, 2.0, 3.0]
    assert x[0, 0, 0, :2, 2:].flatten().tolist() == [4.0, 5.0, 6.0, 7.0]
