"""Flower's strategies by the workbench's names, with Flower's differential-privacy wrappers.

Imported by the ServerApp (no TensorFlow). `make_strategy(name, settings, ...)` builds the
message-API strategy of `flwr.serverapp.strategy`; `settings` is the plain-data
`FederatedSettings` of the job file.
"""

from __future__ import annotations

import math

from flwr.serverapp import strategy as flower

CLASSES = {
    "fedavg": "FedAvg", "fedprox": "FedProx", "fedadam": "FedAdam", "fedyogi": "FedYogi",
    "fedadagrad": "FedAdagrad", "fedavgm": "FedAvgM", "fedmedian": "FedMedian",
    "fedtrimmedavg": "FedTrimmedAvg", "krum": "Krum", "multikrum": "MultiKrum",
}


def sampled_clients(settings):
    """How many clients a round trains: Flower's own rule (the fraction, at least the minimum)."""
    return max(int(settings["clients"] * settings["fraction"]), settings["min_clients"])


def make_strategy(name, settings, train_metrics_aggr_fn=None, weighted_by_key="num-examples"):
    """`(strategy, accountant)`: the Flower strategy `name`, wrapped for `settings["privacy"]`;
    the accountant is Flower's RDP accountant when the privacy spent can be accounted."""
    cls = getattr(flower, CLASSES[name])
    common = dict(fraction_train=settings["fraction"], fraction_evaluate=0.0,
                  # Flower samples `fraction` of the connected nodes, never fewer than this:
                  # with min_clients, a round goes on after a node has died.
                  min_train_nodes=settings["min_clients"],
                  min_available_nodes=settings["min_clients"],
                  train_metrics_aggr_fn=train_metrics_aggr_fn, weighted_by_key=weighted_by_key)
    extra = {}
    if name == "fedprox":
        extra["proximal_mu"] = settings["proximal_mu"]
    elif name in ("fedadam", "fedyogi", "fedadagrad"):
        extra["eta"] = settings["server_learning_rate"]
    elif name == "fedavgm":
        extra.update(server_learning_rate=settings["server_learning_rate"],
                     server_momentum=settings["server_momentum"])
    elif name == "fedtrimmedavg":
        extra["beta"] = settings["trim_beta"]
    elif name in ("krum", "multikrum"):
        extra["num_malicious_nodes"] = settings["byzantine"]
        if name == "multikrum":  # average the n - f most central updates (Blanchard et al.)
            extra["num_nodes_to_select"] = max(1, sampled_clients(settings) - settings["byzantine"])
    strategy = cls(**common, **extra)
    return wrap_privacy(strategy, settings)


def wrap_privacy(strategy, settings):
    privacy = settings["privacy"]
    if privacy == "none":
        return strategy, None
    sampled = sampled_clients(settings)
    noise = settings["noise_multiplier"]
    clip = settings["clipping_norm"]
    if privacy in ("server_fixed", "client_fixed"):
        accountant = None
        if noise > 0 and isinstance(strategy, flower.FedAvg) and (
                type(strategy).aggregate_train is flower.FedAvg.aggregate_train):
            accountant = make_accountant(settings)
        cls = (flower.DifferentialPrivacyServerSideFixedClipping if privacy == "server_fixed"
               else flower.DifferentialPrivacyClientSideFixedClipping)
        return cls(strategy, noise, clip, sampled, accountant=accountant), accountant
    cls = (flower.DifferentialPrivacyServerSideAdaptiveClipping if privacy == "server_adaptive"
           else flower.DifferentialPrivacyClientSideAdaptiveClipping)
    return cls(strategy, noise, sampled, initial_clipping_norm=clip), None


def make_accountant(settings):
    """Flower's RDP accountant at the report's delta. Every round is one Gaussian release on the
    average of the sampled clients' clipped updates; Flower accounts fixed clipping without
    amplification by sampling (client-level privacy, add-or-remove-one neighbours)."""
    from flwr.supercore.privacy_accounting import (NeighboringRelation, PrivacyConfig,
                                                   SamplingMethod)
    from flwr.supercore.privacy_accounting.rdp_accountant import RdpAccountant

    config = PrivacyConfig(target_delta=settings["delta"], population_size=settings["clients"],
                           neighboring_relation=NeighboringRelation.ADD_OR_REMOVE_ONE,
                           sampling_method=SamplingMethod.NO_AMPLIFICATION)
    return RdpAccountant(config)


def epsilon_of(accountant):
    if accountant is None:
        return None
    spent = accountant.get_privacy_spent()
    return None if not math.isfinite(spent.epsilon) else float(spent.epsilon)


def replay_accountant(accountant, settings, rounds):
    """On `--resume`, the releases of the rounds done before are spent already."""
    from flwr.supercore.privacy_accounting import GaussianPrivacyEvent

    accountant.compose(GaussianPrivacyEvent(noise_multiplier=settings["noise_multiplier"],
                                            sample_size=sampled_clients(settings),
                                            population_size=settings["clients"]), count=rounds)
