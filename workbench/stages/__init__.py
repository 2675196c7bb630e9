"""Pipeline stages. Each is `stage(ctx: RunContext) -> RunContext`, registered here by name."""

from workbench.stages.evaluate import evaluate
from workbench.stages.export import export
from workbench.stages.train import train
from workbench.stages.verify import verify

STAGES = {
    "train": train,
    "evaluate": evaluate,
    "export": export,
    "verify": verify,
}

__all__ = ["STAGES"]
