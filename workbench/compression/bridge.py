"""Rebuild a Keras 3 model as an identical tf_keras model, and back.

TF-MOT (pruning, quantization-aware training) only accepts tf_keras (Keras 2) models, while every
model in the workbench is Keras 3. `to_tf_keras` builds a twin with the same graph, layer names,
configs and weights, so the twin computes the same outputs; `from_tf_keras` goes the other way,
which is how pruned weights come home. Both check the whole model before building anything: a
layer that cannot be translated exactly is an `UntranslatableLayerError`, never an approximation.

How: every layer is rebuilt from its own config, translated argument by argument
(`layer_translation`); the graph is replayed node by node so multi-input/-output models, shared
layers and nested models keep their exact wiring; then each layer's weights are copied over, with
shapes checked.

Example:

```python
twin = to_tf_keras(model)  # a tf_keras model, ready for tfmot
back = from_tf_keras(twin)  # a Keras 3 model again
```
"""

import sys

import keras
import numpy as np
import tensorflow as tf

from workbench.errors import WorkbenchError
from workbench.compression.layer_translation import (
    LAYER_RULES,
    TranslationProblem,
    translate_layer_config,
)

SUPPORTED_LAYERS = frozenset(LAYER_RULES)
"""Class names of the built-in layers the bridge translates (identical on both sides)."""

_LISTED_PROBLEMS = 10


class UntranslatableLayerError(WorkbenchError, ValueError):
    """A model holds a layer that the bridge cannot rebuild exactly on the other side.

    Attributes:
        layer_name: name of the first offending layer.
        layer_class: its class, as `module.QualifiedName`.
        problems: every offending layer, as `(layer_name, layer_class, reason)` tuples.
    """

    def __init__(self, problems, *, model_name, target_name):
        self.problems = list(problems)
        self.layer_name, self.layer_class, _ = self.problems[0]
        shown = self.problems[:_LISTED_PROBLEMS]
        listing = "".join(f"\n  - layer {name!r} ({cls}): {reason}" for name, cls, reason in shown)
        if len(self.problems) > len(shown):
            listing += f"\n  - ... and {len(self.problems) - len(shown)} more"
        super().__init__(
            f"Cannot rebuild model {model_name!r} as a {target_name} model: layer "
            f"{self.layer_name!r} ({self.layer_class}) has no exact translation"
            f"{f' (nor do {len(self.problems) - 1} more)' if len(self.problems) > 1 else ''}. "
            f"Use built-in Keras layers with arguments both libraries share (see "
            f"workbench.compression.SUPPORTED_LAYERS), or leave this model out of "
            f"pruning/quantization.{listing}"
        )


def _class_path(obj):
    cls = type(obj)
    for package in ("keras", "tf_keras"):
        public = sys.modules.get(package)
        if public is not None and getattr(public.layers, cls.__name__, None) is cls:
            return f"{package}.layers.{cls.__name__}"
    return f"{cls.__module__}.{cls.__qualname__}"


class _Keras3:
    """Where Keras 3 keeps a model's graph."""

    name = "Keras 3"

    def __init__(self):
        from keras.src.models.functional import Functional

        self.package = keras
        self.functional_type = Functional
        self.tensor_type = keras.KerasTensor

    def is_built(self, model):
        return model.built and bool(getattr(model, "_functional", True))

    def node_parts(self, node):
        return node.operation, node.arguments.args, node.arguments.kwargs, list(node.outputs)

    def structure(self, model):
        return model._inputs_struct, model._outputs_struct


class _TfKeras:
    """Where tf_keras keeps a model's graph."""

    name = "tf_keras"

    def __init__(self):
        import tf_keras
        from tf_keras.src.engine.functional import Functional
        from tf_keras.src.engine.keras_tensor import KerasTensor

        self.package = tf_keras
        self.functional_type = Functional
        self.tensor_type = KerasTensor

    def is_built(self, model):
        return model.built and getattr(model, "_is_graph_network", False)

    def node_parts(self, node):
        return node.layer, node.call_args, node.call_kwargs, tf.nest.flatten(node.outputs)

    def structure(self, model):
        return model._nested_inputs, model._nested_outputs


def _is_auto_mask(mask, tensor):
    """Whether `mask` is just the mask `tensor` already carries (as a layer call fills it in)."""
    carried = tf.nest.map_structure(lambda t: getattr(t, "_keras_mask", None), tensor)
    flat_mask, flat_carried = tf.nest.flatten(mask), tf.nest.flatten(carried)
    return len(flat_mask) == len(flat_carried) and all(
        a is b for a, b in zip(flat_mask, flat_carried)
    )


