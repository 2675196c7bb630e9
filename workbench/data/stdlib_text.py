"""`stdlib_packages`: a real text-classification set that is on every machine — which standard
library package a chunk of Python source comes from.

The chunks are written once as a class-per-folder text set (one folder per package, one `.txt`
file per chunk) under the system's temporary directory, keyed by the Python version, and then
read like any other text folder. The folder appears complete or not at all (written under a
temporary name, then renamed).
"""

from __future__ import annotations

import os
import shutil
import sys
import sysconfig
import tempfile
from pathlib import Path

PACKAGES = ("asyncio", "email", "json", "logging", "multiprocessing", "unittest", "xml",
            "concurrent", "http", "importlib")
LINES_PER_CHUNK = 30
MAX_CHUNKS_PER_PACKAGE = 300


def _chunks(package_dir):
    chunks = []
    for path in sorted(package_dir.rglob("*.py")):
        if "test" in path.relative_to(package_dir).parts[:-1]:
            continue
        lines = path.read_text(encoding="utf-8", errors="replace").splitlines()
        for start in range(0, len(lines), LINES_PER_CHUNK):
            text = "\n".join(lines[start:start + LINES_PER_CHUNK]).strip()
            if len(text) > 200:
                chunks.append(text)
    step = max(1, len(chunks) // MAX_CHUNKS_PER_PACKAGE)
    return chunks[::step][:MAX_CHUNKS_PER_PACKAGE]


def stdlib_packages_folder() -> Path:
    """The folder of the set, written on first use."""
    root = Path(sysconfig.get_paths()["stdlib"])
    version = f"{sys.version_info.major}.{sys.version_info.minor}"
    target = Path(tempfile.gettempdir()) / "workbench-data" / f"stdlib_packages-{version}"
    if target.is_dir():
        return target
    target.parent.mkdir(parents=True, exist_ok=True)
    partial = Path(tempfile.mkdtemp(prefix=".partial-", dir=target.parent))
    try:
        for package in PACKAGES:
            folder = partial / package
            folder.mkdir()
            for index, chunk in enumerate(_chunks(root / package)):
                (folder / f"{index:04d}.txt").write_text(chunk, encoding="utf-8")
        os.replace(partial, target)
    except OSError:
        if not target.is_dir():
            raise
    finally:
        shutil.rmtree(partial, ignore_errors=True)
    return target
