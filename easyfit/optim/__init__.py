"""Optimizers, learning-rate and momentum schedules.

>>> import easyfit as ef
>>> from easyfit.optim import SGD
>>> w = ef.tensor([1.0, 2.0], requires_grad=True)
>>> opt = SGD([w], lr=0.1, momentum=0.9)
>>> (w * w).sum().backward()
>>> opt.step(); opt.zero_grad()
>>> w
tensor([0.8, 1.6], requires_grad=True)
"""
from .optimizer import Optimizer
from .sgd import SGD
from .adam import Adam, AdamW
from .rmsprop import RMSprop
from .adagrad import Adagrad
from .adadelta import Adadelta
from .lbfgs import LBFGS
from . import lr_scheduler
from .schedule import (sched_lin, sched_cos, sched_exp, sched_no, sched_poly, SchedLin, SchedCos, SchedExp,
                       SchedNo, SchedPoly, combine_scheds, combined_cos, one_cycle_lr, one_cycle_mom, cosine,
                       linear_warmup, step_decay, set_hyper, ParamScheduler)
