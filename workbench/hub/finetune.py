"""Fine-tuning a pretrained causal LM: which weights train (`finetune.mode`), the LoRA adapters,
and the train stage of the `causal_lm` family.

Modes:
- `lora`: every weight frozen; each target layer's kernel W gains trainable factors A (d x r) and
  B (r x k), zero-initialised B, so the layer computes x (W + (alpha / r) A B) (Hu et al. 2021).
  Keras' `layer.enable_lora(rank, lora_alpha)` on the layers KerasHub's
  `backbone.default_lora_layer_names()` names (attention query and value), or on
  `finetune.target_layers`. The target layers' biases stay frozen too, so the adapter file holds
  everything that changed.
- `qlora`: the same on a base whose linear layers Keras has quantized (`quantize("int8" |
  "int4")` on every `Dense` / `EinsumDense`; Dettmers et al. 2023, "QLoRA"); the adapters, the
  token embedding and the LM head stay float32 (`quantize_base` says why).
- `full`: every weight trains. `frozen_embeddings`: all but the token and position embeddings.

Outputs: `adapter.lora.h5` (KerasHub's `save_lora_weights` format, loadable onto the same preset
with `workbench.hub.load_adapter`) with `adapter.json` (the rank, alpha, targets and base it needs),
and the merged model (`model.keras`: `model.save` folds each adapter into its kernel).
"""

from __future__ import annotations

import contextlib
import gc
import json
import math
import resource
import sys
import tempfile
import warnings
from pathlib import Path

import numpy as np

from workbench.errors import WorkbenchError, suggest

ADAPTER_FILE = "adapter.lora.h5"
ADAPTER_CONFIG = "adapter.json"
LORA_WEIGHTS = ("lora_kernel_a", "lora_kernel_b")


def _weighted_layers(backbone):
    """The backbone's layers with weights, in the order KerasHub's adapter files index them."""
    return [layer for layer in backbone._flatten_layers(include_self=False) if layer.weights]


def adaptable_layer_names(backbone):
    return sorted({layer.name for layer in _weighted_layers(backbone)
                   if hasattr(layer, "enable_lora")})


def target_names(backbone, settings):
    return list(settings.target_layers or backbone.default_lora_layer_names())


def adapted_layer_names(backbone):
    """Names of the layers that carry adapters, each once."""
    layers = _weighted_layers(backbone)
    return sorted({layers[index].name for index in getattr(backbone, "_lora_enabled_layers", [])})


def _layer_width(layer):
    """The smaller side of a layer's weight matrix (its kernel read as inputs x outputs)."""
    kernel = getattr(layer, "embeddings", None)
    if kernel is None:
        kernel = layer.kernel
    shape = tuple(kernel.shape)
    inputs = getattr(layer, "_orig_input_dim", None) or shape[0]
    return min(int(inputs), int(math.prod(shape[1:])))


def check_targets(backbone, settings):
    """LoRA's targets must name adaptable layers, each at least `rank` wide."""
    names = target_names(backbone, settings)
    matched = [layer for layer in _weighted_layers(backbone)
               if layer.name in names and hasattr(layer, "enable_lora")]
    if not matched:
        available = adaptable_layer_names(backbone)
        missing = names[0] if names else ""
        raise WorkbenchError(
            f"finetune.target_layers {tuple(names)} match no adaptable layer of "
            f"{type(backbone).__name__} ({suggest(missing, available)})")
    narrowest = min(matched, key=_layer_width)
    if settings.rank > _layer_width(narrowest):
        raise WorkbenchError(
            f"finetune.rank {settings.rank} is larger than target layer '{narrowest.name}' is "
            f"wide ({_layer_width(narrowest)}); choose a rank of at most "
            f"{_layer_width(narrowest)}")
    return matched


def enable_adapters(backbone, rank, alpha=None, targets=None):
    """LoRA on `targets` (KerasHub's `enable_lora` with an alpha, and the targets' biases frozen),
    recorded on the backbone the way KerasHub's `save_lora_weights` reads it."""
    targets = list(targets or backbone.default_lora_layer_names())
    backbone.trainable = True
    for layer in backbone._flatten_layers(include_self=False):
        layer.trainable = False
    backbone._lora_enabled_layers = []
    backbone._lora_rank = int(rank)
    for index, layer in enumerate(_weighted_layers(backbone)):
        if layer.name in targets and hasattr(layer, "enable_lora"):
            layer.trainable = True
            layer.enable_lora(int(rank), lora_alpha=alpha)
            for variable in layer.trainable_weights:
                if not variable.path.endswith(LORA_WEIGHTS):
                    variable.trainable = False
            backbone._lora_enabled_layers.append(index)
    return backbone._lora_enabled_layers


