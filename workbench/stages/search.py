"""Hyperparameter search with KerasTuner; the best values flow into the train stage.

The search space is the model builder's own `hp` calls (KerasTuner's convention) plus the
workbench-level choices in `recipe.search`: optimizer, learning rate (log scale), schedule,
weight decay and batch size, and for language models the warm-up (`search.warmup_steps`).
Trials persist under `<run>/search/`; `--resume` continues an interrupted search without repeating
finished trials. A language model's trial trains by steps, not epochs (`workbench.lm.search`).

Distributed search uses KerasTuner's own chief/worker mechanism: with `KERASTUNER_TUNER_ID`,
`KERASTUNER_ORACLE_IP` and `KERASTUNER_ORACLE_PORT` set, the process whose tuner id contains
"chief" serves the oracle and every other process runs trials it hands out.
"""

from __future__ import annotations

import dataclasses
import math
import os
import time

import numpy as np

from workbench import components
from workbench.errors import WorkbenchError
from workbench.stages.train import build_model
from workbench.tasks import compile_args, search_objective


def _tuner_classes():
    import keras_tuner

    return {"random": keras_tuner.RandomSearch, "grid": keras_tuner.GridSearch,
            "bayesian": keras_tuner.BayesianOptimization, "hyperband": keras_tuner.Hyperband}


def recipe_for(recipe, hp):
    """The recipe with the workbench-level choices of `hp` applied (every choice registered in
    `hp` first, so the same function declares the space and reads a trial's values)."""
    search = recipe.search
    changes = {}
    if search.optimizers:
        changes["optimizer"] = hp.Choice("optimizer", list(search.optimizers))
    if search.learning_rate_min is not None:
        low, high = search.learning_rate_min, search.learning_rate_max
        if search.tuner == "grid":  # a grid needs a finite set of values
            values = [float(f"{v:.3g}") for v in np.geomspace(low, high, 4)]
            changes["learning_rate"] = hp.Choice("learning_rate", values)
        else:
            changes["learning_rate"] = hp.Float("learning_rate", low, high, sampling="log")
    if search.schedules:
        changes["schedule"] = hp.Choice("schedule", list(search.schedules))
    if search.weight_decays:
        decay = hp.Choice("weight_decay", [float(w) for w in search.weight_decays])
        changes["optimizer_config"] = {**recipe.optimizer_config, "weight_decay": decay or None}
    if search.batch_sizes:
        changes["batch_size"] = hp.Choice("batch_size", [int(b) for b in search.batch_sizes])
    if search.warmup_steps:  # language models only (check_search_space)
        warmup = hp.Choice("warmup_steps", [int(w) for w in search.warmup_steps])
        changes["lm"] = dataclasses.replace(recipe.lm, warmup_steps=warmup)
    return dataclasses.replace(recipe, **changes)


def _hypermodel(ctx):
    import keras_tuner

    if ctx.recipe.task == "language_model":
        from workbench.lm.search import language_model_hypermodel

        return language_model_hypermodel(ctx)
    data = ctx.data

    class RecipeHyperModel(keras_tuner.HyperModel):
        def build(self, hp):
            recipe = recipe_for(ctx.recipe, hp)
            steps = math.ceil(data.info.sizes["train"] / recipe.batch_size)
            model = build_model(recipe, hp, data.info)
            if recipe.regularizer:
                components.apply_regularizer(model, recipe.regularizer,
                                             recipe.regularizer_config)
            model.compile(optimizer=components.optimizer_for(recipe, steps),
                          jit_compile=recipe.jit_compile, **compile_args(recipe))
            return model

        def fit(self, hp, model, *args, epochs=1, callbacks=None, **kwargs):
            recipe = recipe_for(ctx.recipe, hp)
            train = data.batches("train", recipe.batch_size, shuffle=True, seed=recipe.seed)
            val = data.batches("val", recipe.batch_size)
            return model.fit(train, validation_data=val, epochs=epochs, callbacks=callbacks,
                             verbose=0, shuffle=False, **{k: v for k, v in kwargs.items()
                                                          if k == "initial_epoch"})

    return RecipeHyperModel()


