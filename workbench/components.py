"""Components by name: optimizers, learning-rate schedules and callbacks selected from a recipe.

Keras' own classes and the workbench's are looked up in one table each, so a recipe (or
`--set optimizer=shampoo`) names either kind the same way. A misspelled name, or a keyword argument
the class does not take, is a `WorkbenchError` that lists the choices, close matches first.
"""

from __future__ import annotations

import importlib
import inspect
import re

import keras

from workbench.errors import WorkbenchError, suggest


# Class names whose mechanical snake_case reads badly ("rm_sprop", "adam_w").
_DISPLAY_NAMES = {"AdamW": "adamw", "RMSprop": "rmsprop", "ScheduleFreeAdamW": "schedule_free_adamw",
                  "TensorBoard": "tensorboard", "TerminateOnNaN": "terminate_on_nan",
                  "AdaBelief": "adabelief", "RAdam": "radam", "L2SP": "l2sp",
                  "L1L2": "l1_l2"}


def snake_case(name: str) -> str:
    if name in _DISPLAY_NAMES:
        return _DISPLAY_NAMES[name]
    name = re.sub(r"(.)([A-Z][a-z]+)", r"\1_\2", name)
    return re.sub(r"([a-z0-9])([A-Z])", r"\1_\2", name).lower()


def _key(name: str) -> str:
    """Lookup key: case and underscores do not matter (`AdamW`, `adamw`, `adam_w`)."""
    return name.strip().lower().replace("_", "")


class Registry:
    """Name -> class for one kind of component. A class answers to its name in any case, with or
    without underscores (`ScheduleFreeAdamW`, `schedule_free_adamw`); `aliases` add more."""

    def __init__(self, kind: str, base: type, modules, exclude=(), aliases=None):
        self.kind = kind
        self.base = base
        self.modules = modules
        self.exclude = set(exclude)
        self.aliases = dict(aliases or {})
        self._table = None

    def _load(self):
        table = {}
        for module_name in self.modules:
            module = importlib.import_module(module_name)
            for attr in getattr(module, "__all__", dir(module)):
                cls = getattr(module, attr, None)
                if (inspect.isclass(cls) and issubclass(cls, self.base) and cls is not self.base
                        and cls.__name__ not in self.exclude):
                    table.setdefault(_key(cls.__name__), cls)
        for alias, target in self.aliases.items():
            if _key(target) in table:
                table[_key(alias)] = table[_key(target)]
        return table

    @property
    def table(self):
        if self._table is None:
            self._table = self._load()
        return self._table

    def names(self):
        """One display name per class (the snake_case one), plus the aliases."""
        names = {snake_case(cls.__name__) for cls in self.table.values()}
        return sorted(names | set(self.aliases))

    def get(self, name: str):
        if _key(name) not in self.table:
            raise WorkbenchError(
                f"unknown {self.kind} '{name}': {suggest(name.strip().lower(), self.names())}")
        return self.table[_key(name)]

    def build(self, name: str, config: dict, defaults: dict | None = None, required_only=False):
        """Instantiate `name` with `config`; `defaults` fill parameters the class takes (with
        `required_only`, only those it has no default for)."""
        cls = self.get(name)
        params = inspect.signature(cls.__init__).parameters
        takes_kwargs = any(p.kind is p.VAR_KEYWORD for p in params.values())
        valid = [p for p in params if p not in ("self", "args", "kwargs")]
        unknown = [key for key in config if key not in params]
        if unknown and not (takes_kwargs and _keras_base_accepts(cls, unknown)):
            raise WorkbenchError(
                f"{self.kind} '{name}' takes no argument '{unknown[0]}': "
                f"{suggest(unknown[0], valid)}")
        for key, value in config.items():
            _check_argument_type(self.kind, name, key, value, params.get(key))
        kwargs = {k: v for k, v in (defaults or {}).items() if k in params and (
            not required_only or params[k].default is inspect.Parameter.empty)}
        kwargs.update(config)
        try:
            return cls(**kwargs)
        except (TypeError, ValueError) as error:
            raise WorkbenchError(f"{self.kind} '{name}' rejected its settings {config}: {error}")


def _check_argument_type(kind, name, key, value, param):
    """A value whose type cannot stand for the parameter's default (text for a number, a number
    for a flag) is bad input, caught here rather than inside training."""
    if (param is None or value is None or param.default is inspect.Parameter.empty
            or param.default is None):
        return  # None leaves the choice to the class, as its own default would
    default = param.default
    if isinstance(default, bool):
        ok = isinstance(value, bool)
    elif isinstance(default, (int, float)):
        ok = isinstance(value, (int, float)) and not isinstance(value, bool)
    else:
        return
    if not ok:
        raise WorkbenchError(f"{kind} '{name}' argument '{key}' must be "
                             f"{type(default).__name__ if isinstance(default, bool) else 'a number'}"
                             f" (like its default {default!r}), got {value!r}")


def _keras_base_accepts(cls, names):
    """Keras optimizers forward **kwargs to the base class; accept what the base class takes."""
    base_params = inspect.signature(keras.optimizers.Optimizer.__init__).parameters
    return all(n in base_params for n in names)