def quantize_quietly(model, mode, filters=None):
    """Keras' `model.quantize`, without its warning for every layer it has nothing to do for."""
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=".*does not have a `quantize` method.*")
        model.quantize(mode, filters=filters)


def _is_linear(layer):
    from keras import layers

    return isinstance(layer, (layers.Dense, layers.EinsumDense))


def quantize_base(model, mode):
    """QLoRA's frozen base: Keras' `quantize(mode)` on the linear layers (`Dense`,
    `EinsumDense`: attention projections and feed-forward), the token embedding and the LM head
    left in float, as bitsandbytes' QLoRA leaves `nn.Embedding` and `lm_head`.

    Why not the embedding: Keras 3.15's int8 `ReversibleEmbedding`, called in reverse as the
    LM head, quantizes its input (the last hidden states) with `round` and a cast to int8 and has
    no custom gradient, so the loss's gradient reaches the hidden states only through the
    activations' abs-max scale. Every adapter then trains on a gradient that has nothing to do
    with the loss (cosine -0.4 to 0.14 against LoRA's; the validation loss rose 3.96 ->
    5.14 in 100 steps). The linear layers' int8 / int4 calls pass the inputs' gradient through
    the dequantized kernel (a straight-through estimator) and train the adapters correctly."""
    with _fewer_collections():
        quantize_quietly(model, mode, filters=_is_linear)


# Kernels deleted between two real garbage collections while a base is quantized.
COLLECT_EVERY = 16


@contextlib.contextmanager
def _fewer_collections():
    """Keras' `Layer.__delattr__` runs a full `gc.collect()` for every variable it deletes, and
    `quantize` deletes every float kernel: half a second each in a process that holds TensorFlow
    (7 of the 8 s it took to quantize 12 layers). Here one collection in `COLLECT_EVERY` runs,
    and one at the end, so at most that many float kernels wait to be freed."""
    collect, calls = gc.collect, [0]

    def every_few(*args, **kwargs):
        calls[0] += 1
        return collect(*args, **kwargs) if calls[0] % COLLECT_EVERY == 0 else 0

    gc.collect = every_few
    try:
        yield
    finally:
        gc.collect = collect
        collect()


def apply_mode(model, settings):
    """Make `model` (a wrapped preset) train the way `settings.mode` says."""
    from keras import layers

    from workbench.hub.model import causal_lm_of

    causal_lm = causal_lm_of(model)
    backbone = causal_lm.backbone
    mode = settings.mode
    if mode == "qlora":
        quantize_base(causal_lm, settings.base_quantization)
    if mode in ("lora", "qlora"):
        enable_adapters(backbone, settings.rank, settings.alpha,
                        target_names(backbone, settings))
    elif mode == "full":
        backbone.trainable = True
    elif mode == "frozen_embeddings":
        backbone.trainable = True
        for layer in backbone._flatten_layers(include_self=False):
            if isinstance(layer, layers.Embedding) or "position_embedding" in layer.name:
                layer.trainable = False
    else:
        raise WorkbenchError(f"unknown finetune.mode '{mode}'")


def trainable_parameters(model):
    return int(sum(math.prod(v.shape) for v in model.trainable_weights))


def total_parameters(model):
    return int(sum(math.prod(v.shape) for v in model.weights))


def optimizer_state_bytes(optimizer):
    """Bytes of the optimizer's slots (moments, accumulators), its step counters left out."""
    total = 0
    for variable in optimizer.variables:
        if len(variable.shape) == 0:
            continue
        total += math.prod(variable.shape) * np.dtype(variable.dtype).itemsize
    return int(total)


def peak_rss_bytes():
    """The process's peak resident memory so far (Linux reports KiB, macOS bytes)."""
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return int(peak if sys.platform == "darwin" else peak * 1024)


