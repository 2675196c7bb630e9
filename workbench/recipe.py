"""Recipes: everything a run needs, as one typed, overridable dataclass.

A recipe module defines `RECIPE = Recipe(...)`. Every field except the model builder can be
changed from the command line with `--set key=value`; nested settings use dots
(`--set early_stopping.patience=3`, `--set optimizer_config.beta_1=0.8`). Values are parsed and
type-checked against the field's annotation, so a typo or a wrong type is an error that names the
valid choices, never a silently ignored setting.
"""

from __future__ import annotations

import ast
import copy
import dataclasses
import importlib
import importlib.util
import inspect
import pkgutil
import sys
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Optional

from workbench.errors import WorkbenchError, suggest
from workbench.settings import (
    KNOWN_EXPORT_FORMATS, STRATEGIES, PRECISIONS, LR_SCALING, TUNERS, PRUNE_SCHEDULES,
    PRUNE_STRUCTURES, QUANTIZE_MODES, CLUSTER_INITS, EarlyStoppingSettings, PlateauSettings,
    ExportSettings, VerifySettings, LRFindSettings, BatchGrowthSettings, SearchSettings,
    PruneSettings, QuantizeSettings, ClusterSettings, DistillSettings)
from workbench.settings.lm import (
    LM_QUANTIZE_MODES, SAMPLERS, TOKENIZERS, GenerateSettings, LanguageModelSettings)
from workbench.settings.federated import FederatedSettings
from workbench.settings.hub import FINETUNE_MODES, QLORA_BASES, FinetuneSettings, SftSettings

