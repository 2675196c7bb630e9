"""Sharded training on the JAX backend through `keras.distribution`.

Two `--strategy` names place a model over all of JAX's devices (`keras.distribution.list_devices`;
`JAX_NUM_CPU_DEVICES=8` makes eight of one CPU):

- `data_parallel`: a `(n,)` mesh, axis `batch`; every device holds the whole model and each batch
  is split n ways;
- `model_parallel`: a `(1, n)` mesh, axes `batch, model`; the embedding, attention and MLP kernels
  are split n ways and every device sees the whole batch.

`model_parallel` shards Megatron style (Shoeybi et al. 2019, arXiv:1909.08053): the projections
into attention and into the MLP are column-parallel (their output dimension is split), the two
projections back into the residual stream are row-parallel (their input dimension is split), so
each block needs one all-reduce after attention and one after the MLP; the token embedding is split
over the vocabulary (or over the width when the vocabulary does not divide). JAX's GSPMD partitioner
inserts the collectives, so the result is the single-device computation whatever the split.

The layouts are regular expressions over `variable.path`, the key Keras' `LayoutMap` matches with
`re.fullmatch`:

- the workbench's GPT (`workbench.lm.model.GPT`): `qkv`, `mlp_in` column-, `attention_output`,
  `mlp_out` row-parallel;
- KerasHub decoders named like GPT-2 (`transformer_layer_N/self_attention/{query,key,value}`,
  `attention_output`, `feedforward_{intermediate,gate,output}_dense`): the heads are split;
- a KerasHub backbone whose class ships `get_layout_map` (Llama, Qwen, Gemma, ...): that map.

A dimension is split only when it divides by the size of the mesh axes it is split over: where it
does not, the next listed layout is tried and otherwise the variable is kept whole (replicated),
which is always correct and costs only memory. Variables no layout names (norms, biases of
row-parallel layers, optimizer counters) are replicated.

`ModelParallel` needs the layouts before the variables exist, and nothing here needs the model in
advance: `make_distribution("model_parallel")` answers from the rules above by name and shape as
each variable is created inside `distribution.scope()`. With a model at hand,
`layout_map(model, mesh)` resolves them for its variables into a plain Keras `LayoutMap` (the
KerasHub family's own map where it has one), and `model_parallel_for(build_fn)` builds the model
once to read them.

    distribution = make_distribution("model_parallel")
    with distribution.scope():
        model = build_gpt(...)          # kernels sharded as they are created
        model.compile(...)
        model.fit(...)                  # the distribution must be current while the model runs
"""

from __future__ import annotations

import contextlib
import math
import re

import keras

from workbench.errors import WorkbenchError

JAX_STRATEGIES = ("data_parallel", "model_parallel")
BATCH, MODEL = "batch", "model"

# A path may sit under an enclosing layer's name when a model is built inside another's `build`.
_PREFIX = r"(?:.*/)?"
_EMBEDDING = ((MODEL, None), (None, MODEL))  # over the vocabulary, else over the width
_COLUMN = ((None, MODEL),)
_ROW = ((MODEL, None),)

# (pattern, layouts to try in order); the first pattern that matches a path decides.
WORKBENCH_GPT_RULES = (
    (r"token_embedding/embeddings", _EMBEDDING),
    (r"position_embedding/embeddings", _COLUMN),
    (r"transformer_layer_\d+/(qkv|mlp_in)/kernel", _COLUMN),
    (r"transformer_layer_\d+/(attention_output|mlp_out)/kernel", _ROW),
)
# KerasHub's TransformerDecoder (GPT-2, and the workbench GPT's `block="keras_hub"`) and the
# decoders that share its names (Llama, Qwen, Mistral): EinsumDense q/k/v kernels are
# (hidden, heads, head_dim), the output projection (heads, head_dim, hidden).
KERAS_HUB_DECODER_RULES = (
    (r"token_embedding/embeddings", _EMBEDDING),
    (r"position_embedding/embeddings", _COLUMN),
    (r"transformer_layer_\d+/self_attention/(query|key|value)/kernel",
     ((None, MODEL, None), (None, None, MODEL))),
    (r"transformer_layer_\d+/self_attention/(query|key|value)/bias",
     ((MODEL, None), (None, MODEL))),
    (r"transformer_layer_\d+/self_attention/attention_output/kernel",
     ((MODEL, None, None), (None, MODEL, None))),
    (r"transformer_layer_\d+/feedforward_(intermediate|gate)_dense/kernel", _COLUMN),
    (r"transformer_layer_\d+/feedforward_(intermediate|gate)_dense/bias", ((MODEL,),)),
    (r"transformer_layer_\d+/feedforward_output_dense/kernel", _ROW),
)


