"""Shared test settings: a fast, deterministic hypothesis profile, torch threads, and the
`one_thread` fixture."""

import pytest
import torch
from hypothesis import settings

settings.register_profile("vidnoise", max_examples=40, deadline=None, derandomize=True)
settings.load_profile("vidnoise")
torch.set_num_threads(2)


@pytest.fixture
def one_thread():
    """Run a test of many small tensor ops (float64 linear algebra, tiny samplers) on one
    thread, restoring the count after: on an oversubscribed 2-core CPU a multi-threaded
    kernel's barrier can cost milliseconds (measured 0.3 s vs 18 s for one exact-covariance
    run), and these ops are too small to gain from threads."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)
