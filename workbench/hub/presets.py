"""KerasHub presets on disk: what one is, which causal LM it holds, and its tokenizer.

A preset is a directory as `save_to_preset` writes it (`config.json`, `metadata.json`, weights,
`tokenizer.json` / `preprocessor.json` and their assets), or a Hugging Face Transformers
checkpoint directory that KerasHub converts on load (`config.json` with a `model_type`). Nothing is
downloaded at run time: a `kaggle://`, `hf://` or other remote handle, or a bare preset name such
as `gpt2_base_en`, is refused with how to fetch it first.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Optional

import numpy as np

from workbench.errors import WorkbenchError

OWN_PRESET = "gpt2_stdlib"


def own_preset_dir():
    """Where the workbench's own pretrained preset lives (workbench.hub.pretrain builds it):
    `saved_models/presets/gpt2_stdlib`, or `$WORKBENCH_PRESETS/gpt2_stdlib`."""
    root = Path(os.environ.get("WORKBENCH_PRESETS", Path("saved_models") / "presets"))
    return root / OWN_PRESET

REMOTE_PREFIXES = ("kaggle://", "hf://", "modelscope://", "gs://", "s3://", "http://", "https://")
# Keras' own config file in a preset directory (KerasHub's preset_utils.CONFIG_FILE).
CONFIG_FILE = "config.json"
DOWNLOAD_HINT = ("download it once on a machine with network access, e.g. python -c \"import "
                 "keras_hub; keras_hub.models.CausalLM.from_preset('{handle}')"
                 ".save_to_preset('DIR')\", and pass --set model_options.preset=DIR")


@dataclass
class PresetInfo:
    """What a preset directory holds, read from its files without building the model."""

    path: Path
    backbone_class: Any
    causal_lm_class: Any
    config: dict
    max_sequence_length: Optional[int]

    @property
    def family(self):
        return self.backbone_class.__name__.removesuffix("Backbone")


def check_preset(spec) -> PresetInfo:
    """A usable causal-LM preset directory, or one clear `WorkbenchError`."""
    spec = str(spec)
    if spec.startswith(REMOTE_PREFIXES):
        raise WorkbenchError(
            f"model_options.preset '{spec}' is a remote handle, and the workbench downloads "
            f"nothing at run time; {DOWNLOAD_HINT.format(handle=spec)}")
    path = Path(spec).expanduser()
    if not path.exists():
        bare = "/" not in spec and not spec.startswith(".")
        raise WorkbenchError(
            f"model_options.preset '{spec}' is not a directory"
            + (f" (a KerasHub preset name is a download; "
               f"{DOWNLOAD_HINT.format(handle='kaggle://keras/...')})" if bare else
               "; give the directory save_to_preset wrote"))
    if not path.is_dir() or not (path / CONFIG_FILE).is_file():
        raise WorkbenchError(
            f"model_options.preset '{spec}' is not a KerasHub preset directory (no "
            f"{CONFIG_FILE}); give a directory written by save_to_preset")
    try:
        config = json.loads((path / CONFIG_FILE).read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError) as error:
        raise WorkbenchError(f"model_options.preset '{spec}': {CONFIG_FILE} is unreadable "
                             f"({error})") from None
    import keras_hub
    from keras_hub.src.utils.preset_utils import find_subclass

    from keras_hub.src.utils.preset_utils import get_preset_loader

    try:
        backbone_class = get_preset_loader(str(path)).check_backbone_class()
    except (ValueError, KeyError, TypeError) as error:
        raise WorkbenchError(f"model_options.preset '{spec}': KerasHub cannot read this preset "
                             f"({str(error).splitlines()[0]})") from None
    if backbone_class is None or not issubclass(backbone_class, keras_hub.models.Backbone):
        raise WorkbenchError(
            f"model_options.preset '{spec}': {CONFIG_FILE} names no KerasHub backbone "
            f"({config.get('registered_name') or config.get('model_type') or 'nothing'}); give "
            "a directory written by save_to_preset")
    try:
        causal_lm_class = find_subclass(str(path), keras_hub.models.CausalLM, backbone_class)
    except ValueError:
        raise WorkbenchError(
            f"model_options.preset '{spec}' holds a {backbone_class.__name__}, which is not a "
            "causal language model (KerasHub has no CausalLM for it); fine-tuning needs a "
            "decoder such as GPT-2, Llama, Gemma, Mistral or Qwen") from None
    inner = config.get("config", {})
    maximum = inner.get("max_sequence_length")
    return PresetInfo(path=path, backbone_class=backbone_class, causal_lm_class=causal_lm_class,
                      config=inner, max_sequence_length=int(maximum) if maximum else None)


def check_context(info: PresetInfo, context):
    if info.max_sequence_length is not None and context > info.max_sequence_length:
        raise WorkbenchError(
            f"lm.context {context} is beyond the preset's maximum sequence length "
            f"{info.max_sequence_length} ({info.family}); set lm.context to at most "
            f"{info.max_sequence_length}")


def load_causal_lm(info: PresetInfo, load_weights=True):
    """The preset's `CausalLM` without its preprocessor (the pipeline tokenizes with
    `load_tokenizer`; string layers inside would stop Keras' `model.quantize`)."""
    import keras_hub

    backbone = keras_hub.models.Backbone.from_preset(str(info.path), load_weights=load_weights)
    return info.causal_lm_class(backbone=backbone, preprocessor=None)