def check_search_space(recipe, data_info):
    """An empty space (no `hp` in the builder and no workbench choices) is bad input, and so are
    the step-based settings on a recipe that trains by epochs."""
    import keras_tuner

    if data_info.task == "language_model":
        from workbench.lm.search import check_language_model_search

        check_language_model_search(recipe, data_info)
    else:
        given = [key for key, value in (("search.steps", recipe.search.steps),
                                        ("search.warmup_steps", recipe.search.warmup_steps))
                 if value not in (None, ())]
        if given:
            raise WorkbenchError(
                f"{' and '.join(given)} only apply to language models (trained by steps); "
                f"recipe '{recipe.name}' has task '{data_info.task}', whose trials train "
                f"search.epochs epochs: drop {' and '.join(given)}")
    hp = keras_tuner.HyperParameters()
    recipe_for(recipe, hp)
    build_model(recipe, hp, data_info)
    if not hp.space:
        raise WorkbenchError(
            "the search space is empty: the model builder declares no hp values and no "
            "search.* choices are set (try --set search.learning_rate_min=1e-4 "
            "--set search.learning_rate_max=1e-2)")


def _with_progress(tuner_class, total, say):
    class ProgressTuner(tuner_class):
        def on_trial_end(self, trial):
            super().on_trial_end(trial)
            self.trials_run = [*getattr(self, "trials_run", []), trial.trial_id]
            # A worker's local copy has no score; the oracle's copy does.
            trial = self.oracle.get_trial(trial.trial_id)
            say("  " + trial_line(trial, self.oracle, total, len(self.trials_run)))

    ProgressTuner.__name__ = tuner_class.__name__
    return ProgressTuner


def trial_line(trial, oracle, total, count):
    score = trial.score
    values = ", ".join(f"{k}={_fmt(v)}" for k, v in trial.hyperparameters.values.items()
                       if not k.startswith("tuner/"))
    best = oracle.get_best_trials(1)
    best_score = best[0].score if best else None
    return (f"trial {trial.trial_id} ({count}/{total}): "
            f"{oracle.objective.name}={_fmt(score)} (best {_fmt(best_score)})  {values}")


def _fmt(value):
    if value is None:
        return "-"
    return f"{value:.4g}" if isinstance(value, float) else str(value)


def distributed_role():
    """None for a local search, else "chief" or "worker" (KerasTuner's environment variables)."""
    if "KERASTUNER_ORACLE_IP" not in os.environ:
        return None
    missing = [v for v in ("KERASTUNER_ORACLE_PORT", "KERASTUNER_TUNER_ID") if v not in os.environ]
    if missing:
        raise WorkbenchError(f"distributed search: KERASTUNER_ORACLE_IP is set but "
                             f"{' and '.join(missing)} is not")
    return "chief" if "chief" in os.environ["KERASTUNER_TUNER_ID"] else "worker"


def serve_oracle(tuner, total, say, poll_seconds=0.5):
    """Serve the oracle to the workers until every trial has ended and every worker has left.

    KerasTuner's own chief loop (`oracle_chief.start_server`) never returns; this one uses the
    same servicer and returns once the search is over, so the chief can go on to train."""
    import grpc
    from concurrent import futures
    from keras_tuner.src.distribute import oracle_chief
    from keras_tuner.src import protos

    oracle = tuner.oracle
    tuner.save()
    server = grpc.server(futures.ThreadPoolExecutor(max_workers=4))
    servicer = oracle_chief.OracleServicer(oracle)
    protos.get_service_grpc().add_OracleServicer_to_server(servicer, server)
    address = f"{os.environ['KERASTUNER_ORACLE_IP']}:{os.environ['KERASTUNER_ORACLE_PORT']}"
    server.add_insecure_port(address)
    server.start()
    say(f"  serving the search oracle on {address}; waiting for workers")
    reported = set()
    try:
        while True:
            time.sleep(poll_seconds)
            for trial_id, trial in sorted(oracle.trials.items()):
                if trial_id not in reported and trial.status in ("COMPLETED", "FAILED",
                                                                 "INVALID"):
                    reported.add(trial_id)
                    say("  " + trial_line(trial, oracle, total, len(reported)))
            if servicer.stop_triggered and oracle_chief.exit_chief(oracle):
                break
    finally:
        server.stop(grace=1)
        oracle.save()