class _Rebuild:
    """One translation of one model: check everything, build the twin, copy the weights."""

    def __init__(self, source, target):
        self.source = source
        self.target = target
        self.twins = {}  # id(source layer or model) -> its twin
        self.originals = {}  # id(source layer or model) -> the source object, kept alive

    def __call__(self, model):
        problems = []
        self._check(model, problems)
        if problems:
            raise UntranslatableLayerError(
                problems, model_name=model.name, target_name=self.target.name
            )
        twin = self._rebuild_model(model)
        self._copy_weights()
        return twin

    def _is_model(self, obj):
        return isinstance(obj, self.source.package.Model)

    def _is_sequential(self, model):
        return isinstance(model, self.source.package.Sequential)

    def _call_of(self, node):
        """A node's layer and call arguments, without what the layer call filled in by itself.

        Keras 3 records the mask it propagated and the `training` value it resolved as if the
        caller had passed them. Passed explicitly to the twin they would freeze: the mask would
        pull Keras 3's mask-computing ops into the graph, and `training=False` would keep dropout
        and batch statistics in inference mode even while TF-MOT fine-tunes. Both libraries
        propagate masks and the training phase on their own, so only real choices are kept.
        """
        layer, args, kwargs, outputs = self.source.node_parts(node)
        kwargs = dict(kwargs or {})
        if "mask" in kwargs and args and _is_auto_mask(kwargs["mask"], args[0]):
            del kwargs["mask"]
        if kwargs.get("training", True) in (None, False):
            del kwargs["training"]
        return layer, list(args or ()), kwargs, outputs

    def _graph_nodes(self, model):
        """The nodes the model's outputs depend on, deepest first."""
        needed, stack = set(), list(tf.nest.flatten(self.source.structure(model)[1]))
        while stack:
            layer, node_index, _ = stack.pop()._keras_history
            node = layer._inbound_nodes[node_index]
            if id(node) in needed:
                continue
            needed.add(id(node))
            _, args, kwargs, _ = self._call_of(node)
            stack.extend(
                t for t in tf.nest.flatten((args, kwargs)) if isinstance(t, self.source.tensor_type)
            )
        return [
            node
            for depth in sorted(model._nodes_by_depth, reverse=True)
            for node in model._nodes_by_depth[depth]
            if id(node) in needed
        ]

    def _members(self, model):
        if self._is_sequential(model):
            return [model.inputs[0]._keras_history[0]] + list(model.layers)
        # Inputs first and always: an input no output depends on is still part of the signature.
        members = [x._keras_history[0] for x in model.inputs]
        for node in self._graph_nodes(model):
            layer = self._call_of(node)[0]
            if all(layer is not seen for seen in members):
                members.append(layer)
        return members

    def _check(self, model, problems):
        self.originals[id(model)] = model
        if type(model) not in (self.source.functional_type, self.source.package.Sequential):
            problems.append(
                (
                    model.name,
                    _class_path(model),
                    (
                        "is a subclassed model; only Sequential and Functional models have a "
                        "graph the bridge can copy"
                    ),
                )
            )
            return
        if not self.source.is_built(model):
            problems.append(
                (
                    model.name,
                    _class_path(model),
                    (
                        "is not built, so it has no weights to copy yet; give it an Input or "
                        "call it on data once"
                    ),
                )
            )
            return
        for member in self._members(model):
            if id(member) in self.originals:
                continue
            if self._is_model(member):
                self._check(member, problems)
                continue
            self.originals[id(member)] = member
            try:
                self.twins[id(member)] = self._translate_layer(member)
            except TranslationProblem as problem:
                problems.append((member.name, _class_path(member), str(problem)))

    def _translate_layer(self, layer):
        cls = type(layer)
        layers = self.source.package.layers
        if not isinstance(layer, layers.Layer):
            raise TranslationProblem(
                "is a raw operation (a keras.ops call or tensor arithmetic on symbolic tensors), "
                "not a layer; express it with a built-in layer (e.g. keras.layers.Add) so it can "
                "be translated"
            )
        if getattr(layers, cls.__name__, None) is not cls:
            raise TranslationProblem(
                "is not a built-in Keras layer class (a custom layer or a subclass); the bridge "
                f"cannot know that a {self.target.name} layer would compute the same thing"
            )
        try:
            source_config = layer.get_config()
        except NotImplementedError as error:
            raise TranslationProblem(f"its config cannot be read: {error}") from None
        config = translate_layer_config(
            cls.__name__,
            source_config,
            to_tf_keras=self.target.name == "tf_keras",
            layer=layer,
            target=self.target.package,
        )
        try:
            return getattr(self.target.package.layers, cls.__name__).from_config(config)
        except (TypeError, ValueError) as error:
            raise TranslationProblem(
                f"{self.target.name} rejected the translated config: {error}"
            ) from None

    def _twin_of(self, obj):
        if self._is_model(obj):
            return self._rebuild_model(obj)
        return self.twins[id(obj)]

    def _rebuild_model(self, model):
        if id(model) in self.twins:
            return self.twins[id(model)]
        if self._is_sequential(model):
            twin = self.target.package.Sequential(
                [self._twin_of(layer) for layer in self._members(model)], name=model.name
            )
        else:
            twin = self._replay_graph(model)
        if not model.trainable:
            twin.trainable = False
        self.twins[id(model)] = twin
        return twin

    def _replay_graph(self, model):
        tensors = {id(x): self._twin_of(x._keras_history[0]).output for x in model.inputs}

        def to_twin(value):
            if isinstance(value, self.source.tensor_type):
                return tensors[id(value)]
            return value

        for node in self._graph_nodes(model):
            if node.is_input:
                continue
            layer, args, kwargs, outputs = self._call_of(node)
            args, kwargs = tf.nest.map_structure(to_twin, (args, kwargs))
            results = self._twin_of(layer)(*args, **kwargs)
            for source_tensor, twin_tensor in zip(outputs, tf.nest.flatten(results)):
                tensors[id(source_tensor)] = twin_tensor
        inputs, outputs = self.source.structure(model)
        return self.target.package.Model(
            inputs=tf.nest.map_structure(to_twin, inputs),
            outputs=tf.nest.map_structure(to_twin, outputs),
            name=model.name,
        )

    def _copy_weights(self):
        for key, twin in self.twins.items():
            layer = self.originals[key]
            if not self._is_model(layer):
                _copy_layer_weights(layer, twin)