def device_mesh(kind, devices=None):
    """The `DeviceMesh` for `kind` over `devices` (all of `keras.distribution.list_devices()`)."""
    _check_kind(kind)
    devices = list(devices) if devices is not None else keras.distribution.list_devices()
    if kind == "data_parallel":
        return keras.distribution.DeviceMesh((len(devices),), (BATCH,), devices)
    return keras.distribution.DeviceMesh((1, len(devices)), (BATCH, MODEL), devices)


def fits(axes, shape, mesh):
    """Whether `axes` (one mesh axis name, tuple of names or None per dimension) splits `shape`
    evenly over `mesh`."""
    if len(axes) != len(shape):
        return False
    sizes = dict(zip(mesh.axis_names, mesh.shape))
    for size, axis in zip(shape, axes):
        names = () if axis is None else (axis,) if isinstance(axis, str) else tuple(axis)
        if any(name not in sizes for name in names) or size % math.prod(
                sizes[name] for name in names):
            return False
    return True


def choose_axes(rules, path, shape, mesh):
    """The first layout of the first rule matching `path` that fits `shape`, or None (replicate)."""
    for pattern, layouts in rules:
        if re.fullmatch(_PREFIX + pattern, path):
            return next((tuple(axes) for axes in layouts if fits(axes, shape, mesh)), None)
    return None


class EvenDataParallel(keras.distribution.DataParallel):
    """`DataParallel` that gives a batch whose size does not divide by the device count to every
    device whole (JAX cannot split it unevenly), so an odd-sized validation set still runs.

    Keras' JAX trainer keeps the layout of an epoch's first batch for the rest of it, so a short
    last batch after full ones must still divide; the training batch is checked up front
    (`check_jax_strategy`)."""

    def get_data_layout(self, data_shape):
        if data_shape and data_shape[0] % self.device_mesh.devices.size:
            return keras.distribution.TensorLayout((None,) * len(data_shape), self.device_mesh)
        return super().get_data_layout(data_shape)


class ShardedModelParallel(keras.distribution.ModelParallel):
    """`ModelParallel` that lays out each variable from `rules` by its path and shape as it is
    created (see the module docstring), so no model is needed in advance.

    Args:
        rules: `(pattern, layouts)` pairs; a pattern is matched against `variable.path` (an
            enclosing layer's name may come first); the first layout that divides the variable's
            shape is used, and a variable no rule fits is replicated.
        mesh: a `DeviceMesh` with a `batch` axis and the axes the layouts name.
    """

    def __init__(self, rules, mesh, batch_dim_name=BATCH):
        # An empty LayoutMap: no intermediate tensor is relaid (`get_tensor_layout` is None).
        super().__init__(layout_map=keras.distribution.LayoutMap(mesh),
                         batch_dim_name=batch_dim_name)
        self.rules = tuple(rules)
        self.sharded = []  # (path, axes) of every variable split so far, in creation order
        self.whole = []  # paths of the variables of rank 2 or more kept whole

    def get_variable_layout(self, variable):
        if getattr(variable, "_layout", None) is not None:  # optimizer slots follow their weight
            return variable._layout
        shape = tuple(variable.shape)
        axes = choose_axes(self.rules, variable.path, shape, self.device_mesh)
        if axes is not None and any(axis is not None for axis in axes):
            self.sharded.append((variable.path, axes))
        else:
            axes = (None,) * len(shape)
            if len(shape) >= 2:
                self.whole.append(variable.path)
        return keras.distribution.TensorLayout(axes, self.device_mesh)


