"""Every code block of docs/interop.md runs (in order, one namespace) and its asserts hold."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
import torch

pytest.importorskip("diffusers")

DOC = Path(__file__).resolve().parent.parent / "docs" / "interop.md"


def test_interop_doc_examples_run():
    blocks = re.findall(r"```python\n(.*?)```", DOC.read_text(), flags=re.S)
    assert len(blocks) >= 6
    ns: dict = {}
    grad = torch.is_grad_enabled()
    try:
        _run(blocks, ns)
    finally:
        torch.set_grad_enabled(grad)  # the doc turns autograd off
    assert ns["switch"] == 26  # the value the doc's table states


def _run(blocks, ns):
    for i, code in enumerate(blocks):
        try:
            exec(compile(code, f"{DOC.name}[block {i}]", "exec"), ns)
        except Exception as exc:  # pragma: no cover - the message names the block
            raise AssertionError(f"docs/interop.md block {i} failed: {exc!r}\n{code}") from exc
