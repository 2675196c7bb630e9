"""Learning-rate schedules: `keras.optimizers.schedules.LearningRateSchedule`
subclasses that complement the ones Keras ships (exponential, inverse-time,
piecewise-constant, polynomial, cosine with restarts and warmup)."""

from workbench.schedules.cyclical_learning_rate import CyclicalLearningRate
from workbench.schedules.inverse_time_power_decay import InverseTimePowerDecay
from workbench.schedules.one_cycle import OneCycle
from workbench.schedules.scaled_schedule import ScaledSchedule
from workbench.schedules.step_decay import StepDecay
from workbench.schedules.warmup import Warmup
from workbench.schedules.warmup_stable_decay import WarmupStableDecay

__all__ = [
    "CyclicalLearningRate",
    "InverseTimePowerDecay",
    "OneCycle",
    "ScaledSchedule",
    "StepDecay",
    "Warmup",
    "WarmupStableDecay",
]
