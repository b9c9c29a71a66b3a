"""The Quix Streams peer's own virtualenv, made on first use from ``requirements-quix.txt``.

Not the project's venv: Quix Streams pins pydantic and pydantic-settings to versions other than
the project's, and installing it there would change the runtime every other test runs on. The
venv lives in the user cache (``$BASICSYNC_CACHE_DIR`` or ``~/.cache/basicsync``), like the
local broker's jars, and is built from the same base interpreter as the project's venv.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

REQUIREMENTS = Path(__file__).with_name("requirements-quix.txt")


def venv_dir() -> Path:
    cache = os.environ.get("BASICSYNC_CACHE_DIR") or str(Path.home() / ".cache" / "basicsync")
    return Path(cache) / "bench-quix-venv"


def ensure() -> tuple[str | None, str]:
    """``(python of the venv, "")`` when Quix Streams imports there, else ``(None, why)``."""
    venv = venv_dir()
    python = venv / "bin" / "python"
    if _imports(python):
        return str(python), ""
    print(f"installing Quix Streams into {venv} (once) ...", flush=True)
    try:
        if not python.exists():
            subprocess.run([_base_python(), "-m", "venv", str(venv)], check=True, timeout=120)
        subprocess.run(
            [str(python), "-m", "pip", "install", "-q", "-r", str(REQUIREMENTS)],
            check=True,
            timeout=600,
        )
    except (OSError, subprocess.SubprocessError) as exc:
        return None, f"cannot install Quix Streams ({exc})"
    if not _imports(python):
        return None, f"Quix Streams installed in {venv} but does not import"
    return str(python), ""


def _imports(python: Path) -> bool:
    if not python.exists():
        return False
    # lz4 and zstandard too: a venv made before the core needed them is completed by the
    # install above
    check = subprocess.run(
        [str(python), "-c", "import quixstreams, pydantic, lz4, zstandard"], capture_output=True
    )
    return check.returncode == 0


def _base_python() -> str:
    base = Path(sys.base_prefix) / "bin" / "python3"
    return str(base) if base.exists() else sys.executable