@dataclass
class Recipe:
    """A complete description of a run.

    Args:
        name: short name, used for the output directory.
        description: one line for `--list`.
        model: builder `fn(hp)` (or `fn(hp, data_info)`) returning an uncompiled Keras model; `hp`
            is a `keras_tuner.HyperParameters`, so the same builder serves training and search.
        data: where the examples come from: `"digits"` (scikit-learn's bundled 8x8 digits), a
            path to a `.npz` or `.csv` file or a folder (images, text files), a
            `"module:function"` that returns the data, or for a language model a text source
            (docs/how-to/your-own-data.md).
        data_options: options for the data loader (`val_fraction`, `test_fraction`, ...).
        model_options: free-form options handed to a builder that takes a third argument
            (`fn(hp, data_info, options)`), e.g. a backbone name or `weights`.
        task: multiclass, binary, multilabel, regression, language_model or causal_lm (the
            registered families: workbench.tasks.task_names()); `None` infers a supervised task
            from the labels. The task chooses the default loss, metrics and monitors.
        optimizer: optimizer name (Keras' own or a workbench one, e.g. `"adam"`, `"shampoo"`).
        optimizer_config: keyword arguments for the optimizer.
        optimizer_presets: settings that come with an optimizer, `{name: {setting: value}}`
            (settings as `--set` names them, e.g. `"learning_rate"`, `"lm.warmup_steps"`):
            `--set optimizer=NAME` for a NAME here applies its settings first, then every other
            `--set` in order, so one switch of optimizer brings its tuned rate and config along.
        learning_rate: base learning rate (the schedule's initial rate when a schedule is set).
        schedule: learning-rate schedule name or `None`.
        schedule_config: keyword arguments for the schedule.
        regularizer: a regularizer name (Keras' `l1`, `l2`, `l1_l2`, `orthogonal_regularizer`, or
            the workbench's `group_lasso`, `l2sp`) put on every kernel; `None` leaves the
            builder's own choices alone.
        regularizer_config: keyword arguments for the regularizer (e.g. `{"l2": 1e-4}`).
        loss, metrics: Keras loss and metric names for `model.compile`; `None` takes the
            task's defaults (workbench.tasks).
        epochs, batch_size: training length and mini-batch size.
        seed: seeds the data split, initialization and shuffling; with op determinism on, the same
            seed gives the same result.
        stages: the pipeline, in order.
        lm: the language_model task's corpus, tokenizer, context and step-based training
            (workbench.settings.lm.LanguageModelSettings).
        generate: the `generate` stage's prompts and sampler (GenerateSettings).
        finetune: how the causal_lm task fine-tunes a pretrained preset (mode, LoRA rank,
            alpha, targets, QLoRA base; workbench.settings.hub.FinetuneSettings).
        sft: how the causal_lm task instruction-tunes on conversations (chat template,
            response-only loss, packing; workbench.settings.hub.SftSettings).
        federated: how the `federated` stage trains across clients on Flower (clients, rounds,
            partition, strategy, privacy; workbench.settings.federated.FederatedSettings).
        remat: rematerialize each Transformer block in the backward pass (`keras.remat` on
            every block; language models; workbench.lm.remat).
        fast: overrides applied by `--fast` for a seconds-long smoke run.
        student: builder of a smaller model for the `distill` stage (same signature as `model`).
        strategy: `tf.distribute` strategy: auto, default, one_device, mirrored, multi_worker, tpu;
            or on JAX a `keras.distribution` one: data_parallel, model_parallel.
        precision: float32, mixed_float16 or mixed_bfloat16.
        scale_lr: how the learning rate follows the replica count: linear, sqrt or none.
        backup_interval_seconds: least time between two training-state backups (for --resume);
            0 backs up after every epoch.
    """

    name: str
    model: Callable[..., Any]
    description: str = ""
    data: str = "digits"
    data_options: dict = field(default_factory=dict)
    task: Optional[str] = None
    model_options: dict = field(default_factory=dict)
    optimizer: str = "adam"
    optimizer_config: dict = field(default_factory=dict)
    optimizer_presets: dict = field(default_factory=dict)
    learning_rate: float = 1e-3
    schedule: Optional[str] = None
    schedule_config: dict = field(default_factory=dict)
    regularizer: Optional[str] = None
    regularizer_config: dict = field(default_factory=dict)
    loss: Optional[str] = None
    metrics: Optional[tuple[str, ...]] = None
    epochs: int = 30
    batch_size: int = 32
    seed: int = 0
    jit_compile: bool = False
    remat: bool = False
    backup_interval_seconds: float = 10.0
    strategy: str = "auto"
    precision: str = "float32"
    scale_lr: str = "linear"
    student: Optional[Callable[..., Any]] = None
    early_stopping: EarlyStoppingSettings = field(default_factory=EarlyStoppingSettings)
    plateau: PlateauSettings = field(default_factory=PlateauSettings)
    export: ExportSettings = field(default_factory=ExportSettings)
    verify: VerifySettings = field(default_factory=VerifySettings)
    search: SearchSettings = field(default_factory=SearchSettings)
    lr_find: LRFindSettings = field(default_factory=LRFindSettings)
    batch_growth: BatchGrowthSettings = field(default_factory=BatchGrowthSettings)
    prune: PruneSettings = field(default_factory=PruneSettings)
    quantize: QuantizeSettings = field(default_factory=QuantizeSettings)
    cluster: ClusterSettings = field(default_factory=ClusterSettings)
    distill: DistillSettings = field(default_factory=DistillSettings)
    lm: LanguageModelSettings = field(default_factory=LanguageModelSettings)
    generate: GenerateSettings = field(default_factory=GenerateSettings)
    finetune: FinetuneSettings = field(default_factory=FinetuneSettings)
    sft: SftSettings = field(default_factory=SftSettings)
    federated: FederatedSettings = field(default_factory=FederatedSettings)
    stages: tuple[str, ...] = ("train", "evaluate", "export", "verify")
    fast: dict = field(default_factory=lambda: {"epochs": 2})

    def validate(self):
        """Raise `WorkbenchError` for values out of range. Names are checked by `components`."""
        checks = [
            (self.epochs >= 1, "epochs must be at least 1"),
            (self.batch_size >= 1, "batch_size must be at least 1"),
            (self.learning_rate > 0, "learning_rate must be positive"),
            (self.backup_interval_seconds >= 0, "backup_interval_seconds must be >= 0"),
            (self.early_stopping.patience >= 0, "early_stopping.patience must be >= 0"),
            (0 < self.plateau.factor < 1, "plateau.factor must be in (0, 1)"),
            (self.plateau.patience >= 0, "plateau.patience must be >= 0"),
            (self.export.representative_examples >= 1,
             "export.representative_examples must be at least 1"),
            (self.verify.max_examples is None or self.verify.max_examples >= 1,
             "verify.max_examples must be at least 1 (or none for the whole test split)"),
            (self.verify.num_threads >= 1, "verify.num_threads must be at least 1"),
        ]
        checks += [
            (0 <= self.prune.target_sparsity < 1,
             f"prune.target_sparsity must be in [0, 1), got {self.prune.target_sparsity}"),
            (0 <= self.prune.initial_sparsity <= self.prune.target_sparsity,
             "prune.initial_sparsity must be in [0, prune.target_sparsity]"),
            (self.prune.epochs >= 1, "prune.epochs must be at least 1"),
            (self.prune.frequency >= 1, "prune.frequency must be at least 1"),
            (self.prune.learning_rate_factor > 0, "prune.learning_rate_factor must be positive"),
            (self.quantize.epochs >= 1, "quantize.epochs must be at least 1"),
            (self.quantize.learning_rate_factor > 0,
             "quantize.learning_rate_factor must be positive"),
            (self.cluster.clusters >= 2, "cluster.clusters must be at least 2"),
            (self.cluster.clusters >= 3 or not self.cluster.preserve_sparsity,
             "cluster.clusters must be at least 3 with cluster.preserve_sparsity (one is pinned "
             "at zero); raise it or set cluster.preserve_sparsity=false"),
            (self.cluster.epochs >= 1, "cluster.epochs must be at least 1"),
            (self.cluster.learning_rate_factor > 0,
             "cluster.learning_rate_factor must be positive"),
            (self.distill.alpha is None or 0 <= self.distill.alpha <= 1,
             "distill.alpha must be in [0, 1]"),
            (self.distill.temperature is None or self.distill.temperature > 0,
             "distill.temperature must be positive"),
            (self.distill.epochs >= 1, "distill.epochs must be at least 1"),
            (self.distill.steps >= 1, "distill.steps must be at least 1"),
            (self.distill.learning_rate is None or self.distill.learning_rate > 0,
             "distill.learning_rate must be positive"),
            (min(self.distill.student_layers, self.distill.student_width,
                 self.distill.student_heads) >= 0,
             "distill.student_layers, student_width and student_heads must be >= 0 (0: the "
             "task's default)"),
            (self.verify.generate_tokens >= 1, "verify.generate_tokens must be at least 1"),
            (all(mode in LM_QUANTIZE_MODES for mode in self.quantize.keras_modes),
             f"unknown quantize.keras_modes entry in {self.quantize.keras_modes} (valid: "
             f"{', '.join(LM_QUANTIZE_MODES)})"),
            (self.search.max_trials >= 1, "search.max_trials must be at least 1"),
            (self.search.epochs >= 1, "search.epochs must be at least 1"),
            (self.search.executions_per_trial >= 1, "search.executions_per_trial must be >= 1"),
            (all(b >= 1 for b in self.search.batch_sizes), "search.batch_sizes must be >= 1"),
            (0 < self.lr_find.min_lr < self.lr_find.max_lr,
             "lr_find needs 0 < lr_find.min_lr < lr_find.max_lr"),
            (self.lr_find.num_steps >= 2, "lr_find.num_steps must be at least 2"),
            (self.lr_find.suggest in ("minimum", "steepest"),
             "lr_find.suggest must be 'minimum' or 'steepest'"),
            (self.batch_growth.factor > 0, "batch_growth.factor must be positive"),
            (all(e >= 0 for e in self.batch_growth.epochs), "batch_growth.epochs must be >= 0"),
        ]
        lr_range = (self.search.learning_rate_min, self.search.learning_rate_max)
        if (lr_range[0] is None) != (lr_range[1] is None):
            checks.append((False, "set both search.learning_rate_min and "
                                  "search.learning_rate_max, or neither"))
        elif lr_range[0] is not None:
            checks.append((0 < lr_range[0] < lr_range[1],
                           "search.learning_rate_min must be positive and below "
                           "search.learning_rate_max"))
        for fraction in ("val_fraction", "test_fraction"):
            if fraction in self.data_options:
                value = self.data_options[fraction]
                checks.append((isinstance(value, (int, float)) and 0 < value < 1,
                               f"data_options.{fraction} must be in (0, 1), got {value!r}"))
        checks += [(False, message) for message in self.lm.problems() + self.generate.problems()
                   + self.finetune.problems() + self.federated.problems()]
        if self.finetune.base_quantization in ("gptq", "awq"):
            checks.append((False, f"finetune.base_quantization '{self.finetune.base_quantization}'"
                                  " cannot carry LoRA adapters (Keras has no LoRA on GPTQ/AWQ "
                                  "layers); use int8 or int4 for qlora"))
        for ok, message in checks:
            if not ok:
                raise WorkbenchError(message)
        choices = [("strategy", self.strategy, STRATEGIES), ("precision", self.precision, PRECISIONS),
                   ("scale_lr", self.scale_lr, LR_SCALING),
                   ("search.tuner", self.search.tuner, TUNERS),
                   ("prune.schedule", self.prune.schedule, PRUNE_SCHEDULES),
                   ("prune.structure", self.prune.structure, PRUNE_STRUCTURES),
                   ("quantize.mode", self.quantize.mode, QUANTIZE_MODES),
                   ("cluster.init", self.cluster.init, CLUSTER_INITS),
                   ("lm.tokenizer", self.lm.tokenizer, TOKENIZERS),
                   ("generate.sampler", self.generate.sampler, SAMPLERS),
                   ("finetune.mode", self.finetune.mode, FINETUNE_MODES),
                   ("finetune.base_quantization", self.finetune.base_quantization, QLORA_BASES),
                   *self.federated.names(), *self.sft.names()]
        for key, value, valid in choices:
            if value not in valid:
                raise WorkbenchError(f"unknown {key} '{value}': {suggest(value, valid)}")
        for fmt in self.export.formats or ():
            if fmt not in KNOWN_EXPORT_FORMATS:
                raise WorkbenchError(
                    f"unknown export format '{fmt}': {suggest(fmt, KNOWN_EXPORT_FORMATS)}")
        if not self.stages:
            raise WorkbenchError("the recipe has no stages; set at least one with --stages")

    def settings(self):
        """The recipe as plain data (for the report): the builder becomes its qualified name."""
        data = {}
        for f in dataclasses.fields(self):
            value = getattr(self, f.name)
            if f.name in ("model", "student") and value is not None:
                value = f"{getattr(value, '__module__', '?')}.{getattr(value, '__qualname__', value)}"
            elif dataclasses.is_dataclass(value):
                value = dataclasses.asdict(value)
            data[f.name] = copy.deepcopy(value) if isinstance(value, (dict, list)) else value
        return data


