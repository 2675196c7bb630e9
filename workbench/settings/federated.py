"""Settings of federated training on Flower (`--set federated.KEY=...`)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Optional

# How the run's training split is divided among the clients (workbench.federated.partition).
PARTITIONS = ("iid", "dirichlet", "shards", "by_folder", "by_column")
# Flower strategies by name (flwr.serverapp.strategy), lower-case.
STRATEGIES = ("fedavg", "fedprox", "fedadam", "fedyogi", "fedadagrad", "fedavgm", "fedmedian",
              "fedtrimmedavg", "krum", "multikrum")
# Flower's differential-privacy wrappers: where the updates are clipped, and how.
PRIVACY = ("none", "server_fixed", "client_fixed", "server_adaptive", "client_adaptive")
ENGINES = ("deployment", "simulation")


@dataclass
class FederatedSettings:
    """How the `federated` stage trains the recipe's model across clients on Flower.

    Args:
        clients: how many clients (one Flower SuperNode each) share the training split.
        rounds: federated rounds.
        local_epochs: epochs each sampled client trains on its own data per round
            (`local_steps` > 0 replaces them with that many mini-batch steps).
        local_steps: mini-batch steps per round instead of epochs (0: use `local_epochs`).
        fraction: the fraction of clients sampled for training each round, in (0, 1].
        min_clients: the fewest clients a round needs (sampled, and answering) to count.
        partition: `iid`, `dirichlet` (label skew, `alpha`), `shards` (`shards_per_client`
            label-sorted shards each), `by_folder` (a subfolder level of an image or text
            folder names the client) or `by_column` (a CSV column names the client).
        alpha: the Dirichlet concentration of `dirichlet` (smaller: more skew).
        shards_per_client: shards each client gets with `shards`.
        client_column: the CSV column that names the client with `by_column`.
        client_folder_level: with `by_folder`, which folder level below the class folders
            names the client (1: `DIR/<class>/<client>/file`).
        holdout_fraction: the part of each client's examples kept out of its training, on which
            the global model is evaluated every round.
        strategy: a Flower strategy, by name (see `STRATEGIES`).
        compare: more strategies run on the same federation, for the report's comparison.
        proximal_mu: FedProx's proximal weight mu.
        server_learning_rate: FedAdam / FedYogi / FedAdagrad / FedAvgM server learning rate.
        server_momentum: FedAvgM's server momentum.
        trim_beta: FedTrimmedAvg's fraction cut from each end.
        byzantine: Krum / MultiKrum's assumed number of malicious clients.
        privacy: differential privacy through Flower's wrappers (see `PRIVACY`).
        noise_multiplier: the DP Gaussian noise multiplier.
        clipping_norm: the DP clipping norm (the initial one with adaptive clipping).
        delta: the delta at which the privacy spent (epsilon) is reported.
        secagg: secure aggregation (SecAgg+) of the client updates.
        central_baseline: also train the same model centrally, on the pooled training split,
            for the same number of epochs in total, for the report.
        engine: `deployment` (a real SuperLink and SuperNodes on 127.0.0.1) or `simulation`
            (Flower's Simulation Engine; needs Ray).
        executors: processes that run the local SuperNodes' ClientApp tasks with the model
            kept loaded (0: one per CPU core, at most one per client).
        round_timeout: seconds a round waits for its clients' replies.
        port: the SuperLink's port on 127.0.0.1 (0: a free one, chosen by the stage).
    """

    clients: int = 10
    rounds: int = 10
    local_epochs: int = 1
    local_steps: int = 0
    fraction: float = 1.0
    min_clients: int = 2
    partition: str = "iid"
    alpha: float = 0.5
    shards_per_client: int = 2
    client_column: Optional[str] = None
    client_folder_level: int = 1
    holdout_fraction: float = 0.2
    strategy: str = "fedavg"
    compare: tuple[str, ...] = ()
    proximal_mu: float = 0.01
    server_learning_rate: float = 0.1
    server_momentum: float = 0.9
    trim_beta: float = 0.2
    byzantine: int = 1
    privacy: str = "none"
    noise_multiplier: float = 0.0
    clipping_norm: Optional[float] = None
    delta: float = 1e-5
    secagg: bool = False
    central_baseline: bool = True
    engine: str = "deployment"
    round_timeout: float = 120.0
    executors: int = 0
    port: int = 0

    def problems(self):
        checks = [
            (self.clients >= 1, f"federated.clients must be at least 1, got {self.clients}"),
            (self.rounds >= 1, f"federated.rounds must be at least 1, got {self.rounds}"),
            (self.local_epochs >= 1,
             f"federated.local_epochs must be at least 1, got {self.local_epochs}"),
            (self.local_steps >= 0,
             f"federated.local_steps must be >= 0 (0: use local_epochs), got {self.local_steps}"),
            (0 < self.fraction <= 1, f"federated.fraction must be in (0, 1], got {self.fraction}"),
            (self.min_clients >= 1,
             f"federated.min_clients must be at least 1, got {self.min_clients}"),
            (self.min_clients <= self.clients,
             f"federated.min_clients ({self.min_clients}) is more than federated.clients "
             f"({self.clients})"),
            (self.alpha > 0, f"federated.alpha must be positive, got {self.alpha}"),
            (self.shards_per_client >= 1, "federated.shards_per_client must be at least 1"),
            (self.client_folder_level >= 1, "federated.client_folder_level must be at least 1"),
            (0 <= self.holdout_fraction < 1,
             f"federated.holdout_fraction must be in [0, 1), got {self.holdout_fraction}"),
            (self.proximal_mu >= 0, "federated.proximal_mu must be >= 0"),
            (self.server_learning_rate > 0, "federated.server_learning_rate must be positive"),
            (0 <= self.server_momentum < 1, "federated.server_momentum must be in [0, 1)"),
            (0 <= self.trim_beta < 0.5, "federated.trim_beta must be in [0, 0.5)"),
            (self.byzantine >= 0, "federated.byzantine must be >= 0"),
            (self.noise_multiplier >= 0, "federated.noise_multiplier must be >= 0"),
            (self.clipping_norm is None or self.clipping_norm > 0,
             "federated.clipping_norm must be positive"),
            (0 < self.delta < 1, "federated.delta must be in (0, 1)"),
            (self.executors >= 0, f"federated.executors must be >= 0, got {self.executors}"),
            (self.round_timeout > 0, "federated.round_timeout must be positive"),
            (0 <= self.port < 65536, f"federated.port must be in [0, 65535], got {self.port}"),
            (self.privacy == "none" or self.clipping_norm is not None,
             f"federated.privacy '{self.privacy}' needs a clipping norm: set "
             "federated.clipping_norm (e.g. 1.0)"),
            (self.partition != "by_column" or self.client_column,
             "federated.partition 'by_column' needs federated.client_column, the CSV column "
             "that names each example's client"),
        ]
        return [message for ok, message in checks if not ok]

    def names(self):
        """(key, value, choices) of every named setting, for the recipe's name checks."""
        return [("federated.partition", self.partition, PARTITIONS),
                ("federated.strategy", self.strategy, STRATEGIES),
                *(("federated.compare", name, STRATEGIES) for name in self.compare),
                ("federated.privacy", self.privacy, PRIVACY),
                ("federated.engine", self.engine, ENGINES)]
