"""Shared fixtures: small seeded texts and models, temporary folders."""

from __future__ import annotations

import os

import pytest
import torch

# Tests are deterministic and must not fight over the two cores of a CI machine.
torch.set_num_threads(min(2, os.cpu_count() or 1))


@pytest.fixture(autouse=True)
def _seed():
    torch.manual_seed(0)


@pytest.fixture
def one_thread():
    """One torch thread for the test, restored after. Small tensors: one thread avoids OpenMP
    wake-up costs that dominate on a busy 2-core box, and recordings are bit-reproducible.
    Use with ``pytestmark = pytest.mark.usefixtures("one_thread")``."""
    from tests.fixtures import torch_threads

    with torch_threads(1):
        yield


CODE_SNIPPET = '''def greet(name, times=2):
    """Say hello (politely) to [name]."""
    for i in range(times):  # repeat
        print("hello, %s" % name, {'n': i})
    return [name] * times

# see http://example.com/docs?x=1 for more
class Box(object):
    def __init__(self, items):
        self.items = list(items)
'''


@pytest.fixture
def code_text() -> str:
    return CODE_SNIPPET * 40


# Session fixtures that train and record a small model on the synthetic corpus live in
# tests/fixtures.py, shared by the analysis, export and dashboard tests.
pytest_plugins = ["tests.fixtures"]
