"""The learning-rate range test as a stage: sweep, plot, and hand the suggestion to `train`."""

import dataclasses
import math

from workbench.callbacks import LRFinder
from workbench.stages.train import compile_model


def lr_find(ctx):
    data = ctx.require_data("lr_find")
    settings = ctx.recipe.lr_find
    # The sweep drives the rate itself, so the recipe's schedule stays out of it.
    recipe = dataclasses.replace(ctx.recipe, schedule=None)
    batch = recipe.batch_size * ctx.strategy.num_replicas_in_sync
    steps_per_epoch = math.ceil(data.info.sizes["train"] / batch)
    model = compile_model(ctx, recipe, steps_per_epoch)
    finder = LRFinder(min_lr=settings.min_lr, max_lr=settings.max_lr,
                      num_steps=settings.num_steps, suggest=settings.suggest)
    train = data.batches("train", batch, shuffle=True, seed=recipe.seed)
    model.fit(train, epochs=math.ceil(settings.num_steps / steps_per_epoch), callbacks=[finder],
              verbose=0, shuffle=False)
    with ctx.run_dir.atomic("lr_find.png") as temp:
        finder.plot(str(temp))
    results = {"swept_from": finder.lrs[0], "swept_to": finder.lrs[-1],
               "batches": len(finder.lrs), "suggestion": finder.suggestion,
               "previous_learning_rate": ctx.recipe.learning_rate}
    if finder.suggestion is not None:
        # A following `train` stage uses the suggested rate.
        ctx.recipe = dataclasses.replace(ctx.recipe, learning_rate=float(finder.suggestion))
        ctx.say(f"  suggested learning rate {finder.suggestion:.3g} (swept {finder.lrs[0]:.3g} "
                f"to {finder.lrs[-1]:.3g} over {len(finder.lrs)} batches); see lr_find.png")
    else:
        ctx.say("  no suggestion: the loss was never finite; keeping the recipe's rate")
    ctx.results["lr_find"] = results
    return ctx