OPTIMIZERS = Registry(
    "optimizer", keras.optimizers.Optimizer,
    ["keras.optimizers", "workbench.optimizers"],
    exclude={"LossScaleOptimizer", "MultiOptimizer", "OptimizerWrapper"})

SCHEDULES = Registry(
    "schedule", keras.optimizers.schedules.LearningRateSchedule,
    ["keras.optimizers.schedules", "workbench.schedules"],
    aliases={"exponential": "exponential_decay", "cosine": "cosine_decay",
             "inverse_time": "inverse_time_decay", "polynomial": "polynomial_decay",
             "piecewise": "piecewise_constant_decay"})

CALLBACKS = Registry(
    "callback", keras.callbacks.Callback,
    # Workbench first: its EarlyStopping and ReduceLROnPlateau extend Keras' and take their names.
    ["workbench.callbacks", "keras.callbacks"],
    exclude={"CallbackList", "History", "ProgbarLogger"})

REGULARIZERS = Registry(
    "regularizer", keras.regularizers.Regularizer,
    ["workbench.regularizers", "keras.regularizers"])

# Schedule parameters that mean "how long the whole training is", filled in when not given.
_TOTAL_STEP_PARAMS = ("decay_steps", "total_steps", "first_decay_steps")
REGULARIZERS = Registry(
    "regularizer", keras.regularizers.Regularizer,
    ["workbench.regularizers", "keras.regularizers"])

# Schedule parameters that mean "the recipe's learning rate".
_PEAK_RATE_PARAMS = ("initial_learning_rate", "peak_learning_rate", "max_learning_rate")


def build_schedule(name, config, learning_rate, total_steps):
    """A schedule from its name; the recipe's learning rate and total steps fill the required
    arguments left unset (a warmup's optional starting rate keeps its own default)."""
    config = dict(config)
    inner = config.get("schedule")
    if isinstance(inner, str):  # wrappers such as Warmup(schedule=...) run the inner one later
        inner_steps = max(1, total_steps - int(config.get("warmup_steps", 0)))
        config["schedule"] = build_schedule(inner, config.pop("schedule_config", {}),
                                            learning_rate, inner_steps)
    defaults = {p: learning_rate for p in _PEAK_RATE_PARAMS}
    defaults.update({p: total_steps for p in _TOTAL_STEP_PARAMS})
    return SCHEDULES.build(name, config, defaults, required_only=True)


def build_optimizer(name, config, learning_rate):
    """An optimizer from its name; wrappers (`inner` argument) get their inner optimizer by name."""
    config = dict(config)
    cls = OPTIMIZERS.get(name)
    params = inspect.signature(cls.__init__).parameters
    wrapped = next((p for p in ("inner_optimizer", "inner") if p in params), None)
    if wrapped:
        # In a recipe the inner optimizer is named by `inner` (default adam) + `inner_config`.
        inner = config.pop("inner", config.pop(wrapped, "adam"))
        inner_config = config.pop("inner_config", {})
        if isinstance(inner, str):
            inner = build_optimizer(inner, inner_config, learning_rate)
        config[wrapped] = inner
        return OPTIMIZERS.build(name, config)
    return OPTIMIZERS.build(name, config, {"learning_rate": learning_rate})


def load_model(path):
    """`keras.models.load_model` in safe mode, with every workbench class registered first (a
    saved model may hold a workbench optimizer, schedule, regularizer or callback state)."""
    for registry in (OPTIMIZERS, SCHEDULES, REGULARIZERS, CALLBACKS):
        registry.table  # importing the modules registers their classes with Keras
    return keras.models.load_model(path, safe_mode=True)


def build_before_fit(model, dataset):
    """Create the model's, metrics' and optimizer's variables eagerly, from one batch's shapes.

    Keras does this itself under a distribution strategy; on the default strategy it defers it to
    the first trace of the train function, where every variable is created as a lifted
    initializer and TensorFlow traces the step twice (about half the first step's time for a
    keras.applications backbone). Keras' own symbolic build is used where it exists."""
    if keras.backend.backend() != "tensorflow" or getattr(model, "_distribute_strategy", None):
        return
    symbolic_build = getattr(model, "_symbolic_build", None)
    if symbolic_build is not None:
        symbolic_build(data_batch=next(iter(dataset)))
    elif model.optimizer is not None and not model.optimizer.built:
        model.optimizer.build(model.trainable_variables)


def apply_regularizer(model, name, config):
    """Put a fresh regularizer (by name) on the kernel of every layer that has one (Dense, Conv,
    ...), after the model is built: Keras adds each variable's penalty to the training loss, and
    the layer's config records it, so a saved model keeps it. Returns the layers changed."""
    changed = []
    for layer in model._flatten_layers(include_self=False):
        kernel = getattr(layer, "kernel", None)
        if kernel is None or not hasattr(layer, "kernel_regularizer"):
            continue
        # One instance per weight: some (L2-SP) remember the weight they anchor to.
        regularizer = REGULARIZERS.build(name, config)
        kernel.regularizer = regularizer
        layer.kernel_regularizer = regularizer
        changed.append(layer.name)
    return changed
