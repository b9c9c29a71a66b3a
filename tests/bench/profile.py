"""``--profile``: sample ours with py-spy while it runs, then list where the time went.

py-spy (``requirements.txt``) attaches to the child by pid, so ours runs unmodified; it samples
until the child exits and writes collapsed stacks ("frame;frame;... count"). The summary is
the top functions by own samples (where the CPU is) and the top ``consumer`` functions by
inclusive samples (which of our steps pays for it).
"""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
from collections import Counter
from pathlib import Path


class Profiler:
    def __init__(self, path: Path, rate: int = 100) -> None:
        self.path = path
        self.rate = rate
        self._process: subprocess.Popen[bytes] | None = None
        self._error = ""

    def attach(self, pid: int) -> None:
        spy = shutil.which("py-spy") or str(Path(sys.executable).parent / "py-spy")
        if not Path(spy).exists():
            self._error = "py-spy not installed (pip install -r tests/bench/requirements.txt)"
            return
        self._process = subprocess.Popen(
            [spy, "record", "--pid", str(pid), "--rate", str(self.rate), "--format", "raw",
             "--output", str(self.path.with_suffix(".collapsed")), "--nonblocking"],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )  # fmt: skip

    def finish(self, top: int = 15) -> str:
        """Wait for py-spy to write its file (the child has exited) and summarise it."""
        if self._process is None:
            return f"profile: {self._error or 'not attached'}"
        try:
            self._process.wait(60)
        except subprocess.TimeoutExpired:
            self._process.kill()
        collapsed = self.path.with_suffix(".collapsed")
        if not collapsed.exists():
            return "profile: py-spy wrote nothing (ptrace not permitted?)"
        own: Counter[str] = Counter()
        inclusive: Counter[str] = Counter()
        total = 0
        for line in collapsed.read_text(errors="replace").splitlines():
            stack, _, count_text = line.rpartition(" ")
            if not stack or not count_text.isdigit():
                continue
            count = int(count_text)
            frames = stack.split(";")
            total += count
            own[_function(frames[-1])] += count
            for frame in {_function(f) for f in frames if _OURS.search(f)}:
                inclusive[frame] += count
        lines = [f"profile of ours: {total} samples at {self.rate} Hz ({collapsed})",
                 "  top functions by own samples:"]  # fmt: skip
        lines += [f"    {n / total:6.1%}  {frame}" for frame, n in own.most_common(top)]
        lines.append("  top consumer functions by inclusive samples:")
        lines += [f"    {n / total:6.1%}  {frame}" for frame, n in inclusive.most_common(top * 2)]
        self.path.write_text("\n".join(lines) + "\n")
        return "\n".join(lines)


_ROOT = str(Path(__file__).resolve().parents[2])
#: a frame of the project's own ``consumer`` package (py-spy shows it relative or absolute)
_OURS = re.compile(r"\((?:" + re.escape(_ROOT) + r"/)?consumer/")
_LINE = re.compile(r":\d+\)$")


def _function(frame: str) -> str:
    """``func (path/to/site-packages/pkg/mod.py:12)`` -> ``func (pkg/mod.py)``: one entry per
    function, whichever line was running."""
    head, _, tail = frame.partition("(")
    for marker in ("site-packages/", "/work/main/", "lib/python3.11/"):
        tail = tail.split(marker, 1)[-1]
    return _LINE.sub(")", f"{head}({tail}")
