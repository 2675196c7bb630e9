"""A KerasHub `CausalLM` as the workbench's language model: token ids `(batch, context)` ->
next-token logits `(batch, context, vocabulary)`, the contract every language-model stage reads
(training by steps, evaluation, sampling, Keras quantization, LiteRT export and verification).

`wrap_causal_lm` builds a functional model around the task model: the windows the pipeline cuts
hold no padding, so the padding mask KerasHub's backbones take is all ones (`FullPaddingMask`).
The pipeline tokenizes with the preset's tokenizer itself, so the `CausalLM` inside goes without
its preprocessor (whose string layers Keras' `model.quantize` cannot pass); the train stage writes
the fine-tuned model as a KerasHub preset too (`preset/`, tokenizer included).
"""

from __future__ import annotations

import keras
from keras import layers

from workbench.lm.model import FullPaddingMask


def wrap_causal_lm(causal_lm, context, name=None):
    """`causal_lm` reading `context` token ids and giving float32 logits (its preprocessor is
    detached)."""
    causal_lm.preprocessor = None
    token_ids = keras.Input((context,), dtype="int32", name="token_ids")
    mask = FullPaddingMask(name="padding_mask")(token_ids)
    logits = causal_lm({"token_ids": token_ids, "padding_mask": mask})
    logits = layers.Activation("linear", dtype="float32", name="logits")(logits)
    family = type(causal_lm.backbone).__name__.removesuffix("Backbone").lower()
    return keras.Model(token_ids, logits, name=name or f"{family}_causal_lm")


def causal_lm_of(model):
    """The KerasHub `CausalLM` inside a wrapped model (or the model itself), else `None`."""
    import keras_hub

    if isinstance(model, keras_hub.models.CausalLM):
        return model
    for layer in getattr(model, "layers", ()):
        if isinstance(layer, keras_hub.models.CausalLM):
            return layer
    return None


def backbone_of(model):
    causal_lm = causal_lm_of(model)
    return causal_lm.backbone if causal_lm is not None else None


def build_preset_model(hp, data_info, options):
    """The recipe builder of the `finetune` recipe: the preset of `options["preset"]` (the
    workbench's own preset when unset) reading `data_info`'s context."""
    from workbench.hub.presets import check_preset, load_causal_lm
    from workbench.hub.presets import own_preset_dir

    info = check_preset(options.get("preset") or own_preset_dir())
    return wrap_causal_lm(load_causal_lm(info), data_info.input_shape[0])
