"""Hyperparameter search with KerasTuner; the best values flow into the train stage.

The search space is the model builder's own `hp` calls (KerasTuner's convention) plus the
workbench-level choices in `recipe.search` (optimizer, learning rate on a log scale, schedule,
weight decay, batch size, and what the task family adds). The task family supplies the
hypermodel (how a trial builds and trains), the objective and the trial budget. Trials persist
under `<run>/search/`; `--resume` continues an interrupted search without repeating finished
trials.

Distributed search uses KerasTuner's own chief/worker mechanism: with `KERASTUNER_TUNER_ID`,
`KERASTUNER_ORACLE_IP` and `KERASTUNER_ORACLE_PORT` set, the process whose tuner id contains
"chief" serves the oracle and every other process runs trials it hands out.
"""

from __future__ import annotations

import os
import time

from workbench.errors import WorkbenchError


def _tuner_classes():
    import keras_tuner

    return {"random": keras_tuner.RandomSearch, "grid": keras_tuner.GridSearch,
            "bayesian": keras_tuner.BayesianOptimization, "hyperband": keras_tuner.Hyperband}


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
    ctx.require_data("search")
    settings = ctx.recipe.search
    task = ctx.task
    role = distributed_role()
    total = settings.max_trials
    tuner_class = _with_progress(_tuner_classes()[settings.tuner], total, ctx.say)
    common = dict(objective=task.search_objective(ctx.recipe), seed=ctx.recipe.seed,
                  executions_per_trial=settings.executions_per_trial,
                  directory=str(ctx.run_dir / "search"), project_name="trials",
                  overwrite=not ctx.resuming and role is None)
    if settings.tuner == "hyperband":
        tuner = tuner_class(task.hypermodel(ctx), max_epochs=settings.epochs,
                            factor=settings.hyperband_factor, **common)
        total = "?"
    else:
        tuner = tuner_class(task.hypermodel(ctx), max_trials=settings.max_trials, **common)
    done_before = 0 if role == "worker" else sum(
        t.status == "COMPLETED" for t in tuner.oracle.trials.values())
    if done_before:
        ctx.say(f"  resuming: {done_before} finished trial(s) kept")
    if role == "chief":
        tuner.oracle.verbose = 0
        serve_oracle(tuner, total, ctx.say)
    else:
        line, _ = task.search_budget(ctx.recipe)
        if line:
            ctx.say(line)
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
    ctx.recipe = ctx.task.search_recipe(ctx.recipe, best_hp)
    best = tuner.oracle.get_best_trials(1)[0]
    _, budget = ctx.task.search_budget(ctx.recipe)
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