# --------------------------------------------------------------------------------------------
# Overrides: "--set key=value"

def parse_value(text: str):
    """Read a command-line value as a Python literal where it is one, else as a string."""
    lowered = text.strip().lower()
    if lowered in ("true", "yes", "on"):
        return True
    if lowered in ("false", "no", "off"):
        return False
    if lowered in ("none", "null"):
        return None
    try:
        return ast.literal_eval(text)
    except (ValueError, SyntaxError):
        return text


def _coerce(value, annotation, key):
    """Convert a parsed value to `annotation`, or raise a WorkbenchError saying what was expected."""
    origin = typing.get_origin(annotation)
    args = typing.get_args(annotation)
    if origin in (typing.Union, types.UnionType):
        if value is None and type(None) in args:
            return None
        errors = []
        for option in args:
            if option is type(None):
                continue
            try:
                return _coerce(value, option, key)
            except WorkbenchError as error:
                errors.append(str(error))
        raise WorkbenchError(errors[0] if errors else f"{key}: cannot be {value!r}")
    if origin is tuple:
        items = value if isinstance(value, (list, tuple)) else [
            parse_value(part) for part in str(value).split(",") if part.strip()]
        item_type = args[0] if args else str
        return tuple(_coerce(item, item_type, key) for item in items)
    if annotation is bool:
        if isinstance(value, bool):
            return value
        raise WorkbenchError(f"{key} expects true or false, got {value!r}")
    if annotation is int:
        if isinstance(value, int) and not isinstance(value, bool):
            return value
        if isinstance(value, float) and value.is_integer():
            return int(value)
        raise WorkbenchError(f"{key} expects a whole number, got {value!r}")
    if annotation is float:
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            return float(value)
        raise WorkbenchError(f"{key} expects a number, got {value!r}")
    if annotation is str:
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            return str(value)
        if isinstance(value, str):
            return value
        raise WorkbenchError(f"{key} expects text, got {value!r}")
    if annotation is dict or origin is dict:
        if isinstance(value, dict):
            return value
        raise WorkbenchError(f"{key} expects a mapping such as {{'a': 1}}, got {value!r}")
    return value


