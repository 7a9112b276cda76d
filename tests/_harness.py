"""Shared test helpers: a torchrun launcher, and the tiny random diffusers pipelines (configs
from diffusers' own pipeline tests, tests/pipelines/{wan,mochi,hunyuan_video,ltx,cogvideo})
that the interop tests run with prompt embeddings passed directly (no tokenizer, no download).

diffusers is imported inside the builders, so importing this module never needs it.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch


# ----------------------------------------------------------------------------- torchrun
def torchrun_ranks(tmp_path: Path, name: str, script: str, nproc: int = 2) -> list[dict]:
    """Run ``script`` (Python source, saved as ``tmp_path / name``) under ``torchrun
    --standalone`` with ``nproc`` CPU processes, ``tmp_path`` as its one argument, and return
    the JSON each rank wrote to ``tmp_path / f"rank{rank}.json"``, rank 0 first.

    Skips when torchrun is not installed; fails with the processes' output tails when the run
    fails. Each process runs one thread with this interpreter's ``sys.path``.
    """
    torchrun = Path(sys.executable).with_name("torchrun")
    if not torchrun.exists():
        torchrun = shutil.which("torchrun")
    if torchrun is None:
        pytest.skip("torchrun is not installed")
    path = tmp_path / name
    path.write_text(script)
    env = dict(os.environ, OMP_NUM_THREADS="1", PYTHONPATH=os.pathsep.join(sys.path))
    p = subprocess.run(
        [str(torchrun), f"--nproc_per_node={nproc}", "--master_port=0", "--standalone",
         str(path), str(tmp_path)],
        capture_output=True, text=True, env=env, timeout=300,
    )
    assert p.returncode == 0, p.stdout[-3000:] + p.stderr[-3000:]
    return [json.loads((tmp_path / f"rank{r}.json").read_text()) for r in range(nproc)]


# ----------------------------------------------------------------------------- diffusers
#: CogVideoX-2b's scheduler config (diffusers' CogVideoXDDIMScheduler keywords).
COG_CONFIG = dict(beta_schedule="scaled_linear", beta_start=0.00085, beta_end=0.012,
                  clip_sample=False, prediction_type="v_prediction", rescale_betas_zero_snr=True,
                  set_alpha_to_one=True, snr_shift_scale=3.0, timestep_spacing="trailing",
                  steps_offset=0)

_TRANSFORMERS = {
    "wan": ("WanTransformer3DModel", dict(
        patch_size=(1, 2, 2), num_attention_heads=2, attention_head_dim=12, in_channels=16,
        out_channels=16, text_dim=32, freq_dim=256, ffn_dim=32, num_layers=2,
        cross_attn_norm=True, qk_norm="rms_norm_across_heads", rope_max_seq_len=32)),
    "mochi": ("MochiTransformer3DModel", dict(
        patch_size=2, num_attention_heads=2, attention_head_dim=8, num_layers=2,
        pooled_projection_dim=16, in_channels=12, out_channels=None, qk_norm="rms_norm",
        text_embed_dim=32, time_embed_dim=4, activation_fn="swiglu",
        max_sequence_length=16)),
    "hunyuan": ("HunyuanVideoTransformer3DModel", dict(
        in_channels=4, out_channels=4, num_attention_heads=2, attention_head_dim=10,
        num_layers=1, num_single_layers=1, num_refiner_layers=1, patch_size=1, patch_size_t=1,
        guidance_embeds=True, text_embed_dim=16, pooled_projection_dim=8,
        rope_axes_dim=(2, 4, 4))),
    "ltx": ("LTXVideoTransformer3DModel", dict(
        in_channels=8, out_channels=8, patch_size=1, patch_size_t=1, num_attention_heads=4,
        attention_head_dim=8, cross_attention_dim=32, num_layers=1, caption_channels=32)),
    "cog": ("CogVideoXTransformer3DModel", dict(
        num_attention_heads=4, attention_head_dim=8, in_channels=4, out_channels=4,
        time_embed_dim=2, text_embed_dim=32, num_layers=1, sample_width=2, sample_height=2,
        sample_frames=9, patch_size=2, temporal_compression_ratio=4,
        max_text_seq_length=16)),
}


def tiny_transformer(name: str) -> torch.nn.Module:
    """The tiny random transformer of model ``name`` (``wan``, ``mochi``, ``hunyuan``,
    ``ltx``, ``cog``), built right after ``torch.manual_seed(0)``, in eval mode."""
    import diffusers

    cls, kwargs = _TRANSFORMERS[name]
    torch.manual_seed(0)
    return getattr(diffusers, cls)(**kwargs).eval()


def tiny_pipeline(pipeline_cls, transformer: torch.nn.Module, scheduler, **parts):
    """``pipeline_cls`` around ``transformer`` and ``scheduler``, with no tokenizer, text
    encoder or VAE unless given in ``parts``, progress bar off."""
    parts = dict(dict(tokenizer=None, text_encoder=None, vae=None), **parts)
    pipe = pipeline_cls(transformer=transformer, scheduler=scheduler, **parts)
    pipe.set_progress_bar_config(disable=True)
    return pipe


def prompts(g: torch.Generator, tokens: int, dim: int, *, mask: bool = False) -> dict:
    """Pipeline keywords of random prompt and negative prompt embeddings (1, tokens, dim),
    drawn from ``g`` in that order, with all-ones attention masks if ``mask``."""
    kw = dict(prompt_embeds=torch.randn(1, tokens, dim, generator=g),
              negative_prompt_embeds=torch.randn(1, tokens, dim, generator=g))
    if mask:
        m = torch.ones(1, tokens)
        kw.update(prompt_attention_mask=m, negative_prompt_attention_mask=m)
    return kw
