"""Distributed training: 2 CPU processes under torchrun (gloo) keep identical replicas."""

import json
import textwrap

import pytest

from _harness import torchrun_ranks

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
    r0, r1 = torchrun_ranks(tmp_path, "ddp_train.py", SCRIPT)
    assert r0["world"] == r1["world"] == 2
    assert r0["hash"] == r1["hash"]  # replicas identical after 3 DDP steps
    assert r0["losses"] != r1["losses"]  # per-rank data and noise
    state = json.loads((tmp_path / "checkpoint" / "state.json").read_text())
    assert state["world_size"] == 2 and len(state["rng"]["generators"]) == 2
    assert state["rng"]["generators"][0] != state["rng"]["generators"][1]
    # no stale tmp folders; the only hidden file is the output folder's lock
    assert sorted(p.name for p in tmp_path.iterdir() if p.name.startswith(".")) == [".lock"]