def search(ctx):
    data = ctx.require_data("search")
    settings = ctx.recipe.search
    check_search_space(ctx.recipe, data.info)
    role = distributed_role()
    total = settings.max_trials
    tuner_class = _with_progress(_tuner_classes()[settings.tuner], total, ctx.say)
    common = dict(objective=search_objective(ctx.recipe), seed=ctx.recipe.seed,
                  executions_per_trial=settings.executions_per_trial,
                  directory=str(ctx.run_dir / "search"), project_name="trials",
                  overwrite=not ctx.resuming and role is None)
    if settings.tuner == "hyperband":
        tuner = tuner_class(_hypermodel(ctx), max_epochs=settings.epochs,
                            factor=settings.hyperband_factor, **common)
        total = "?"
    else:
        tuner = tuner_class(_hypermodel(ctx), max_trials=settings.max_trials, **common)
    done_before = 0 if role == "worker" else sum(
        t.status == "COMPLETED" for t in tuner.oracle.trials.values())
    if done_before:
        ctx.say(f"  resuming: {done_before} finished trial(s) kept")
    if role == "chief":
        tuner.oracle.verbose = 0
        serve_oracle(tuner, total, ctx.say)
    else:
        if ctx.recipe.task == "language_model":
            from workbench.lm.search import describe_budget

            ctx.say(describe_budget(ctx.recipe))
        tuner.search(epochs=settings.epochs, verbose=0)
    if role == "worker":
        ctx.results["search"] = {"role": "worker", "tuner_id": os.environ["KERASTUNER_TUNER_ID"],
                                 "trials_run": getattr(tuner, "trials_run", [])}
        ctx.stop_after_stage = "search worker done; the chief continues the run"
        return ctx
    return _use_best(ctx, tuner, role)


def _use_best(ctx, tuner, role):
    trials = sorted(tuner.oracle.trials.values(), key=lambda t: t.trial_id)
    finished = [t for t in trials if t.score is not None]
    if not finished:
        raise WorkbenchError("the search finished no trial; see the errors above")
    best_hp = tuner.get_best_hyperparameters(1)[0]
    ctx.hp = best_hp
    ctx.recipe = recipe_for(ctx.recipe, best_hp)
    best = tuner.oracle.get_best_trials(1)[0]
    budget = {}
    if ctx.recipe.task == "language_model":
        from workbench.lm.search import search_steps

        budget = {"steps_per_trial": search_steps(ctx.recipe)}
    ctx.results["search"] = {
        "tuner": ctx.recipe.search.tuner, "role": role or "local",
        "objective": tuner.oracle.objective.name, **budget,
        "best_score": best.score, "best_trial": best.trial_id,
        "best_hyperparameters": {k: v for k, v in best_hp.values.items()
                                 if not k.startswith("tuner/")},
        "trials": [{"trial": t.trial_id, "status": t.status, "score": t.score,
                    "hyperparameters": {k: v for k, v in t.hyperparameters.values.items()
                                        if not k.startswith("tuner/")}} for t in trials],
    }
    ctx.say(f"  best: {ctx.results['search']['best_hyperparameters']} "
            f"({tuner.oracle.objective.name}={_fmt(best.score)})")
    return ctx