def save_adapter(model, run_dir, settings, preset):
    """`adapter.lora.h5` and `adapter.json` into the run directory (atomically)."""
    from workbench.hub.model import backbone_of

    backbone = backbone_of(model)
    with run_dir.atomic(ADAPTER_FILE) as temp:
        # KerasHub insists on the .lora.h5 ending.
        real = Path(str(temp) + ".lora.h5")
        backbone.save_lora_weights(str(real))
        real.replace(temp)
    config = {"preset": str(preset), "family": type(backbone).__name__, "mode": settings.mode,
              "rank": settings.rank, "alpha": settings.alpha,
              "target_layers": target_names(backbone, settings),
              "base_quantization": settings.base_quantization if settings.mode == "qlora"
              else None}
    run_dir.write_text(ADAPTER_CONFIG, json.dumps(config, indent=2) + "\n")
    return str(run_dir / ADAPTER_FILE)


def load_adapter(adapter_path, preset=None):
    """The preset's `CausalLM` with a saved adapter on it (`adapter.json` beside the file says
    which preset, rank, alpha, targets and QLoRA base)."""
    from workbench.hub.presets import check_preset, load_causal_lm

    adapter_path = Path(adapter_path)
    config = json.loads((adapter_path.parent / ADAPTER_CONFIG).read_text())
    causal_lm = load_causal_lm(check_preset(preset or config["preset"]))
    if config.get("base_quantization"):
        quantize_base(causal_lm, config["base_quantization"])
    enable_adapters(causal_lm.backbone, config["rank"], config.get("alpha"),
                    config["target_layers"])
    causal_lm.backbone.load_lora_weights(str(adapter_path))
    return causal_lm


def merged_copy(model):
    """`model` with every adapter folded into its kernel: saved and loaded back, as `model.keras`
    will be."""
    import keras

    with tempfile.TemporaryDirectory() as folder, warnings.catch_warnings():
        # KerasHub's task models compile themselves; the merged copy is for inference and is
        # loaded uncompiled.
        warnings.filterwarnings("ignore", message=".*compile.*")
        path = Path(folder) / "merged.keras"
        model.save(str(path))
        merged = keras.models.load_model(path, compile=False, safe_mode=True)
    merged.trainable = True  # a plain model again: every weight trainable, no adapters
    own_dtype_policies(merged)
    return merged


def own_dtype_policies(model):
    """Give each quantized layer of a loaded model its own dtype policy back.

    Keras 3.15 loads a quantized KerasHub backbone with every layer holding the backbone's
    `DTypePolicyMap`, and `Dense` / `EinsumDense.save_own_variables` ask that map (not the
    layer) for the quantization mode, get `None`, and write no kernel scale, so saving the model
    again fails ("Invalid dtype: object"). The map's entry for the layer is the policy it was
    quantized with."""
    from keras.dtype_policies import DTypePolicyMap

    for layer in model._flatten_layers():
        policy = getattr(layer, "_dtype_policy", None)
        if isinstance(policy, DTypePolicyMap) and layer.quantization_mode is not None:
            layer._dtype_policy = policy[layer.path]
    return model


def save_preset(model, run_dir, info, name="preset"):
    """The fine-tuned model as a KerasHub preset directory (with the preset's tokenizer and
    preprocessor), so `keras_hub.models.CausalLM.from_preset(DIR)` loads it."""
    import shutil

    from workbench.hub.model import causal_lm_of

    from workbench.hub.presets import with_preprocessor

    complete = with_preprocessor(
        causal_lm_of(model), info.causal_lm_class.preprocessor_cls.from_preset(str(info.path)))
    target = run_dir.path / name
    temp = Path(tempfile.mkdtemp(prefix=f".{name}.", dir=run_dir.path))
    try:
        complete.save_to_preset(str(temp))
        if target.exists():
            shutil.rmtree(target)
        temp.rename(target)
    finally:
        shutil.rmtree(temp, ignore_errors=True)
    return str(target)


def max_logit_difference(first, second, windows):
    import keras

    a = keras.ops.convert_to_numpy(first(windows, training=False))
    b = keras.ops.convert_to_numpy(second(windows, training=False))
    return float(np.max(np.abs(a.astype(np.float64) - b.astype(np.float64))))
