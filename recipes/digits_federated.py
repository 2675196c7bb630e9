"""Federated learning on the bundled 8x8 digits: 10 Flower clients with label-skewed data
(Dirichlet alpha 0.5), FedAvg against FedProx and FedAdam and against central training of the
same model on the clients' pooled training parts for the same epochs, then evaluate, export and
verify the FedAvg model.

Local training is SGD with momentum 0.9 at 0.05, on a cosine decay over the whole federation
(30 local epochs of an average client); each client keeps its optimizer state from round to
round. In-process screening (`benchmarks/federated_screen.py`, FedAvg test accuracy after 10
rounds, central 0.986 on the same examples): these settings 0.961, learning rate 0.1 0.967,
5 local epochs 0.969 (half as long again), no dropout 0.964, a fresh optimizer every round
0.964."""

from recipes.digits import build_model
from workbench.settings.federated import FederatedSettings
from workbench.recipe import Recipe

RECIPE = Recipe(
    name="digits_federated",
    description="Digits CNN trained on 10 Flower clients (Dirichlet 0.5): FedAvg vs FedProx vs "
                "FedAdam vs central, then export and verify.",
    model=build_model,
    data="digits",
    optimizer="sgd",
    optimizer_config={"momentum": 0.9},
    learning_rate=0.05,
    schedule="cosine",
    batch_size=16,
    federated=FederatedSettings(clients=10, rounds=10, local_epochs=3, partition="dirichlet",
                                alpha=0.5, strategy="fedavg", compare=("fedprox", "fedadam"),
                                proximal_mu=0.01, server_learning_rate=0.01),
    stages=("federated", "evaluate", "export", "verify"),
    fast={"federated.clients": 3, "federated.rounds": 2, "federated.compare": (),
          "verify.max_examples": 100, "export.representative_examples": 32},
)
