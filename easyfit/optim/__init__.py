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
