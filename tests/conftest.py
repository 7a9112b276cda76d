"""Shared test settings: a fast, deterministic hypothesis profile and torch threads."""

import torch
from hypothesis import settings

settings.register_profile("vidnoise", max_examples=40, deadline=None, derandomize=True)
settings.load_profile("vidnoise")
torch.set_num_threads(2)
