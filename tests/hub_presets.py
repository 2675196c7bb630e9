"""Tiny KerasHub presets with random weights, written with `save_to_preset`, for the causal_lm
family's tests: a GPT-2 and a Qwen (a second family, with rotary positions, grouped-query
attention and a layout map of its own), both with a GPT-2-format BPE vocabulary learned on
`textwrap.py`, and a BERT backbone (not a causal LM) for the refusals."""

import textwrap
from pathlib import Path

SEQUENCE = 64


def vocabulary():
    from workbench.hub.vocabulary import train_vocabulary

    return train_vocabulary(Path(textwrap.__file__).read_text(), 320)


def make_gpt2_preset(directory):
    import keras

    from workbench.hub.pretrain import build_causal_lm

    keras.utils.set_random_seed(0)
    words, merges = vocabulary()
    causal_lm = build_causal_lm(words, merges, layers=2, heads=4, width=128,
                                max_sequence_length=SEQUENCE, context=32)
    causal_lm.save_to_preset(str(directory))
    return Path(directory)


def make_qwen_preset(directory):
    import keras
    import keras_hub

    keras.utils.set_random_seed(0)
    words, merges = vocabulary()
    tokenizer = keras_hub.models.QwenTokenizer(vocabulary=words, merges=merges)
    backbone = keras_hub.models.QwenBackbone(
        vocabulary_size=tokenizer.vocabulary_size(), num_layers=2, num_query_heads=4,
        num_key_value_heads=2, hidden_dim=128, intermediate_dim=256)
    preprocessor = keras_hub.models.QwenCausalLMPreprocessor(tokenizer, sequence_length=32)
    keras_hub.models.QwenCausalLM(backbone=backbone, preprocessor=preprocessor).save_to_preset(
        str(directory))
    return Path(directory)


def make_bert_preset(directory):
    import keras_hub

    backbone = keras_hub.models.BertBackbone(vocabulary_size=64, num_layers=1, num_heads=2,
                                             hidden_dim=16, intermediate_dim=32,
                                             max_sequence_length=32)
    backbone.save_to_preset(str(directory))
    return Path(directory)


if __name__ == "__main__":
    import sys

    root = Path(sys.argv[1])
    make_gpt2_preset(root / "gpt2")
    make_qwen_preset(root / "qwen")
    make_bert_preset(root / "bert")