def combined_rules(mesh):
    """The rules `model_parallel` uses without a model: the workbench GPT's, then KerasHub's
    decoder names, then the maps of the KerasHub classes with `get_layout_map` for the names
    those do not share (Gemma's `decoder_block_N`, the mixture-of-experts kernels); the first
    pattern that matches a path decides."""
    rules = dict(WORKBENCH_GPT_RULES + KERAS_HUB_DECODER_RULES)  # dicts keep the order
    for backbone in _layout_map_backbones():
        for pattern, layout in _family_layout_map(backbone, mesh).items():
            rules.setdefault(pattern, (tuple(layout.axes),))
    return tuple(rules.items())


def layout_map(model, mesh):
    """A `keras.distribution.LayoutMap` of `model`'s variables (exact paths) that `mesh`'s `model`
    axis shards: the workbench GPT and KerasHub's GPT-2 by the Megatron rules above, a KerasHub
    backbone with `get_layout_map` by its class's map. A kernel whose split dimension does not
    divide by the axis size is left out (replicated). Any other model is a `WorkbenchError`."""
    family, inner = _family(model)
    if family == "layout_map":
        class_map = _family_layout_map(type(inner), mesh)
        chosen = {}
        for variable in inner.weights:
            layout = class_map[variable.path]  # Keras' own lookup: exact key, else one pattern
            if layout is not None and fits(layout.axes, tuple(variable.shape), mesh):
                chosen[variable.path] = tuple(layout.axes)
    else:
        rules = WORKBENCH_GPT_RULES + KERAS_HUB_DECODER_RULES
        chosen = {variable.path: choose_axes(rules, variable.path, tuple(variable.shape), mesh)
                  for variable in inner.weights}
    result = keras.distribution.LayoutMap(mesh)
    for path, axes in chosen.items():
        if axes is not None and any(axis is not None for axis in axes):
            result[re.escape(path)] = tuple(axes)
    return result


def make_distribution(kind, model=None, devices=None):
    """`DataParallel` (`EvenDataParallel`) or `ModelParallel` for `kind` over `devices` (all by
    default).

    For `model_parallel`, `model` (built outside the distribution, with the names the model built
    inside it will have) resolves the layouts into a plain Keras `ModelParallel`; without it the
    layouts come from the rules as the variables are created (`ShardedModelParallel`)."""
    mesh = device_mesh(kind, devices)
    if kind == "data_parallel":
        return EvenDataParallel(device_mesh=mesh)
    if model is not None:
        return keras.distribution.ModelParallel(layout_map=layout_map(model, mesh),
                                                batch_dim_name=BATCH)
    return ShardedModelParallel(combined_rules(mesh), mesh)


def model_parallel_for(build_fn, devices=None):
    """`ModelParallel` for the model `build_fn()` returns: builds it once, unsharded, to read its
    variables' paths and shapes (its layers need fixed names, as KerasHub's and the workbench
    GPT's have), then build it again inside the distribution's scope."""
    current = keras.distribution.distribution()
    keras.distribution.set_distribution(None)
    try:
        model = build_fn()
    finally:
        keras.distribution.set_distribution(current)
    return make_distribution("model_parallel", model, devices)


