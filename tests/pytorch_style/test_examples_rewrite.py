"""bench/pytorch_examples.py changes only import lines when it moves a PyTorch program to easyfit."""
import importlib.util
import pathlib

BENCH = pathlib.Path(__file__).resolve().parents[2] / "bench" / "pytorch_examples.py"


def _runner():
    spec = importlib.util.spec_from_file_location("pytorch_examples", BENCH)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


PROGRAM = '''import argparse
import torch
import torch.nn as nn
import torch.nn.functional as F
from torch import nn, optim
from torch.optim.lr_scheduler import StepLR
import torch.utils.data
import torch.onnx
from torchvision import datasets, transforms
from torchvision.utils import save_image
import numpy as np

x = torch.zeros(3)  # import torch in a comment stays
text = "import torch"
    import torch  # indented imports are imports too
'''

EXPECTED = {
    2: "import easyfit as torch",
    3: "import easyfit.nn as nn",
    4: "import easyfit.nn.functional as F",
    5: "from easyfit import nn, optim",
    6: "from easyfit.optim.lr_scheduler import StepLR",
    7: "import easyfit.utils.data",
    8: "import easyfit.onnx",
    9: "from examples_torchvision import datasets, transforms",
    10: "from examples_torchvision.utils import save_image",
    15: "import easyfit as torch  # indented imports are imports too",
}


def test_only_import_lines_change():
    new, changes = _runner().rewrite_imports(PROGRAM)
    assert {number: after for number, _, after in changes} == EXPECTED
    old_lines, new_lines = PROGRAM.splitlines(), new.splitlines()
    assert len(old_lines) == len(new_lines)
    for number, (old, line) in enumerate(zip(old_lines, new_lines), start=1):
        if number in EXPECTED:
            assert line.strip() == EXPECTED[number]
        else:
            assert line == old


def test_the_rewritten_imports_resolve_to_easyfit_modules():
    new, _ = _runner().rewrite_imports("import torch\nimport torch.nn as nn\nfrom torch.nn import functional as F\n")
    namespace = {}
    exec(new, namespace)
    import easyfit
    assert namespace["torch"] is easyfit and namespace["nn"] is easyfit.nn
