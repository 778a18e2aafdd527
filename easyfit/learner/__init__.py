"""The Learner: training in one call, with callbacks, schedules, metrics and TensorBoard.

>>> learn = Learner(dls, model, loss_func=CrossEntropyLoss(), metrics=accuracy)  # doctest: +SKIP
>>> learn.fit_one_cycle(5, lr_max=3e-3)                                           # doctest: +SKIP
"""
from .callback import (EVENTS, Callback, CancelFitException, CancelEpochException, CancelTrainException,
                       CancelValidException, CancelBatchException, CancelBackwardException, CancelStepException)
from .errors import LossError, BatchError
from .metrics import (Metric, AvgMetric, GatherMetric, Perplexity, F1Score, accuracy, error_rate, top_k_accuracy,
                      perplexity)
from .recorder import Recorder
from .progress import ProgressCallback
from .callbacks import (TerminateOnNaNCallback, TrackerCallback, EarlyStoppingCallback, SaveModelCallback,
                        GradientClip, GradientAccumulation, CSVLogger, ReduceLROnPlateau)
from .mixup import MixUp, CutMix
from .schedule import ParamSchedulerCallback, LRFinder, SuggestedLRs
from .tensorboard import TensorBoardCallback
from .learner import Learner, default_splitter
from .interpret import ClassificationInterpretation
from .export import load_learner, register_module

__all__ = [
    "EVENTS", "Callback", "CancelFitException", "CancelEpochException", "CancelTrainException",
    "CancelValidException", "CancelBatchException", "CancelBackwardException", "CancelStepException",
    "LossError", "BatchError", "Metric", "AvgMetric", "GatherMetric", "Perplexity", "F1Score", "accuracy",
    "error_rate", "top_k_accuracy", "perplexity", "Recorder", "ProgressCallback", "TerminateOnNaNCallback",
    "TrackerCallback", "EarlyStoppingCallback", "SaveModelCallback", "GradientClip", "GradientAccumulation",
    "CSVLogger", "ReduceLROnPlateau", "MixUp", "CutMix", "ParamSchedulerCallback", "LRFinder", "SuggestedLRs", "TensorBoardCallback", "Learner",
    "default_splitter", "ClassificationInterpretation", "load_learner", "register_module",
]
