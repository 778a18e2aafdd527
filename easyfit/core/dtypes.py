"""dtype names as in PyTorch (`easyfit.float`, `easyfit.long`, ...) and NumPy (`float32`, ...).

They are NumPy's scalar types, so `x.dtype == easyfit.float` and `np.dtype(easyfit.long)`
work. There is no bfloat16: NumPy has no such dtype (easyfit.load widens bfloat16 files
to float32).
"""
import numpy as np

float32 = float = np.float32
float64 = double = np.float64
float16 = half = np.float16
int64 = long = np.int64
int32 = int = np.int32
int16 = short = np.int16
int8 = np.int8
uint8 = np.uint8
bool_ = bool = np.bool_
