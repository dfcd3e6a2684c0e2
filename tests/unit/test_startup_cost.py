"""What every `vpclab` process pays at start: bytecode ready on disk, no heavy import it does not use."""
from __future__ import annotations

import importlib.util
import os
import shutil
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def test_install_sh_leaves_bytecode_for_every_module(tmp_path):
    """PYTHONDONTWRITEBYTECODE is set on the lab machines: without install.sh's compileall
    each CLI, daemon and node process would compile every module it imports, at every start."""
    line = next(l for l in (ROOT / "install.sh").read_text().splitlines() if "compileall" in l)
    shutil.copytree(ROOT / "vpclab", tmp_path / "vpclab", ignore=shutil.ignore_patterns("__pycache__"))
    subprocess.run(["bash", "-c", line], cwd=tmp_path, check=True,
                   env=dict(os.environ, PY=sys.executable, PYTHONDONTWRITEBYTECODE="1"))
    sources = sorted((tmp_path / "vpclab").rglob("*.py"))
    assert sources
    missing = [str(s.relative_to(tmp_path)) for s in sources if not Path(importlib.util.cache_from_source(s)).is_file()]
    assert missing == []


def test_the_daemon_imports_cryptography_only_for_an_alb_certificate():
    """~0.08 s of every lab's bring-up, for labs with no HTTPS listener."""
    code = "import sys, vpclab.daemon.main; print(sorted(m for m in sys.modules if m.startswith('cryptography')))"
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, env=dict(os.environ, PYTHONPATH=str(ROOT)),
                         capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"