def _copy_layer_weights(source_layer, target_layer):
    values = source_layer.get_weights()
    expected = [tuple(w.shape) for w in target_layer.weights]
    if [tuple(np.shape(v)) for v in values] != expected:
        raise ValueError(
            f"Layer {source_layer.name!r}: its weights have shapes "
            f"{[tuple(np.shape(v)) for v in values]}, but the layer they go to expects {expected}. "
            f"Copy weights only between a model and its bridged twin."
        )
    target_layer.set_weights(values)
    # Layers such as Normalization cache tensors derived from their weights when built.
    finalize_state = getattr(target_layer, "finalize_state", None)
    if finalize_state is not None:
        finalize_state()


def to_tf_keras(model):
    """Returns a tf_keras twin of a Keras 3 Sequential or Functional model.

    The twin has the same graph, layer names and configs, and a copy of every weight, so it
    computes the same outputs. Nested models become nested tf_keras models; shared layers stay
    shared.

    Args:
        model: a built Keras 3 `keras.Sequential` or Functional `keras.Model`.

    Returns:
        A `tf_keras.Model` (a `tf_keras.Sequential` for a Sequential model).

    Raises:
        UntranslatableLayerError: before anything is built, naming every layer (custom classes,
            raw `keras.ops` calls, arguments tf_keras lacks) that cannot be rebuilt exactly.
    """
    return _Rebuild(_Keras3(), _TfKeras())(model)


def from_tf_keras(model):
    """Returns a Keras 3 twin of a tf_keras Sequential or Functional model; see `to_tf_keras`.

    A model that TF-MOT has wrapped must be stripped first (`tfmot.sparsity.keras.strip_pruning`),
    since the wrappers are not Keras layers.
    """
    return _Rebuild(_TfKeras(), _Keras3())(model)


def copy_weights(source, target):
    """Copies weights layer by layer, by layer name, between a model and its bridged twin.

    Works in either direction (Keras 3 <-> tf_keras) and through nested models; use it to put
    pruned weights back into the original Keras 3 model instead of building a new one.

    Raises:
        ValueError: the two models do not have the same weight-carrying layers and shapes.
    """
    source_layers, target_layers = _layers_by_name(source), _layers_by_name(target)
    if source_layers.keys() != target_layers.keys():
        raise ValueError(
            f"Models {source.name!r} and {target.name!r} do not have the same weight-carrying "
            f"layers: only in the first: {sorted(source_layers.keys() - target_layers.keys())}, "
            f"only in the second: {sorted(target_layers.keys() - source_layers.keys())}. "
            f"Copy weights only between a model and its bridged twin."
        )
    for name, layer in source_layers.items():
        _copy_layer_weights(layer, target_layers[name])


def _is_any_model(obj):
    if isinstance(obj, keras.Model):
        return True
    tf_keras = sys.modules.get("tf_keras")
    return tf_keras is not None and isinstance(obj, tf_keras.Model)


def _layers_by_name(model):
    found = {}
    for layer in model.layers:
        if _is_any_model(layer):
            found.update(_layers_by_name(layer))
        elif layer.weights:
            found[layer.name] = layer
    return found
