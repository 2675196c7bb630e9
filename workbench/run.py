"""`python -m workbench.run RECIPE [options]`: run a recipe end to end.

Parse -> load the recipe -> apply overrides -> check everything -> run the stages in order ->
write the report -> print a summary. Bad input exits with code 2 and one line on stderr before any
file is written; a failed stage exits with code 1 and leaves a report saying where it failed.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import math
import tempfile
import sys
import time
import traceback
from pathlib import Path

from workbench.errors import WorkbenchError, suggest
from workbench.quiet import configure_environment

DEFAULT_OUTPUT_ROOT = Path("saved_models")


class _Parser(argparse.ArgumentParser):
    def error(self, message):
        raise WorkbenchError(f"{message} (see python -m workbench.run --help)")


def build_parser():
    parser = _Parser(
        prog="python -m workbench.run",
        description="Run a workbench recipe: train, compress, export to TFLite and verify.")
    parser.add_argument("recipe", nargs="?",
                        help="a recipe name under recipes/, a dotted module path or a .py file")
    parser.add_argument("--list", action="store_true", help="list the bundled recipes and exit")
    parser.add_argument("--set", dest="overrides", action="append", default=[],
                        metavar="KEY=VALUE", help="override a recipe setting (repeatable)")
    parser.add_argument("--epochs", type=int, help="shorthand for --set epochs=N")
    parser.add_argument("--seed", type=int, help="shorthand for --set seed=N")
    parser.add_argument("--stages", help="comma-separated stages to run, in order")
    parser.add_argument("--out", type=Path,
                        help="write the run here (a new or empty directory) instead of "
                             "saved_models/<recipe>/<timestamp>/")
    parser.add_argument("--resume", type=Path, metavar="RUN_DIR",
                        help="continue an interrupted run in its directory: finished search "
                             "trials are kept, training restarts from its last saved epoch")
    parser.add_argument("--strategy", help="shorthand for --set strategy=NAME (auto, default, "
                                           "one_device, mirrored, multi_worker, tpu; on JAX "
                                           "data_parallel, model_parallel)")
    parser.add_argument("--model", type=Path,
                        help="start from this saved .keras model instead of training one")
    parser.add_argument("--fast", action="store_true",
                        help="a seconds-long smoke run (the recipe's `fast` overrides)")
    parser.add_argument("--quiet", action="store_true", help="print only the summary")
    parser.add_argument("--debug", action="store_true",
                        help="show TensorFlow's logs and full tracebacks")
    return parser


def list_recipes():
    """Names and descriptions, read from the recipe files without importing them (so without
    starting TensorFlow)."""
    from workbench.recipe import available_recipes, bundled_description

    for name in available_recipes():
        try:
            description = bundled_description(name)
        except (OSError, SyntaxError) as error:
            description = f"(unreadable: {error})"
        print(f"{name:24s} {description}")


def prepare_recipe(args):
    """Load the recipe and apply --fast, --set, --epochs, --seed and --stages, then check it all."""
    from workbench.recipe import apply_overrides, load_recipe
    from workbench.stages import STAGES

    recipe = load_recipe(args.recipe)
    assignments = list(args.overrides)
    if args.epochs is not None:
        assignments.append(f"epochs={args.epochs}")
    if args.seed is not None:
        assignments.append(f"seed={args.seed}")
    if args.stages is not None:
        assignments.append(f"stages={args.stages}")
    if args.strategy is not None:
        assignments.append(f"strategy={args.strategy}")
    recipe = apply_overrides(recipe, assignments, fast=args.fast)
    recipe.validate()
    for stage in recipe.stages:
        if stage not in STAGES:
            raise WorkbenchError(f"unknown stage '{stage}': {suggest(stage, STAGES)}")
    if args.model is not None and not args.model.is_file():
        raise WorkbenchError(f"--model '{args.model}' does not exist")
    if args.resume is not None:
        if args.out is not None:
            raise WorkbenchError("--resume continues a run in its own directory; drop --out")
        if not (args.resume / "report.json").is_file():
            raise WorkbenchError(f"--resume '{args.resume}' is not a run directory "
                                 "(it has no report.json)")
    return recipe


def make_context(recipe, args):
    import keras
    import tensorflow as tf

    from workbench import components, distribute
    from workbench.context import RunContext, RunDir
    from workbench.training import check_names
    from workbench.stages import check_stage_order
    # Importing a family registers it; the registry then finds it by task name.
    import workbench.hub  # noqa: F401
    import workbench.lm  # noqa: F401
    import workbench.supervised  # noqa: F401
    from workbench.tasks import resolve_task

    task_given = recipe.task is not None
    # The task family is resolved once; what it does not offer or read is refused before the
    # data is loaded.
    task = resolve_task(recipe)
    task.check_stages(recipe, recipe.stages)
    task.check_settings(recipe)
    check_stage_order(recipe.stages, has_model=args.model is not None)
    distribute.configure_cpu_devices()
    strategy = distribute.resolve_strategy(recipe.strategy)
    distribute.set_precision(recipe.precision)
    keras.utils.set_random_seed(recipe.seed)
    tf.config.experimental.enable_op_determinism()
    data = task.load_data(recipe)
    recipe = dataclasses.replace(recipe, task=task.name)
    check_names(recipe, max(1, math.ceil(data.info.sizes.get("train", 1) / recipe.batch_size)))
    task.preflight(recipe, data, recipe.stages, has_model=args.model is not None)
    model = None
    if args.model is not None:
        try:
            model = components.load_model(args.model)
        except (ValueError, OSError) as error:
            raise WorkbenchError(f"--model '{args.model}' is not a loadable .keras model: {error}")
    previous_report = {}
    if args.resume is not None:
        run_dir = RunDir(args.resume)
        previous_report = json.loads((run_dir / "report.json").read_text())
    elif not distribute.is_chief_worker():
        # Non-chief workers of a multi-worker run train in step with the chief but keep their
        # outputs apart (Keras' own convention for multi-worker checkpoints).
        run_dir = RunDir.create(Path(tempfile.gettempdir()) / "workbench-workers", recipe.name)
    else:
        run_dir = RunDir.create(DEFAULT_OUTPUT_ROOT, recipe.name, args.out)
    if not args.quiet:
        info = data.info
        inferred = "" if task_given else " (inferred from the labels)"
        print(f"workbench: data '{info.source}': task {info.task}{inferred}, "
              f"{info.sizes.get('train')}/{info.sizes.get('val')}/{info.sizes.get('test')} "
              "train/val/test examples", flush=True)
    return RunContext(recipe=recipe, run_dir=run_dir, verbose=0 if args.quiet else 1, data=data,
                      model=model, strategy=strategy, resuming=args.resume is not None,
                      previous_report=previous_report, task=task)


def run_stages(ctx):
    from workbench import report
    from workbench.stages import STAGES

    total = len(ctx.recipe.stages)
    report.write(ctx, "running", plots=False)
    for index, name in enumerate(ctx.recipe.stages, start=1):
        ctx.say(f"\n== [{index}/{total}] {name} ==")
        start = time.perf_counter()
        ctx.timings[name] = 0.0
        try:
            ctx = STAGES[name](ctx)
        finally:
            ctx.timings[name] = time.perf_counter() - start
        ctx.say(f"   ({ctx.timings[name]:.1f} s)")
        if ctx.stop_after_stage:
            ctx.say(f"   {ctx.stop_after_stage}")
            break
        report.write(ctx, "running", plots=False)
    return ctx


def print_summary(ctx, seconds):
    from workbench import report

    rows = report.summary_rows(ctx)
    print(f"\n== summary: {ctx.recipe.name} ({seconds:.1f} s) ==")
    if rows:
        print(report.table(rows))
    print(f"\nfiles in {ctx.run_dir.path}/:")
    for path in sorted(ctx.run_dir.path.iterdir()):
        if not path.name.startswith("."):
            print(f"  {path.name}{'/' if path.is_dir() else ''}")


def main(argv=None):
    started = time.perf_counter()
    try:
        args = build_parser().parse_args(argv)
    except WorkbenchError as error:
        print(f"workbench: error: {error}", file=sys.stderr)
        return 2
    if args.list:
        list_recipes()
        return 0
    configure_environment(args.debug)
    ctx = None
    try:
        if not args.recipe:
            raise WorkbenchError("name a recipe to run, or use --list to see them")
        recipe = prepare_recipe(args)
        from workbench.stages import check_backend

        check_backend(recipe, recipe.stages, recipe.strategy)
        ctx = make_context(recipe, args)
        if not args.quiet:
            print(f"workbench: recipe '{recipe.name}' -> {ctx.run_dir.path}", flush=True)
        ctx = run_stages(ctx)
    except WorkbenchError as error:
        _finish_failed(ctx, str(error))
        print(f"workbench: error: {error}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        _finish_failed(ctx, "interrupted")
        print("workbench: interrupted", file=sys.stderr)
        return 130
    except Exception as error:  # a failed run: say where, keep the report
        _finish_failed(ctx, f"{type(error).__name__}: {error}")
        if args.debug:
            traceback.print_exc()
        stage = next(reversed(ctx.timings), None) if ctx else None
        where = f" in stage '{stage}'" if stage else ""
        first_line = next((line for line in str(error).splitlines() if line.strip()), "")
        print(f"workbench: run failed{where}: {type(error).__name__}: {first_line[:300]}"
              + ("" if args.debug else " (--debug shows the traceback)"), file=sys.stderr)
        return 1
    from workbench import report

    report.write(ctx, "completed")
    print_summary(ctx, time.perf_counter() - started)
    return 0


def _finish_failed(ctx, message):
    if ctx is None:
        return
    from workbench import report

    try:
        report.write(ctx, "failed", error=message)
    except Exception as error:  # the original failure is what the user must see
        print(f"workbench: could not write the failure report: {error}", file=sys.stderr)


if __name__ == "__main__":
    sys.exit(main())
