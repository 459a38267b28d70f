"""Training callbacks: the loop calls their hooks in order (anomaly, log, eval, checkpoint, ...)."""

from lmforge.train.callbacks.base import Callback
from lmforge.train.callbacks.checkpoint import CheckpointCallback
from lmforge.train.callbacks.standard import AnomalyCallback, EvalCallback, LogCallback

__all__ = ["Callback", "AnomalyCallback", "CheckpointCallback", "EvalCallback", "LogCallback"]
