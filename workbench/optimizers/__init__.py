"""Optimizers and optimizer wrappers, all ordinary Keras 3 optimizers.

Keras already ships SGD, Adam, AdamW, Lion, Lamb, Adafactor, Muon and
ScheduleFreeAdamW; this package adds what it does not.
"""

from workbench.optimizers.adabelief import AdaBelief
from workbench.optimizers.gradient_noise import GradientNoise
from workbench.optimizers.lars import LARS
from workbench.optimizers.lookahead import Lookahead
from workbench.optimizers.prodigy import Prodigy
from workbench.optimizers.proximal import Proximal
from workbench.optimizers.radam import RAdam
from workbench.optimizers.shampoo import Shampoo
from workbench.optimizers.soap import SOAP
from workbench.optimizers.wrapper import OptimizerWrapper

__all__ = [
    "AdaBelief",
    "GradientNoise",
    "LARS",
    "Lookahead",
    "OptimizerWrapper",
    "Prodigy",
    "Proximal",
    "RAdam",
    "SOAP",
    "Shampoo",
]
