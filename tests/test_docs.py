"""Every ```python block in docs/*.md runs: the guide's examples stay true.

Blocks of one page run in order in one namespace, in a temporary working folder. A block
fenced as ```python-skip (or any other language tag) is shown but not run.
"""
import pathlib
import re

import pytest

DOCS = pathlib.Path(__file__).resolve().parents[1] / "docs"
BLOCK = re.compile(r"^```python\n(.*?)^```", re.S | re.M)


def _pages():
    return sorted(DOCS.glob("*.md")) if DOCS.exists() else []


@pytest.mark.parametrize("page", _pages(), ids=lambda p: p.name)
def test_examples_in_page_run(page, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    namespace = {"__name__": f"docs_{page.stem}"}
    for number, match in enumerate(BLOCK.finditer(page.read_text(encoding="utf-8")), 1):
        code = compile(match.group(1), f"{page.name} (python block {number})", "exec")
        exec(code, namespace)


def test_api_reference_is_up_to_date():
    """docs/api.md is generated from the code; regenerate it with `python docs/make_api.py`."""
    import subprocess
    import sys
    result = subprocess.run([sys.executable, str(DOCS / "make_api.py"), "--check"], capture_output=True, text=True)
    assert result.returncode == 0, result.stderr


def test_api_reference_lists_every_design_name():
    text = (DOCS / "api.md").read_text(encoding="utf-8")
    design_names = [
        "tensor", "from_numpy", "manual_seed", "no_grad", "enable_grad", "grad", "gradcheck", "detect_anomaly",
        "Function", "save", "load", "load_learner", "Module", "Parameter", "Sequential", "ModuleList", "Linear",
        "Conv2d", "MaxPool2d", "AvgPool2d", "AdaptiveAvgPool2d", "BatchNorm1d", "BatchNorm2d", "LayerNorm",
        "Dropout", "Embedding", "RNN", "LSTM", "GRU", "RNNCell", "LSTMCell", "GRUCell", "MultiheadAttention",
        "Flatten", "Identity", "ReLU", "GELU", "Tanh", "Sigmoid", "Softmax", "CrossEntropyLoss", "NLLLoss",
        "MSELoss", "L1Loss", "BCEWithLogitsLoss", "kaiming_normal_", "kaiming_uniform_", "xavier_uniform_",
        "normal_", "zeros_", "clip_grad_norm_", "clip_grad_value_", "SGD", "Adam", "AdamW", "RMSprop", "Dataset",
        "ArrayDataset", "DataLoader", "DataLoaders", "ImageDataLoaders", "Vocab", "TextDataLoaders", "Learner",
        "Callback", "CancelBatchException", "CancelTrainException", "CancelValidException",
        "CancelEpochException", "CancelFitException", "ProgressCallback", "Recorder", "TensorBoardCallback",
        "EarlyStoppingCallback", "SaveModelCallback", "GradientClip", "GradientAccumulation", "CSVLogger",
        "accuracy", "error_rate", "top_k_accuracy", "perplexity", "F1Score",
        "init", "rank", "world_size", "is_main", "barrier", "all_reduce", "broadcast", "all_gather",
        "broadcast_parameters", "distrib_ctx",
    ]
    missing = [n for n in design_names if f"`{n}" not in text and f"class `{n}" not in text]
    assert not missing, f"DESIGN.md names missing from the API reference: {missing}"


def test_every_public_class_and_function_has_its_own_docstring():
    """The API reference shows each name's first docstring paragraph; a class without its
    own docstring would show its base class's (ReLU described as "Base class of layers")."""
    import importlib
    import importlib.util
    import inspect
    spec = importlib.util.spec_from_file_location("make_api", DOCS / "make_api.py")
    make_api = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(make_api)
    undocumented = []
    for module_name, _ in make_api.MODULES:
        module = importlib.import_module(module_name)
        for name in make_api._public_names(module):
            obj = getattr(module, name)
            if (inspect.isclass(obj) and obj.__module__ != "numpy") or inspect.isfunction(obj):
                if not make_api._own_doc(obj):
                    undocumented.append(f"{module_name}.{name}")
    assert not undocumented, f"public names without their own docstring: {undocumented}"