class DistributionStrategy:
    """The part of the `tf.distribute.Strategy` interface the workbench uses, over a
    `keras.distribution` distribution: `scope()`, `num_replicas_in_sync`, plus `distribution`
    (the Keras object) and `kind`.

    `num_replicas_in_sync` is 1: under `keras.distribution` the recipe's batch is the global
    batch, which the distribution splits over the mesh's `batch` axis, so neither the batch size
    nor the learning rate is scaled by the device count (the scaling rule of distribute.py is for
    `tf.distribute`'s per-replica batches).

    A Keras distribution must be current whenever a sharded model runs (`fit`, `evaluate`,
    `predict`), not only while it is built; `activate()` makes it the process's distribution, as
    the CLI does for its one run.

    Under `model_parallel` a `scope()` that created a model's variables and split none of them
    raises `WorkbenchError`: the model is not one the layouts know (or none of its dimensions
    divides by the device count)."""

    def __init__(self, kind, devices=None):
        _check_kind(kind)
        self.kind = kind
        self.distribution = make_distribution(kind, devices=devices)

    @property
    def num_replicas_in_sync(self):
        return 1

    @property
    def device_count(self):
        return int(self.distribution.device_mesh.devices.size)

    @contextlib.contextmanager
    def scope(self):
        distribution = self.distribution
        tracked = isinstance(distribution, ShardedModelParallel)
        before = (len(distribution.sharded), len(distribution.whole)) if tracked else None
        with distribution.scope():
            yield self
        if tracked and len(distribution.sharded) == before[0] \
                and len(distribution.whole) > before[1]:
            raise WorkbenchError(
                f"strategy 'model_parallel' split none of this model's variables over "
                f"{self.device_count} devices (e.g. '{distribution.whole[before[1]]}': no layout "
                "names it, or its dimensions do not divide): it shards the workbench GPT and "
                "KerasHub's GPT-2, Llama, Qwen and Gemma families; use --strategy data_parallel, "
                "which works for every model")

    def activate(self):
        """Make the distribution current for the rest of the process; return self."""
        keras.distribution.set_distribution(self.distribution)
        return self

    def __repr__(self):
        return f"DistributionStrategy({self.kind!r}, {self.device_count} devices)"


def check_jax_strategy(name, backend, device_count, batch_size=None):
    """`data_parallel` / `model_parallel` asked of another backend, or a `data_parallel` batch that
    does not split over the devices, is bad input. `model_parallel` takes any device count (one
    is the unsharded model); kernels that do not divide by it stay whole."""
    if name not in JAX_STRATEGIES:
        return
    if backend != "jax":
        raise WorkbenchError(
            f"strategy '{name}' shards with keras.distribution and needs the JAX backend "
            f"(KERAS_BACKEND=jax), but KERAS_BACKEND is '{backend}'; on TensorFlow use a "
            "tf.distribute strategy such as --strategy mirrored")
    if name == "data_parallel" and batch_size is not None and batch_size % device_count:
        raise WorkbenchError(
            f"strategy 'data_parallel' splits each batch over {device_count} devices, but "
            f"batch_size is {batch_size}; set batch_size to a multiple of {device_count}")


def _check_kind(kind):
    if kind not in JAX_STRATEGIES:
        raise WorkbenchError(f"unknown keras.distribution strategy '{kind}' "
                             f"(valid: {', '.join(JAX_STRATEGIES)})")


def _layout_map_backbones():
    import keras_hub

    found = (getattr(keras_hub.models, name) for name in sorted(dir(keras_hub.models))
             if name.endswith("Backbone"))
    return [cls for cls in found if callable(getattr(cls, "get_layout_map", None))]


def _family_layout_map(backbone_class, mesh):
    return backbone_class.get_layout_map(mesh, model_parallel_dim_name=MODEL,
                                         data_parallel_dim_name=BATCH)


def _layers_within(model):
    """`model`, its `backbone` and every layer nested in it, outermost first."""
    seen, stack = set(), [model]
    while stack:
        layer = stack.pop(0)
        if id(layer) in seen:
            continue
        seen.add(id(layer))
        yield layer
        inner = getattr(layer, "backbone", None)
        stack += ([inner] if isinstance(inner, keras.layers.Layer) else [])
        stack += list(getattr(layer, "layers", None) or [])


def _family(model):
    """`(family, layer)`: which layouts `model` takes, and the (maybe nested) layer they are for."""
    import keras_hub

    for layer in _layers_within(model):
        # The workbench GPT by its registered name: this module sits below workbench.lm.
        if keras.saving.get_registered_name(type(layer)) == "workbench>GPT":
            return "rules", layer
        if isinstance(layer, keras_hub.models.Backbone):
            if hasattr(type(layer), "get_layout_map"):
                return "layout_map", layer
            if isinstance(layer, keras_hub.models.GPT2Backbone):
                return "rules", layer
    raise WorkbenchError(
        f"model_parallel has no layout for model '{model.name}' ({type(model).__name__}): it "
        "shards the workbench GPT, KerasHub's GPT-2 and the KerasHub backbones with "
        "get_layout_map (Llama, Qwen, Gemma, ...); data_parallel works for every model")
