"""Typed settings sections of a recipe, and the valid choices for named settings.

Each section is a dataclass so `--set section.key=value` is type-checked against its annotation.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Optional

KNOWN_EXPORT_FORMATS = ("float32", "float16", "dynamic", "int8")
STRATEGIES = ("auto", "default", "one_device", "mirrored", "multi_worker", "tpu",
              "data_parallel", "model_parallel")
PRECISIONS = ("float32", "mixed_float16", "mixed_bfloat16")
LR_SCALING = ("linear", "sqrt", "none")
TUNERS = ("random", "grid", "bayesian", "hyperband")
PRUNE_SCHEDULES = ("polynomial", "constant")
PRUNE_STRUCTURES = ("unstructured", "2:4")
QUANTIZE_MODES = ("ptq_int8", "ptq_dynamic", "ptq_float16", "qat", "pqat")
CLUSTER_INITS = ("kmeans_plus_plus", "linear", "random", "density_based")


@dataclass
class EarlyStoppingSettings:
    """Stop when `monitor` has not improved for `patience` epochs; keep the best weights."""

    enabled: bool = True
    monitor: str = "val_loss"
    patience: int = 8
    min_delta: float = 0.0


@dataclass
class PlateauSettings:
    """Multiply the learning rate by `factor` after `patience` epochs without improvement."""

    enabled: bool = True
    monitor: str = "val_loss"
    factor: float = 0.5
    patience: int = 3
    min_lr: float = 1e-6
    min_delta: float = 1e-4


@dataclass
class ExportSettings:
    """Which TFLite variants the export stage writes, and how much data calibrates quantization.

    `formats` unset takes the task's default (float32 and int8 for the supervised family, float32
    and dynamic for language models); `representative_examples` training examples calibrate int8
    (and a language model's GPTQ / AWQ)."""

    formats: Optional[tuple[str, ...]] = None
    representative_examples: int = 256


@dataclass
class VerifySettings:
    """How the exported models are checked with the LiteRT interpreter.

    `max_examples` caps the held-out examples (a language model's validation windows; unset: the
    whole test split, or 1024 windows for a language model); `generate_tokens` greedy tokens per
    prompt compare a language model's LiteRT file with the Keras model (and time generation)."""

    max_examples: Optional[int] = None
    num_threads: int = 1
    generate_tokens: int = 32


@dataclass
class SearchSettings:
    """Hyperparameter search with KerasTuner: the model builder's `hp` plus workbench choices."""

    tuner: str = "random"
    max_trials: int = 6
    objective: Optional[str] = None
    epochs: int = 5
    executions_per_trial: int = 1
    # Workbench-level choices searched alongside the builder's own `hp` (empty = not searched).
    optimizers: tuple[str, ...] = ()
    learning_rate_min: Optional[float] = None
    learning_rate_max: Optional[float] = None
    schedules: tuple[str, ...] = ()
    batch_sizes: tuple[int, ...] = ()
    weight_decays: tuple[float, ...] = ()
    # Language models only: choices of `lm.warmup_steps`, and the optimizer steps each trial
    # trains (None: min(lm.steps, 200); a language model's trial counts steps, not `epochs`).
    warmup_steps: tuple[int, ...] = ()
    steps: Optional[int] = None
    hyperband_factor: int = 3


@dataclass
class PruneSettings:
    """Magnitude pruning with TF-MOT, fine-tuned with the recipe's optimizer and schedule.

    `structure="2:4"` zeroes two of every four consecutive input-channel weights (50%, whatever
    `target_sparsity` says); `layers` empty prunes every layer TF-MOT can prune.
    """

    target_sparsity: float = 0.8
    initial_sparsity: float = 0.0
    schedule: str = "polynomial"
    structure: str = "unstructured"
    layers: tuple[str, ...] = ()
    epochs: int = 4
    frequency: int = 10
    learning_rate_factor: float = 1.0


@dataclass
class QuantizeSettings:
    """Post-training quantization or quantization-aware training (QAT / pruning-preserving PQAT)
    for the supervised family (`mode`, `epochs`, `learning_rate_factor`); for language models the
    Keras `model.quantize` modes compared (`keras_modes`), the input channels sharing a scale in
    the 4-bit modes (`group_size`, -1: per channel), and whether each quantized model is offered to
    the LiteRT converter (`export_quantized`)."""

    mode: str = "ptq_int8"
    epochs: int = 2
    learning_rate_factor: float = 0.1
    keras_modes: tuple[str, ...] = ("int8", "int4", "gptq", "awq")
    group_size: int = 128
    export_quantized: bool = True


@dataclass
class ClusterSettings:
    """TF-MOT weight clustering: `clusters` shared values per layer; `preserve_sparsity` keeps a
    pruned model's zeros; `layers` empty clusters every layer TF-MOT can."""

    clusters: int = 16
    init: str = "kmeans_plus_plus"
    epochs: int = 2
    learning_rate_factor: float = 0.1
    layers: tuple[str, ...] = ()
    preserve_sparsity: bool = True


@dataclass
class DistillSettings:
    """Knowledge distillation from the trained model (teacher) into a student: the recipe's
    `student`, or for a language model a GPT of `student_layers` x `student_width` with
    `student_heads` (0: half the teacher's depth and width, its heads).

    `alpha` weighs the true labels against the teacher's distribution and `temperature` softens
    it (unset: the task's default, 0.1 and 3.0 supervised, 0.5 and 1.0 for language models).
    The supervised family trains `epochs` epochs; a language model `steps` steps at
    `learning_rate` (unset: 2e-3)."""

    alpha: Optional[float] = None
    temperature: Optional[float] = None
    epochs: int = 20
    steps: int = 500
    learning_rate: Optional[float] = None
    student_layers: int = 0
    student_width: int = 0
    student_heads: int = 0


@dataclass
class LRFindSettings:
    """The learning-rate range test (`--stages lr_find`): an exponential sweep of the rate."""

    min_lr: float = 1e-6
    max_lr: float = 1.0
    num_steps: int = 100
    suggest: str = "minimum"


@dataclass
class BatchGrowthSettings:
    """Grow the batch size by `factor` at the start of each epoch in `epochs` (Smith et al. 2017,
    "Don't decay the learning rate, increase the batch size"); empty `epochs` turns it off."""

    factor: float = 2.0
    epochs: tuple[int, ...] = ()
    max_batch_size: Optional[int] = None