def settable_keys(obj, prefix=""):
    """All dotted keys `--set` accepts for a recipe (free-form dicts show as `name.*`)."""
    keys = []
    hints = typing.get_type_hints(type(obj))
    for f in dataclasses.fields(obj):
        if f.name in ("model", "student"):
            continue
        value = getattr(obj, f.name)
        if dataclasses.is_dataclass(value):
            keys.extend(settable_keys(value, prefix + f.name + "."))
        else:
            keys.append(prefix + f.name)
            if hints.get(f.name) is dict and f.name not in ("fast", "optimizer_presets"):
                keys.append(prefix + f.name + ".*")
    return keys


def _set(obj, parts, raw_value, full_key, root):
    name = parts[0]
    names = [f.name for f in dataclasses.fields(obj)]
    if name not in names:
        raise WorkbenchError(
            f"unknown setting '{full_key}': {suggest(full_key, settable_keys(root))}")
    if name in ("model", "student"):
        raise WorkbenchError(f"'{name}' is a Python function; edit the recipe file to change it")
    hints = typing.get_type_hints(type(obj))
    current = getattr(obj, name)
    if len(parts) == 1:
        setattr(obj, name, _coerce(parse_value(raw_value), hints[name], full_key))
    elif dataclasses.is_dataclass(current):
        _set(current, parts[1:], raw_value, full_key, root)
    elif isinstance(current, dict):
        # Free-form mappings (optimizer_config, ...): the receiving constructor checks the names.
        target = current
        for part in parts[1:-1]:
            target = target.setdefault(part, {})
            if not isinstance(target, dict):
                raise WorkbenchError(f"'{full_key}': '{part}' is not a mapping")
        target[parts[-1]] = parse_value(raw_value)
    else:
        raise WorkbenchError(f"'{'.'.join(full_key.split('.')[:-1])}' has no sub-settings; "
                             f"use --set {name}=VALUE")


