"""The learning-rate range test as a stage: sweep, plot, and hand the suggestion to `train`."""

import dataclasses


def lr_find(ctx):
    ctx.require_data("lr_find")
    finder = ctx.task.lr_find(ctx)
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
