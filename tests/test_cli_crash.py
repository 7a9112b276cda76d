"""Crash consistency of training checkpoints: kill a run at every filesystem mutation of its
saves, resume and kill again at each mutation of the resumed run's first save (the first 7),
then resume cleanly; every case must end with a checkpoint that loads and continues, and no
completed save may be lost.

The kills are real process deaths (``os._exit`` in a forked child, no clean-up handlers)
placed by the checkpoint module's mutation hook (``VIDNOISE_CRASH_AT``). The driver runs in
a fresh interpreter with one thread (forking a process whose OpenMP pool has run is unsafe).
"""

import json
import os
import subprocess
import sys

import pytest

DRIVER = r'''
import json, os, shutil, sys, traceback
from pathlib import Path

import torch

torch.set_num_threads(1)
from vidnoise.demo import checkpoint as ck
from vidnoise.demo import trainer as tr
from vidnoise.demo.config import TrainConfig
from vidnoise.demo.model import ModelConfig
from vidnoise.demo.train import train
from vidnoise.demo.trainer import load_model

ROOT = Path(sys.argv[1])
FIRST, SECOND, RECRASH = 2, 3, int(sys.argv[2])
CFG = TrainConfig(size=8, frames=2, batch_size=2, stages=1, steps=FIRST, minutes=None,
                  warmup=1, model=ModelConfig(width=4, mults=(1,), emb_dim=8, groups=2,
                                              stages=1, attention=False))


def child(out, steps, resume, crash_at, record=None):
    pid = os.fork()
    if pid == 0:
        code = 0
        try:
            ck.MUTATIONS = 0
            ck._CRASH_AT = crash_at
            if record is not None:  # (mutations after the save returned, its step)
                real = tr.save_checkpoint
                saves = []

                def rec(path, tensors, state):
                    p = real(path, tensors, state)
                    saves.append((ck.MUTATIONS, state["step"]))
                    return p

                tr.save_checkpoint = rec
            train(None if resume else CFG.with_overrides(steps=steps), out,
                  resume=out / "checkpoint" if resume else None,
                  overrides={"steps": steps} if resume else None, progress=False,
                  checkpoint_every=1, log=lambda m: None, signals=False)
            if record is not None:
                Path(record).write_text(json.dumps({"total": ck.MUTATIONS, "saves": saves}))
        except BaseException:
            traceback.print_exc()
            code = 3
        os._exit(code)
    _, status = os.waitpid(pid, 0)
    return os.waitstatus_to_exitcode(status)


def found_step(out):
    f = ck.find_checkpoint(out / "checkpoint")
    if f is None:
        return None
    return json.loads((f / "state.json").read_text())["step"]


def committed_before(saves, k):
    steps = [s for m, s in saves if m < k]
    return max(steps) if steps else None


base = ROOT / "count"
assert child(base, FIRST, False, 0, record=ROOT / "count.json") == 0
info = json.loads((ROOT / "count.json").read_text())
total, saves = info["total"], info["saves"]
tried, lost, problems = 0, 0, []
for k in range(1, total + 1):
    out = ROOT / f"k{k}"
    rc = child(out, FIRST, False, k)
    tried += 1
    if rc != 137:
        problems.append(f"k={k}: the crash run ended with {rc}")
        lost += 1
        continue
    must = committed_before(saves, k)
    have = found_step(out)
    if must is not None and (have is None or have < must):
        problems.append(f"k={k}: step {have} found, {must} was saved")
        lost += 1
        continue
    for j in range(0, RECRASH + 1):  # j = 0: resume cleanly at once
        case = ROOT / f"k{k}j{j}"
        shutil.copytree(out, case, symlinks=True)
        resume = have is not None
        if j:
            tried += 1
            rc = child(case, SECOND, resume, j)
            if rc not in (0, 137):
                problems.append(f"k={k} j={j}: the resumed run ended with {rc}")
                lost += 1
                continue
            again = found_step(case)
            if have is not None and (again is None or again < have):
                problems.append(f"k={k} j={j}: step {again} found after the second kill, "
                                f"{have} before")
                lost += 1
                continue
            resume = again is not None
        rc = child(case, SECOND, resume, 0)
        try:
            model, cfg, state = load_model(case / "checkpoint")
            ok = rc == 0 and state["step"] == SECOND
        except Exception as exc:
            ok, state = False, {"error": str(exc)}
        if not ok:
            problems.append(f"k={k} j={j}: final resume rc={rc}, state {state.get('step')}")
            lost += 1
        stale = [p.name for p in case.iterdir() if p.name.startswith(".checkpoint.tmp-")
                 or p.name.endswith(".old")]
        if stale:
            problems.append(f"k={k} j={j}: stale folders left: {stale}")
            lost += 1
        shutil.rmtree(case)
    shutil.rmtree(out)
print(json.dumps({"mutations_per_run": total, "saves": len(saves), "tried": tried,
                  "lost": lost, "problems": problems[:10]}))
'''


def run_driver(tmp_path, recrash: int) -> dict:
    env = dict(os.environ, OMP_NUM_THREADS="1", VIDNOISE_CRASH_AT="0")
    p = subprocess.run([sys.executable, "-c", DRIVER, str(tmp_path), str(recrash)],
                       capture_output=True, text=True, timeout=600, env=env)
    assert p.returncode == 0, p.stderr[-3000:]
    return json.loads(p.stdout.strip().splitlines()[-1])


@pytest.mark.slow
def test_kill_at_every_mutation_then_again_then_resume(tmp_path):
    r = run_driver(tmp_path, recrash=7)  # the whole first save of the resumed run
    print(f"crash points tried: {r['tried']}, lost: {r['lost']} "
          f"({r['mutations_per_run']} mutations in a run of {r['saves']} saves)")
    assert r["saves"] == 3 and r["mutations_per_run"] >= 3 * 5
    assert r["lost"] == 0, r["problems"]
