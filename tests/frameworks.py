"""Importing an agent framework for the adapter tests: skipped locally when absent, required in CI.

A developer without an extra installed can still run the core suite; CI
installs every extra, so a missing framework there is a failure, not a skip.
"""

from __future__ import annotations

import importlib
import os
from types import ModuleType

import pytest


def need(module: str, extra: str) -> ModuleType:
    """Import ``module`` or skip the test module (fail under CI) with the install hint."""
    try:
        return importlib.import_module(module)
    except ImportError as exc:
        message = f"{module} is not installed ({exc}); install it with: pip install -e '.[{extra}]'"
        if os.environ.get("CI"):
            pytest.fail(message + " — CI must test every adapter", pytrace=False)
        pytest.skip(message, allow_module_level=True)
        raise  # unreachable: skip raises
