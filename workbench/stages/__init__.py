"""Pipeline stages. Each is `stage(ctx: RunContext) -> RunContext`, registered here by name.

Stages orchestrate: they keep the books (files written atomically, `ctx.results`, `ctx.exports`,
messages) and call the run's task family (`ctx.task`, workbench.tasks) for the computation. Which
stages a task offers is the family's to say (`Task.STAGES`), checked before any work."""

from workbench.stages.cluster import cluster
from workbench.stages.distill import distill
from workbench.stages.evaluate import evaluate
from workbench.stages.export import export
from workbench.stages.federated import federated
from workbench.stages.generate import generate
from workbench.stages.lr_find import lr_find
from workbench.stages.prune import prune
from workbench.stages.quantize import quantize
from workbench.stages.search import search
from workbench.stages.train import train
from workbench.stages.verify import verify

STAGES = {
    "lr_find": lr_find,
    "search": search,
    "train": train,
    "federated": federated,
    "evaluate": evaluate,
    "generate": generate,
    "export": export,
    "verify": verify,
    "prune": prune,
    "quantize": quantize,
    "cluster": cluster,
    "distill": distill,
}

# What a stage needs from the stages before it. A model comes from train, distill's student
# or --model; verify needs a .tflite file written by export or a compression stage.
MAKES_MODEL = {"train", "federated"}
NEEDS_MODEL = {"evaluate", "export", "prune", "quantize", "cluster", "distill", "generate"}
MAKES_TFLITE = {"export", "prune", "quantize", "cluster", "distill"}

# Stages that need the TensorFlow backend: TFLite conversion (every stage that writes a
# .tflite file), LiteRT verification of one, and TF-MOT (prune, cluster, QAT).
NEEDS_TENSORFLOW = MAKES_TFLITE | {"verify"}


def check_stage_order(stages, has_model):
    """A stage whose prerequisite no earlier stage provides is bad input, found before any work."""
    from workbench.errors import WorkbenchError

    model, tflite = has_model, False
    for stage in stages:
        if stage in NEEDS_MODEL and not model:
            raise WorkbenchError(f"stage '{stage}' needs a model: put 'train' before it in "
                                 "--stages or pass --model PATH")
        if stage == "verify" and not tflite:
            raise WorkbenchError("stage 'verify' has nothing to check: put 'export' (or a "
                                 "compression stage: prune, quantize, cluster, distill) before "
                                 "it in --stages")
        model = model or stage in MAKES_MODEL
        tflite = tflite or stage in MAKES_TFLITE


def check_backend(recipe, stages, strategy, backend=None):
    """Stages and strategies that exist only on TensorFlow, asked of another Keras backend (or
    the JAX-only `keras.distribution` strategies off JAX), are bad input, found before any work
    or run directory."""
    from workbench.distribute import check_strategy_backend
    from workbench.errors import WorkbenchError

    if backend is None:
        import keras

        backend = keras.backend.backend()
    if backend == "tensorflow":
        check_strategy_backend(strategy, backend, recipe.batch_size)
        return
    refused = [stage for stage in stages if stage in NEEDS_TENSORFLOW]
    if refused:
        named = ", ".join(f"'{stage}'" for stage in refused)
        raise WorkbenchError(
            f"stage{'s' if len(refused) > 1 else ''} {named} of recipe '{recipe.name}' "
            f"need{'' if len(refused) > 1 else 's'} the TensorFlow backend (TFLite, LiteRT and "
            f"TF-MOT are TensorFlow-only), but KERAS_BACKEND is '{backend}'; drop "
            f"{'them' if len(refused) > 1 else 'it'} from --stages or run with "
            "KERAS_BACKEND=tensorflow")
    check_strategy_backend(strategy, backend, recipe.batch_size)


__all__ = ["NEEDS_TENSORFLOW", "STAGES", "check_backend", "check_stage_order"]
