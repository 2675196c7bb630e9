"""What the `federated` stage checks before any process starts (bad input exits with code 2)."""

from __future__ import annotations

from workbench.errors import WorkbenchError


def check_federated(recipe, data, stages):
    """Flower installed, the stages, the port, and the partition itself (computed here, once:
    a client left empty, or more clients than examples, is found before any work). Returns the
    partition."""
    from workbench.federated.federation import check_flower_installed, check_port_free
    from workbench.federated.partition import partition_training_split

    settings = recipe.federated
    if "train" in stages:
        raise WorkbenchError("stages 'train' and 'federated' both train the model; keep one "
                             "(federated trains it across clients, in place of train)")
    check_flower_installed()
    if settings.engine == "simulation":
        import importlib.util

        if importlib.util.find_spec("ray") is None:
            raise WorkbenchError(
                "federated.engine 'simulation' runs on Flower's Simulation Engine, which needs "
                "Ray: pip install \"flwr[simulation]==1.42.0\" (or use the default engine, "
                "deployment, which runs a real SuperLink and SuperNodes on this machine)")
        raise WorkbenchError("federated.engine 'simulation' is not supported by this version of "
                             "the workbench yet; use the default, deployment")
    if settings.secagg:
        others = [name for name in (settings.strategy, *settings.compare)
                  if name not in ("fedavg", "fedprox")]
        if others:
            raise WorkbenchError(
                f"federated.secagg (SecAgg+) reveals only the sum of the updates, which "
                f"{', '.join(others)} cannot aggregate; use fedavg or fedprox with it")
        if settings.privacy != "none":
            raise WorkbenchError("federated.secagg (SecAgg+) with federated.privacy is not "
                                 "supported; choose one")
        if settings.clients < 3:
            raise WorkbenchError("federated.secagg (SecAgg+) needs at least 3 clients")
    if settings.port:
        check_port_free(settings.port, "federated.port: the SuperLink's")
    return partition_training_split(data, recipe, settings, recipe.seed)
