"""The workbench's Flower ClientApp: hands each message's weights to its node's Keras worker and
replies with what the worker returns.

Under the workbench's warm executor (workbench.federated.executor) the worker is already loaded
in the process; under Flower's own `flwr-clientapp` (a SuperNode in subprocess isolation) the
ClientApp loads it itself, for that one message (`workbench.federated.task.worker_of`). Besides
`client_app`, the variants the stage names by privacy setting: SecAgg+ (`client_app_secagg`)
and client-side clipping (`client_app_fixed_clipping`, `client_app_adaptive_clipping`).
"""

from __future__ import annotations

import numpy as np
from flwr.app import ArrayRecord, Context, Message, MetricRecord, RecordDict
from flwr.client.mod import secaggplus_mod
from flwr.clientapp import ClientApp
from flwr.clientapp.mod import adaptiveclipping_mod, fixedclipping_mod

from workbench.federated.task import worker_of


def _forward(msg, context, op):
    weights = msg.content["arrays"].to_numpy_ndarrays()
    config = dict(msg.content["config"]) if "config" in msg.content else {}
    config["round-offset"] = config.get("round-offset", 0)
    reply = worker_of(context.node_config).handle(op, {"weights": weights, "config": config,
                                                       "run": msg.metadata.run_id})
    metrics = MetricRecord({key: value for key, value in reply.get("metrics", reply).items()
                            if isinstance(value, (int, float))})
    content = RecordDict({"metrics": metrics})
    if "weights" in reply:
        content["arrays"] = ArrayRecord([np.asarray(w) for w in reply["weights"]])
    return Message(content=content, reply_to=msg)


def _client_app(mods=()):
    app = ClientApp(mods=list(mods))

    @app.train()
    def train(msg: Message, context: Context):
        return _forward(msg, context, "fit")

    @app.evaluate()
    def evaluate(msg: Message, context: Context):
        return _forward(msg, context, "evaluate")

    return app


def _secagg_client(context):
    """The ClientApp of a SecAgg+ run: Flower's SecAgg+ protocol (`secaggplus_mod`) masks the
    update of Flower's legacy fit messages, so the worker is reached through a NumPyClient."""
    from flwr.client import NumPyClient

    class SecAggClient(NumPyClient):
        def fit(self, parameters, config):
            config = dict(config)
            config.setdefault("round-offset", 0)
            reply = worker_of(context.node_config).handle(
                "fit", {"weights": parameters, "config": config, "run": context.run_id})
            metrics = {key: value for key, value in reply["metrics"].items()
                       if isinstance(value, (int, float))}
            return [np.asarray(w) for w in reply["weights"]], int(metrics["num-examples"]), \
                metrics

    return SecAggClient().to_client()


client_app = _client_app()
client_app_secagg = ClientApp(client_fn=_secagg_client, mods=[secaggplus_mod])
# Client-side DP: the client clips its own update before sending it (Flower's mods).
client_app_fixed_clipping = _client_app([fixedclipping_mod])
client_app_adaptive_clipping = _client_app([adaptiveclipping_mod])
