"""Pipeline stages. Each is `stage(ctx: RunContext) -> RunContext`, registered here by name."""

from workbench.stages.cluster import cluster
from workbench.stages.distill import distill
from workbench.stages.evaluate import evaluate
from workbench.stages.export import export
from workbench.stages.lr_find import lr_find
from workbench.stages.prune import prune
from workbench.stages.quantize import quantize
from workbench.stages.search import check_search_space, search
from workbench.stages.train import train
from workbench.stages.verify import verify

STAGES = {
    "lr_find": lr_find,
    "search": search,
    "train": train,
    "evaluate": evaluate,
    "export": export,
    "verify": verify,
    "prune": prune,
    "quantize": quantize,
    "cluster": cluster,
    "distill": distill,
}

# Checks that need the data but no work, run before the run directory is created, so bad input
# writes nothing: preflight(recipe, data_info) raises WorkbenchError.
PREFLIGHT = {
    "search": check_search_space,
}

__all__ = ["PREFLIGHT", "STAGES"]
