"""Screening one `gpt` recipe setting for time to a target loss: the train stage's own loop
(`workbench.lm.training.train_language_model`), stopped at the first validation at or below the
target, so a setting that gets there early costs only that long. Prints one JSON line: the step
and the training seconds (compilation included, validation left out) at which it got there, the
steady tokens/s and the validation curve. How the `gpt` recipe's defaults were chosen
(README, "GPT speedrun"); `benchmarks/lm.py --parts e` then measures the chosen ones to the end.

    python benchmarks/lm_screen.py [--target 1.693] [KEY=VALUE ...]   (the recipe's --set items)
    python benchmarks/lm_screen.py optimizer=muon learning_rate=0.016 batch_size=48 lm.steps=300
"""

import argparse
import json
import os
import sys
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import keras  # noqa: E402


def screen(assignments, target, eval_interval=25, eval_windows=2048):
    from workbench.lm.corpus import load_corpus
    from workbench.lm.model import build_gpt
    from workbench.lm.training import (
        compile_language_model, effective_steps_per_execution, train_language_model)
    from workbench.recipe import apply_overrides, load_recipe

    recipe = apply_overrides(load_recipe("gpt"), [
        f"lm.eval_interval={eval_interval}", f"lm.eval_windows={eval_windows}",
        "lm.checkpoint_seconds=0", *assignments])
    settings = recipe.lm
    corpus = load_corpus(recipe.data, context=settings.context)
    keras.utils.set_random_seed(recipe.seed)
    model = build_gpt(context=settings.context)
    compile_language_model(model, recipe, settings,
                           steps_per_execution=effective_steps_per_execution(settings))

    class StopAtTarget(keras.callbacks.Callback):
        def on_epoch_end(self, epoch, logs=None):
            if logs and logs.get("val_loss", float("inf")) <= target:
                self.model.stop_training = True

    state, _ = train_language_model(model, corpus.train, corpus.val, recipe, settings,
                                    say=lambda *a: None, extra_callbacks=[StopAtTarget()])
    reached = bool(state.val_loss) and state.val_loss[-1] <= target
    return {"settings": list(assignments), "target": target, "reached": reached,
            "step": state.eval_steps[-1] if reached else None,
            "seconds": round(state.eval_train_seconds[-1], 1) if reached else None,
            "tokens_per_second": round(state.measured_tokens / state.measured_seconds),
            "eval_steps": state.eval_steps, "val_loss": [round(v, 4) for v in state.val_loss]}


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--target", type=float, default=1.693,
                        help="validation loss to reach (default: the PyTorch reference's final "
                             "loss on 2048 windows, measured with benchmarks/lm.py --parts e)")
    parser.add_argument("--eval-interval", type=int, default=25)
    parser.add_argument("--eval-windows", type=int, default=2048)
    parser.add_argument("assignments", nargs="*", help="the gpt recipe's --set items")
    args = parser.parse_args(argv)
    print(json.dumps(screen(args.assignments, args.target, args.eval_interval,
                            args.eval_windows)), flush=True)


if __name__ == "__main__":
    main()
