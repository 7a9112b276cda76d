"""Distributed training: 2 CPU processes under torchrun (gloo) keep identical replicas."""

import json
import os
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

SCRIPT = textwrap.dedent(
    """
    import hashlib, json, os, sys
    import torch
    from vidnoise.demo.model import ModelConfig
    from vidnoise.demo.train import TrainConfig, train

    out = sys.argv[1]
    cfg = TrainConfig(size=16, frames=4, batch_size=4, steps=3, minutes=None, warmup=1,
                      model=ModelConfig(width=8, mults=(1, 2), emb_dim=32, groups=4))
    r = train(cfg, out, progress=False, log=lambda m: None)
    t = r["trainer"]
    h = hashlib.sha256()
    for p in list(t.model.parameters()) + list(t.ema.parameters()):
        h.update(p.detach().numpy().tobytes())
    rank = int(os.environ["RANK"])
    with open(os.path.join(out, f"rank{rank}.json"), "w") as f:
        json.dump({"hash": h.hexdigest(), "losses": r["losses"],
                   "world": r["world_size"]}, f)
    """
)


@pytest.mark.slow
def test_torchrun_two_cpu_processes_stay_identical(tmp_path):
    torchrun = Path(sys.executable).with_name("torchrun")
    if not torchrun.exists():
        torchrun = shutil.which("torchrun")
    if torchrun is None:
        pytest.skip("torchrun is not installed")
    script = tmp_path / "ddp_train.py"
    script.write_text(SCRIPT)
    env = dict(os.environ, OMP_NUM_THREADS="1", PYTHONPATH=os.pathsep.join(sys.path))
    p = subprocess.run(
        [str(torchrun), "--nproc_per_node=2", "--master_port=0", "--standalone", str(script),
         str(tmp_path)],
        capture_output=True, text=True, env=env, timeout=300,
    )
    assert p.returncode == 0, p.stdout[-3000:] + p.stderr[-3000:]
    r0 = json.loads((tmp_path / "rank0.json").read_text())
    r1 = json.loads((tmp_path / "rank1.json").read_text())
    assert r0["world"] == r1["world"] == 2
    assert r0["hash"] == r1["hash"]  # replicas identical after 3 DDP steps
    assert r0["losses"] != r1["losses"]  # per-rank data and noise
    state = json.loads((tmp_path / "checkpoint" / "state.json").read_text())
    assert state["world_size"] == 2 and len(state["rng"]["generators"]) == 2
    assert state["rng"]["generators"][0] != state["rng"]["generators"][1]
    assert sorted(p.name for p in tmp_path.iterdir() if p.name.startswith(".")) == []
