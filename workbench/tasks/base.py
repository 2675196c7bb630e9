"""The `Task` contract and its registry: a task family is a class, found by the task's name.

In the spirit of TF Model Garden's `Task` + `register_task_cls` and KerasHub's task classes that
own their compile defaults and `generate`: a family computes (loads and checks its data, builds,
compiles and fits the model, evaluates, searches, exports, verifies, quantizes, distills,
generates) and declares what it offers: `STAGES`, the stages it implements, and `READS`, the
recipe settings it honours. The run resolves the task once (`resolve_task`) into
`RunContext.task`; stages only orchestrate and call it.

Adding a family: subclass `Task`, set `NAMES`, `STAGES` and `READS`, implement the methods of the
stages it offers, and import its module before the run resolves its recipe's task: defining the
subclass is the registration (`families()`).
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any

from workbench.errors import WorkbenchError, suggest

# Settings every family reads: what the model is, where the data comes from, how it optimizes,
# the run's engine, and the recipe's own bookkeeping.
COMMON_READS = frozenset({
    "name", "description", "model", "data", "task", "model_options", "optimizer",
    "optimizer_config", "optimizer_presets", "learning_rate", "schedule", "schedule_config",
    "batch_size", "seed", "jit_compile", "strategy", "precision", "scale_lr", "stages", "fast",
    "student", "verify.num_threads"})


def families():
    """Every task family that registered itself, by task name: the subclasses of `Task` (at any
    depth) that declare `NAMES`. A family registers by being imported; the bundled ones are
    imported by their packages (workbench.supervised, workbench.lm, workbench.hub), as
    KerasHub's model packages register their presets, and found here the way KerasHub's
    `find_subclass` finds a preset's task class."""
    found = {}
    pending = list(Task.__subclasses__())
    while pending:
        cls = pending.pop(0)
        pending.extend(cls.__subclasses__())
        for name in cls.__dict__.get("NAMES", ()):
            if name in found and found[name] is not cls:
                raise WorkbenchError(f"task '{name}' is claimed by two families: "
                                     f"{found[name].__name__} and {cls.__name__}")
            found[name] = cls
    return found


def task_names():
    return sorted(families())


def task_class(name):
    """The family registered for task `name`; an unknown name lists the known ones."""
    known = families()
    if name not in known:
        if not known:
            raise WorkbenchError(f"unknown task '{name}': no task family is registered; import "
                                 "one first (for example `import workbench.supervised`)")
        raise WorkbenchError(f"unknown task '{name}': {suggest(name, sorted(known))}")
    return known[name]


def resolve_task(recipe):
    """The family for `recipe.task`; with no task named, the supervised family, which infers its
    task from the labels when it loads the data."""
    return task_class(recipe.task or DEFAULT_TASK)(recipe.task)


def task_of(data):
    """The family of loaded data's task (`data.info.task`), for a `RunContext` built by hand."""
    return task_class(data.info.task)(data.info.task)


DEFAULT_TASK = "multiclass"


@dataclass
class Trained:
    """What a family's `fit` hands the train stage: the model, its curves (per epoch or per
    validation point), the learning rate of every step, and the results for the report."""

    model: Any
    history: dict = field(default_factory=dict)
    learning_rates: list = field(default_factory=list)
    results: dict = field(default_factory=dict)