def with_preprocessor(causal_lm, preprocessor):
    """A `CausalLM` of the same class on the same backbone, with `preprocessor` (for
    `save_to_preset` and `generate`)."""
    return type(causal_lm)(backbone=causal_lm.backbone, preprocessor=preprocessor)


def load_tokenizer(info: PresetInfo):
    import keras_hub

    return keras_hub.tokenizers.Tokenizer.from_preset(str(info.path))


# Characters the corpus is tokenized in at a time (cut at line ends).
ENCODE_CHUNK_CHARACTERS = 1 << 18


class PresetTokens:
    """A preset's KerasHub tokenizer behind the interface the language-model pipeline reads
    (`encode_bytes`, `encode`, `decode`, `vocabulary_size`, `token_bytes`, `describe`)."""

    name = "preset"

    def __init__(self, tokenizer, vocabulary_size=None, preset=""):
        self.tokenizer = tokenizer
        self.vocabulary_size = int(vocabulary_size or tokenizer.vocabulary_size())
        self.preset = str(preset)

    def _ids(self, text):
        import keras

        return np.asarray(keras.ops.convert_to_numpy(self.tokenizer(text)), dtype=np.int32)

    def encode(self, text: str) -> np.ndarray:
        return self._ids(text) if text else np.zeros((0,), np.int32)

    def encode_bytes(self, data: bytes) -> np.ndarray:
        text = data.decode("utf-8", errors="replace")
        parts, start = [], 0
        while start < len(text):
            end = min(len(text), start + ENCODE_CHUNK_CHARACTERS)
            if end < len(text):  # cut after a newline so no token straddles two chunks
                newline = text.rfind("\n", start, end)
                end = newline + 1 if newline > start else end
            parts.append(self.encode(text[start:end]))
            start = end
        return np.concatenate(parts) if parts else np.zeros((0,), np.int32)

    def decode(self, ids) -> str:
        import keras

        ids = [int(i) for i in ids]
        if not ids:
            return ""
        text = self.tokenizer.detokenize(np.asarray(ids, dtype=np.int32))
        text = keras.ops.convert_to_numpy(text) if not isinstance(text, (str, bytes)) else text
        if isinstance(text, np.ndarray):
            text = text.item()
        return text.decode("utf-8", errors="replace") if isinstance(text, bytes) else str(text)

    def token_bytes(self):
        """Bytes of text each id stands for (for bits per byte): byte-level BPE pieces mapped
        back through GPT-2's byte-to-unicode table, SentencePiece pieces with '▁' as a space;
        special tokens count 0."""
        from keras_hub.src.tokenizers.byte_pair_tokenizer import (
            BytePairTokenizer, bytes_to_unicode)

        if getattr(self, "_token_bytes", None) is not None:
            return self._token_bytes
        vocabulary = [self.tokenizer.id_to_token(index) for index in range(self.vocabulary_size)]
        special = set(getattr(self.tokenizer, "special_tokens", None) or ())
        lengths = np.zeros(self.vocabulary_size, dtype=np.int64)
        byte_level = isinstance(self.tokenizer, BytePairTokenizer)
        if byte_level:
            _, characters = bytes_to_unicode()
            byte_of = {c: 1 for c in characters}
        for index, piece in enumerate(vocabulary):
            if piece in special:
                continue
            if byte_level:
                lengths[index] = sum(byte_of.get(c, len(c.encode())) for c in piece)
            elif piece.startswith("<0x") and piece.endswith(">"):
                lengths[index] = 1
            else:
                lengths[index] = len(piece.replace("\u2581", " ").encode("utf-8"))
        self._token_bytes = lengths
        return lengths

    def describe(self):
        return f"preset tokenizer {type(self.tokenizer).__name__} ({self.vocabulary_size})"
