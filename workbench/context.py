"""The run context: the one object every stage reads and returns, and the run directory."""

from __future__ import annotations

import contextlib
import os
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Optional

from workbench.errors import WorkbenchError


class RunDir:
    """A run's own output directory. Files appear only complete: written to a temporary name in the
    same directory, then renamed, so an interrupted run never leaves a half-written file."""

    def __init__(self, path):
        self.path = Path(path)

    @classmethod
    def create(cls, root: Path, recipe_name: str, explicit: Optional[Path] = None):
        if explicit is not None:
            path = Path(explicit)
            if path.exists() and (not path.is_dir() or any(path.iterdir())):
                raise WorkbenchError(
                    f"--out '{path}' already exists and is not an empty directory; earlier "
                    "outputs are never overwritten, so choose a new directory")
            path.mkdir(parents=True, exist_ok=True)
            return cls(path)
        base = Path(root) / recipe_name
        base.mkdir(parents=True, exist_ok=True)
        stamp = time.strftime("%Y%m%d-%H%M%S")
        for suffix in [""] + [f"-{i}" for i in range(1, 1000)]:
            path = base / f"{stamp}{suffix}"
            try:
                path.mkdir()
                return cls(path)
            except FileExistsError:
                continue
        raise WorkbenchError(f"cannot create a new run directory under '{base}'")

    def __truediv__(self, name):
        return self.path / name

    @contextlib.contextmanager
    def atomic(self, name: str):
        """Yield a temporary path to write; on success it is renamed to `name`."""
        final = self.path / name
        final.parent.mkdir(parents=True, exist_ok=True)
        temp = final.with_name(f".partial-{os.getpid()}-{final.name}")
        try:
            yield temp
            os.replace(temp, final)
        finally:
            if temp.exists():
                temp.unlink()

    def write_bytes(self, name: str, data: bytes) -> Path:
        with self.atomic(name) as temp:
            temp.write_bytes(data)
        return self.path / name

    def write_text(self, name: str, text: str) -> Path:
        return self.write_bytes(name, text.encode("utf-8"))


def say(*parts, **kwargs):
    """Progress output for people; flushed so it interleaves correctly with Keras' output."""
    print(*parts, **kwargs, flush=True)


@dataclass
class RunContext:
    """Everything a stage may read or produce. Stages are `stage(ctx) -> ctx`."""

    recipe: Any
    run_dir: RunDir
    verbose: int = 1
    data: Any = None
    model: Any = None
    hp: Any = None
    strategy: Any = None
    # Stage name -> metrics of that stage (filled by the stages, written by the report).
    results: dict = field(default_factory=dict)
    # Variant name -> {"path", "size_bytes", ...} for every exported model.
    exports: dict = field(default_factory=dict)
    # Plain data the report plots: per-epoch history, learning rate per step.
    history: dict = field(default_factory=dict)
    learning_rates: list = field(default_factory=list)
    timings: dict = field(default_factory=dict)
    # True when continuing an interrupted run in its own directory (--resume).
    resuming: bool = False
    # The interrupted run's report.json, when resuming.
    previous_report: dict = field(default_factory=dict)
    # Set by a stage that ends this process's part of the run (e.g. a distributed-search worker).
    stop_after_stage: Optional[str] = None
    # The task family (workbench.tasks.Task) the run resolved; stages call it to compute. A
    # context built by hand names it too (`workbench.tasks.task_of(data)`).
    task: Any = None
    # Stage name -> a markdown section of report.md that a stage writes itself.
    sections: dict = field(default_factory=dict)

    def say(self, *parts):
        if self.verbose:
            say(*parts)

    def require_model(self, stage: str):
        if self.model is None:
            raise WorkbenchError(
                f"stage '{stage}' needs a model: include 'train' in --stages or pass --model PATH")
        return self.model

    def require_data(self, stage: str):
        if self.data is None:
            raise WorkbenchError(f"stage '{stage}' needs data, but none was loaded")
        return self.data


def keras_verbosity(verbose: int):
    """Progress bars on a terminal, one line per epoch in logs and pipes."""
    if not verbose:
        return 0
    return 1 if sys.stdout.isatty() else 2