class Task:
    """One task family. Instances carry the resolved task name (`self.name`)."""

    NAMES: tuple = ()
    STAGES: frozenset = frozenset()
    # Recipe settings this family honours, besides `COMMON_READS`: a top-level field (all of
    # it) or a dotted key (`verify.max_examples`, `data_options.val_fraction`).
    READS: frozenset = frozenset()
    # Stage -> what to use instead, said when the family refuses that stage.
    INSTEAD: dict = {}
    # The summary's headline metric (report.summary_rows): the key in `evaluate`'s results and
    # in each verified export's metrics.
    HEADLINE = ("test_accuracy", "accuracy")

    def __init__(self, name=None):
        self.name = name

    def describe(self):
        """How messages name the task: the resolved name, or the family's names before the data
        has said which of them it is."""
        if self.name is not None:
            return f"task '{self.name}'"
        return f"the tasks {', '.join(self.NAMES)}"

    # ---- what the family offers, checked before any work --------------------------------

    def check_stages(self, recipe, stages):
        """A stage the family does not offer is bad input, found before any work."""
        for stage in stages:
            if stage not in self.STAGES:
                offered = ", ".join(s for s in STAGE_ORDER if s in self.STAGES)
                hint = self.INSTEAD.get(stage)
                raise WorkbenchError(
                    f"stage '{stage}' does not apply to {self.describe()} (recipe "
                    f"'{recipe.name}'); its stages are {offered}" + (f"; {hint}" if hint else ""))

    def check_settings(self, recipe):
        """A setting the family does not read, set to anything but its default, is bad input
        (never silently ignored)."""
        reads = COMMON_READS | self.READS
        for key in changed_settings(recipe):
            top = key.split(".")[0]
            if top in reads or key in reads:
                continue
            raise WorkbenchError(
                f"setting '{key}' does not apply to {self.describe()} (recipe '{recipe.name}'), "
                f"which does not read it; drop it (settings of this task: "
                f"{', '.join(sorted(self.READS))})")

    # ---- the computations; each family implements those of the stages it offers ----------

    def load_data(self, recipe):
        raise NotImplementedError

    def preflight(self, recipe, data, stages, has_model):
        """Checks that need the data but no work (builds the model at most once)."""

    def output_units(self, info):
        return None

    def compile_args(self, recipe):
        """`loss` and `metrics` for `model.compile`."""
        raise NotImplementedError

    def export_formats(self, recipe):
        """The TFLite formats `export` writes: `export.formats`, or the family's default."""
        raise NotImplementedError

    def describe_evaluation(self, metrics):
        """One line of `evaluate`'s results for the console."""
        return "  ".join(f"{name} {value:.4f}" for name, value in metrics.items())

    def _unsupported(self, stage):
        raise WorkbenchError(f"stage '{stage}' does not apply to {self.describe()}")

    def fit(self, ctx):
        self._unsupported("train")

    def federated(self, ctx):
        self._unsupported("federated")

    def evaluate(self, ctx, model):
        self._unsupported("evaluate")

    def generate(self, ctx):
        self._unsupported("generate")

    def export(self, ctx, model):
        self._unsupported("export")

    def verify(self, ctx):
        self._unsupported("verify")

    def quantize(self, ctx):
        self._unsupported("quantize")

    def distill(self, ctx):
        self._unsupported("distill")

    def prune(self, ctx):
        self._unsupported("prune")

    def cluster(self, ctx):
        self._unsupported("cluster")

    def lr_find(self, ctx):
        self._unsupported("lr_find")

    def hypermodel(self, ctx):
        self._unsupported("search")

    def search_objective(self, recipe):
        self._unsupported("search")

    def search_recipe(self, recipe, hp):
        """The recipe with a trial's workbench-level choices applied."""
        from workbench.builders import recipe_for

        return recipe_for(recipe, hp)

    def search_budget(self, recipe):
        """`(line for the console or None, dict for the report)` of what a trial costs."""
        return None, {}


STAGE_ORDER = ("lr_find", "search", "train", "federated", "evaluate", "generate", "export", "verify", "prune",
               "quantize", "cluster", "distill")


def changed_settings(recipe):
    """Dotted keys of `recipe`'s settings that differ from the `Recipe` defaults (a section's
    keys one by one; a free-form mapping's keys one by one)."""
    found = []
    for f in dataclasses.fields(recipe):
        value = getattr(recipe, f.name)
        default = _default(f)
        if dataclasses.is_dataclass(value):
            for sub in dataclasses.fields(value):
                if getattr(value, sub.name) != _default(sub):
                    found.append(f"{f.name}.{sub.name}")
        elif isinstance(value, dict) and f.name != "fast":
            found += [f"{f.name}.{key}" for key, item in value.items()
                      if (default or {}).get(key, object()) != item]
        elif value != default and f.default is not dataclasses.MISSING:
            found.append(f.name)
    return found


def _default(f):
    if f.default is not dataclasses.MISSING:
        return f.default
    if f.default_factory is not dataclasses.MISSING:
        return f.default_factory()
    return None
