"""Federated training on Flower: an engine that a task family hands a compiled initial model,
its data's loader and the run's settings.

A real federation runs on this machine (`federation`: one SuperLink, a SuperNode per client, and
the warm executors that run the SuperNodes' ClientApp tasks). Flower's layout:

- `server_app`: the ServerApp (the recipe's strategy, the round-by-round record);
- `client_app`: the ClientApp (and its variants for SecAgg+ and client-side clipping);
- `task`: what a client loads — its data, through the loader the family names in the job file
  (`"module:attribute"`, Flower's own convention), and the initial model — and its workers;
- `training`: the stage's side (the job, the federation's runs, the central baseline);
- `jobs`, `partition`, `strategies`, `worker`, `executor`, `checks`: the job file, the clients'
  share of the training split, Flower's strategies by name, the Keras worker, the executor
  process, and the checks made before any process starts.

Nothing here imports a task family or the recipe: what a family's data and model need reaches a
client through the job file. Importing this package imports neither Flower nor TensorFlow.
"""
