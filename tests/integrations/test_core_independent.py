"""The core never imports lightning; the integration names its extra when lightning is missing."""

from __future__ import annotations

import importlib
import subprocess
import sys

import pytest

from rnnguard.errors import MissingExtraError


def test_core_imports_without_lightning() -> None:
    code = (
        "import sys, rnnguard, rnnguard.train, rnnguard.diagnose, rnnguard.integrations\n"
        "bad = sorted(m for m in sys.modules if m.split('.')[0] in ('lightning', 'pytorch_lightning'))\n"
        "assert not bad, bad\n"
    )
    subprocess.run([sys.executable, "-c", code], check=True, timeout=120)


def test_missing_lightning_names_the_extra(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "lightning", None)  # makes `import lightning` fail
    monkeypatch.delitem(sys.modules, "rnnguard.integrations.lightning", raising=False)
    with pytest.raises(MissingExtraError, match=r"rnnguard\[lightning\]"):
        importlib.import_module("rnnguard.integrations.lightning")