# Settings that moved: one name per concept, whatever the task (the language model's own
# compression section merged into the generic ones).
RENAMED = {
    "lm.val_fraction": "data_options.val_fraction",
    "lm_compress.export_formats": "export.formats",
    "lm_compress.eval_windows": "verify.max_examples",
    "lm_compress.generate_tokens": "verify.generate_tokens",
    "lm_compress.quantize_modes": "quantize.keras_modes",
    "lm_compress.group_size": "quantize.group_size",
    "lm_compress.export_quantized": "quantize.export_quantized",
    "lm_compress.calibration_windows": "export.representative_examples",
    "lm_compress.distill_steps": "distill.steps",
    "lm_compress.distill_learning_rate": "distill.learning_rate",
    "lm_compress.distill_temperature": "distill.temperature",
    "lm_compress.distill_alpha": "distill.alpha",
    "lm_compress.student_layers": "distill.student_layers",
    "lm_compress.student_width": "distill.student_width",
    "lm_compress.student_heads": "distill.student_heads",
}


def _check_renamed(key):
    if key in RENAMED:
        raise WorkbenchError(f"setting '{key}' is now '{RENAMED[key]}': use --set "
                             f"{RENAMED[key]}=...")
    if key.split(".")[0] == "lm_compress":
        raise WorkbenchError(f"setting '{key}' is gone: the lm_compress section merged into "
                             "export.*, quantize.*, distill.* and verify.*")


def apply_overrides(recipe: Recipe, assignments, fast=False) -> Recipe:
    """Return a copy of `recipe` with `key=value` assignments applied (the original is untouched).
    In order: the preset of the optimizer the assignments choose (`optimizer_presets`), the
    recipe's `fast` overrides when `fast`, then the assignments themselves."""
    recipe = copy.deepcopy(recipe)
    assignments = list(assignments)
    if fast:
        assignments = [f"{key}={value!r}" for key, value in recipe.fast.items()] + assignments
    chosen = [a.split("=", 1)[1].strip() for a in assignments
              if "=" in a and a.split("=", 1)[0].strip() == "optimizer"]
    if chosen and chosen[-1] in recipe.optimizer_presets:
        preset = recipe.optimizer_presets[chosen[-1]]
        assignments = [f"{key}={value!r}" for key, value in preset.items()] + assignments
    for assignment in assignments:
        if "=" not in assignment:
            raise WorkbenchError(f"--set expects key=value, got '{assignment}'")
        key, raw_value = assignment.split("=", 1)
        key = key.strip()
        if not key:
            raise WorkbenchError(f"--set expects key=value, got '{assignment}'")
        _check_renamed(key)
        _set(recipe, key.split("."), raw_value, key, recipe)
    return recipe


def apply_fast(recipe: Recipe) -> Recipe:
    """The recipe's `--fast` smoke version: its `fast` overrides applied."""
    return apply_overrides(recipe, [], fast=True)


# --------------------------------------------------------------------------------------------
# Loading

