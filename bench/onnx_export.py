"""ONNX export time and onnxruntime inference throughput next to easyfit's own get_preds.

Models: the vision recipe's ResNet (width 32, 1x28x28 inputs, 10 classes: Fashion-MNIST's
shape) and the text recipe's LSTM classifier (vocabulary 5,000, 64-token texts). Export
time is the median of 5 exports after one warm-up (the traces included). Throughput runs
the same arrays, in the same batches, through `learn.get_preds(dl)` and through an
onnxruntime session (CPU provider, default threads), each timed as the median of 3 passes.

    flock /tmp/easyfit-bench.lock env -u OPENBLAS_CORETYPE -u OPENBLAS_L2_SIZE python bench/onnx_export.py
"""
import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import easyfit as ef  # noqa: E402
import easyfit.onnx  # noqa: E402
from easyfit import nn  # noqa: E402
from easyfit.data import ArrayDataset, DataLoader, DataLoaders  # noqa: E402
from easyfit.learner import Learner  # noqa: E402
from recipes import text, vision  # noqa: E402


def median_seconds(function, repeats):
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        function()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def measure(name, model, inputs, targets, batch_size, folder, dynamic_axes):
    import onnxruntime
    model.eval()
    path = Path(folder) / f"{name}.onnx"
    example = ef.tensor(inputs[:batch_size])
    easyfit.onnx.export(model, example, path, dynamic_axes=dynamic_axes)   # warm-up
    export_s = median_seconds(lambda: easyfit.onnx.export(model, example, path, dynamic_axes=dynamic_axes), 5)

    dl = DataLoader(ArrayDataset(inputs, targets), batch_size=batch_size)
    learn = Learner(DataLoaders(dl, dl), model, nn.CrossEntropyLoss(), cbs=[])
    learn.get_preds(dl=dl)
    easyfit_s = median_seconds(lambda: learn.get_preds(dl=dl), 3)

    session = onnxruntime.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    batches = [inputs[i:i + batch_size] for i in range(0, len(inputs), batch_size)]

    def run_onnx():
        return [session.run(None, {"input": b})[0] for b in batches]
    run_onnx()
    onnx_s = median_seconds(run_onnx, 3)
    scores = np.concatenate(run_onnx())
    with ef.no_grad():
        reference = model(ef.tensor(inputs[:batch_size])).numpy()
    agree = np.allclose(scores[:batch_size], reference, rtol=1e-4, atol=1e-4)
    n = len(inputs)
    print(f"{name:<18} export {export_s * 1000:7.1f} ms   easyfit get_preds {n / easyfit_s:9.0f} items/s   "
          f"onnxruntime {n / onnx_s:9.0f} items/s   ({onnx_s and easyfit_s / onnx_s:.1f}x; outputs agree: {agree})")


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--items", type=int, default=2048)
    parser.add_argument("--bs", type=int, default=128)
    args = parser.parse_args()
    import onnxruntime
    print(f"easyfit {ef.__version__}, onnxruntime {onnxruntime.__version__}")
    rng = np.random.default_rng(0)
    ef.manual_seed(0)
    with tempfile.TemporaryDirectory() as folder:
        images = rng.standard_normal((args.items, 1, 28, 28)).astype(np.float32)
        labels = rng.integers(0, 10, args.items)
        measure("vision resnet", vision.small_resnet(1, 10, width=32), images, labels, args.bs, folder, None)
        measure("vision cnn", vision.small_cnn(1, 10, 28, width=32), images, labels, args.bs, folder, None)
        config = text.Config(arch="lstm")
        tokens = rng.integers(2, 5000, (args.items, 64))
        model = text.build_model(config, 5000, 4, pad_idx=1)
        measure("text lstm", model, tokens, rng.integers(0, 4, args.items), args.bs, folder,
                {"input": {0: "batch", 1: "time"}})


if __name__ == "__main__":
    main()
