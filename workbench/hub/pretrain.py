"""The workbench's own pretrained preset: a small KerasHub GPT-2 trained on Python source, so the
`finetune` recipe has a model that has learned something without downloading one.

`build_own_preset(DIR)` follows the preset's recipe (workbench.hub.gpt2_stdlib): it learns a
512-token byte-level BPE vocabulary in GPT-2's format on the standard library's source without
`pydoc_data` (workbench.hub.corpora.stdlib_code), trains a GPT-2 (4 layers, 4 heads, width 128,
512 positions) on it with the language-model family's step-based training (AdamW, warm-up +
cosine), and writes it with KerasHub's `save_to_preset`:
a directory any `keras_hub.models.CausalLM.from_preset(DIR)` loads. The `finetune` recipe builds
it on first use in `own_preset_dir()` (`saved_models/presets/gpt2_stdlib`, or
`$WORKBENCH_PRESETS/gpt2_stdlib`) and reuses it after.

    python -m workbench.hub.pretrain [DIR] [--steps N]
"""

from __future__ import annotations

import argparse
import shutil
import tempfile
import time
from pathlib import Path

from workbench.hub.presets import own_preset_dir

def build_causal_lm(vocabulary, merges, layers=4, heads=4, width=128, max_sequence_length=512,
                    context=128, dropout=0.0):
    """A randomly initialised KerasHub GPT-2 with its tokenizer and preprocessor."""
    import keras_hub

    tokenizer = keras_hub.models.GPT2Tokenizer(vocabulary=vocabulary, merges=merges)
    backbone = keras_hub.models.GPT2Backbone(
        vocabulary_size=tokenizer.vocabulary_size(), num_layers=layers, num_heads=heads,
        hidden_dim=width, intermediate_dim=4 * width, dropout=dropout,
        max_sequence_length=max_sequence_length)
    preprocessor = keras_hub.models.GPT2CausalLMPreprocessor(tokenizer, sequence_length=context)
    return keras_hub.models.GPT2CausalLM(backbone=backbone, preprocessor=preprocessor)


def pretraining_recipe(steps=None, seed=0):
    """The preset's recipe (workbench.hub.gpt2_stdlib), with `steps` and `seed` applied."""
    from workbench.hub.gpt2_stdlib import RECIPE
    from workbench.recipe import apply_overrides

    return apply_overrides(RECIPE, [f"lm.steps={steps or RECIPE.lm.steps}", f"seed={seed}"])


def build_own_preset(directory, steps=None, say=print, seed=0):
    """Train the workbench's own GPT-2 preset and write it to `directory` (atomically: a failed
    or interrupted build leaves no half-written preset)."""
    import dataclasses

    import keras

    from workbench.hub.corpora import stdlib_code
    from workbench.hub.model import wrap_causal_lm
    from workbench.hub.presets import PresetTokens, with_preprocessor
    from workbench.hub.vocabulary import train_vocabulary
    from workbench.lm.corpus import load_corpus
    from workbench.lm.training import compile_language_model, train_language_model

    recipe = pretraining_recipe(steps, seed)
    architecture, settings = recipe.model_options, recipe.lm
    # Four validation points over the run, whatever its length.
    settings = dataclasses.replace(settings, eval_interval=max(1, settings.steps // 4))
    directory = Path(directory)
    started = time.perf_counter()
    keras.utils.set_random_seed(recipe.seed)
    text = stdlib_code().decode("utf-8", errors="replace")
    vocabulary, merges = train_vocabulary(text, architecture["vocabulary_size"])
    complete = build_causal_lm(vocabulary, merges, architecture["layers"],
                               architecture["heads"], architecture["width"],
                               architecture["max_sequence_length"], settings.context)
    preprocessor = complete.preprocessor
    causal_lm = with_preprocessor(complete, None)  # trained on token ids
    tokens = PresetTokens(preprocessor.tokenizer)
    corpus = load_corpus(recipe.data, tokens, recipe.data_options["val_fraction"],
                         settings.context)
    say(f"  pretraining the workbench's GPT-2 preset: {len(vocabulary)} BPE tokens learned, "
        f"{len(corpus.train):,} training tokens; {settings.steps} steps of "
        f"{recipe.batch_size} x {settings.context} tokens")
    model = wrap_causal_lm(causal_lm, settings.context)
    compile_language_model(model, recipe, settings, 1, settings.steps_per_execution)
    state, stop_reason = train_language_model(model, corpus.train, corpus.val, recipe, settings,
                                              say=say)
    if stop_reason:
        raise RuntimeError(f"pretraining the preset stopped: {stop_reason}")
    directory.parent.mkdir(parents=True, exist_ok=True)
    temp = Path(tempfile.mkdtemp(prefix=f".{directory.name}.", dir=directory.parent))
    try:
        with_preprocessor(causal_lm, preprocessor).save_to_preset(str(temp))
        if directory.exists():
            shutil.rmtree(directory)
        temp.rename(directory)
    finally:
        shutil.rmtree(temp, ignore_errors=True)
    say(f"  preset written to {directory} (val loss {state.val_loss[-1]:.3f}, "
        f"{time.perf_counter() - started:.0f} s)")
    return directory


def ensure_own_preset(say=print):
    """`own_preset_dir()`, built first when it is not there."""
    directory = own_preset_dir()
    if not (directory / "config.json").is_file():
        say(f"workbench: no model_options.preset given and {directory} does not exist yet; "
            "building the workbench's own pretrained GPT-2 preset (once)")
        build_own_preset(directory, say=say)
    return directory


def main(argv=None):
    parser = argparse.ArgumentParser(prog="python -m workbench.hub.pretrain",
                                     description=__doc__.splitlines()[0])
    parser.add_argument("directory", nargs="?", type=Path, default=None,
                        help=f"where to write the preset (default {own_preset_dir()})")
    parser.add_argument("--steps", type=int, default=None,
                        help="optimizer steps (default: the preset recipe's lm.steps)")
    args = parser.parse_args(argv)
    from workbench.quiet import configure_environment

    configure_environment(debug=False)
    build_own_preset(args.directory or own_preset_dir(), steps=args.steps,
                     say=lambda line: print(line, flush=True))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