def _recipes_package():
    import recipes  # the installed package of bundled recipes

    return recipes


def available_recipes():
    """Names of the recipes shipped under `recipes/`."""
    package = _recipes_package()
    return sorted(m.name for m in pkgutil.iter_modules(package.__path__) if not m.name.startswith("_"))


def bundled_description(name: str) -> str:
    """The first line of a bundled recipe's `description`, read from its source without importing
    it (importing a recipe imports Keras, TensorFlow and whatever its model needs); the module
    docstring's first line when the description is not a literal string."""
    import ast

    path = Path(_recipes_package().__path__[0]) / f"{name}.py"
    tree = ast.parse(path.read_text(encoding="utf-8"))
    for node in ast.walk(tree):
        if isinstance(node, ast.Call) and getattr(node.func, "id", None) == "Recipe":
            for keyword in node.keywords:
                if keyword.arg == "description":
                    try:
                        value = ast.literal_eval(keyword.value)
                    except ValueError:
                        break
                    lines = str(value).strip().splitlines()
                    return lines[0] if lines else ""
    lines = (ast.get_docstring(tree) or "").strip().splitlines()
    return lines[0] if lines else ""


def _module_from_file(path: Path):
    module_name = f"workbench_recipe_{abs(hash(str(path.resolve())))}"
    spec = importlib.util.spec_from_file_location(module_name, path)
    if spec is None or spec.loader is None:
        raise WorkbenchError(f"cannot load '{path}' as a Python module")
    module = importlib.util.module_from_spec(spec)
    sys.modules[module_name] = module
    try:
        spec.loader.exec_module(module)
    except Exception as error:  # the user's recipe file is broken: bad input, not a crash
        del sys.modules[module_name]
        raise WorkbenchError(f"recipe file '{path}' failed to import: {_describe(error)}")
    return module


def _describe(error):
    if isinstance(error, SyntaxError):
        return f"SyntaxError: {error.msg} (line {error.lineno})"
    return f"{type(error).__name__}: {error}"


def load_recipe(reference: str) -> Recipe:
    """Load a recipe by bundled name, dotted module path or `.py` file path."""
    if reference.endswith(".py") or "/" in reference or reference.startswith("."):
        path = Path(reference)
        if not path.is_file():
            raise WorkbenchError(f"recipe file '{reference}' does not exist")
        module = _module_from_file(path)
        where = str(path)
    else:
        names = available_recipes()
        module_name = f"recipes.{reference}" if reference in names else reference
        if "." not in module_name:
            raise WorkbenchError(f"unknown recipe '{reference}': {suggest(reference, names)} "
                                 "(or give a dotted module path or a .py file)")
        try:
            module = importlib.import_module(module_name)
        except ModuleNotFoundError as error:
            if error.name and module_name.startswith(error.name):
                raise WorkbenchError(
                    f"unknown recipe '{reference}': no module '{error.name}' "
                    f"(bundled recipes: {', '.join(names)})") from None
            raise WorkbenchError(f"recipe '{reference}' failed to import: "
                                 f"{_describe(error)}") from None
        except Exception as error:
            raise WorkbenchError(f"recipe '{reference}' failed to import: "
                                 f"{_describe(error)}") from None
        where = module_name
    recipe = getattr(module, "RECIPE", None)
    if recipe is None:
        raise WorkbenchError(f"'{where}' defines no RECIPE; add `RECIPE = Recipe(...)` to it")
    if not isinstance(recipe, Recipe):
        raise WorkbenchError(
            f"RECIPE in '{where}' is a {type(recipe).__name__}, expected a workbench.Recipe")
    if not callable(recipe.model):
        raise WorkbenchError(f"RECIPE.model in '{where}' must be a function of hp")
    return recipe


def _positional_parameters(builder) -> int:
    try:
        return len([p for p in inspect.signature(builder).parameters.values()
                    if p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD)])
    except (TypeError, ValueError):
        return 1


def builder_takes_data_info(builder) -> bool:
    """Whether a model builder wants `(hp, data_info)` rather than `(hp)`."""
    return _positional_parameters(builder) >= 2


def call_builder(builder, hp, data_info, options=None):
    """Call a model builder with what it takes: `(hp)`, `(hp, data_info)` or
    `(hp, data_info, model_options)`."""
    count = _positional_parameters(builder)
    if count >= 3:
        return builder(hp, data_info, dict(options or {}))
    if count == 2:
        return builder(hp, data_info)
    return builder(hp)
