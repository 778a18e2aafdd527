"""Gradients averaged over processes in a few large messages, and parameters sent from rank 0.

One allreduce per parameter would pay MPI's latency a hundred times a step; instead
the gradients are copied into flat buffers ("buckets", 25 MB by default, one dtype
each) and each bucket is reduced in one call, as PyTorch DDP and Horovod do. The
buffers are fresh every step and the averaged gradients are views into them, so
nothing a later step does can alias an earlier step's gradients (measured: handing
back views into a fresh buffer costs less than copying into persistent buffers and
back into the gradients; see docs/distributed.md). With every process's parameters on a
GPU of its own, the buckets live on the GPU and NCCL sums them (nccl.py); otherwise they
are host memory summed by MPI.

A process may weight its gradients (the Learner weights by the number of samples in
its share of the batch, so an uneven last batch averages exactly like one process
would), and a parameter that received no gradient anywhere keeps `grad = None`, as
it would in one process.
"""
import numpy as np

from ..core.backend import cupy_module, to_device
from ..core.tensor import Tensor
from . import nccl, world

DEFAULT_BUCKET_BYTES = 25 * 2**20


def _parameters(model_or_params):
    params = model_or_params.parameters() if hasattr(model_or_params, "parameters") else model_or_params
    unique, seen = [], set()
    for p in params:
        if id(p) not in seen:
            seen.add(id(p))
            unique.append(p)
    return unique


class GradientAverager:
    """Averages the gradients of `params` (a model or a list of Parameters) over all processes.

    `reduce(weight=1.0)` turns every process's gradient g_r into
    sum_r(weight_r * g_r) / sum_r(weight_r) (the plain mean with the default weights);
    `reduce(average=False)` into the plain sum sum_r(g_r), for gradients of losses that
    were already scaled by each process's share. Returns the sum of the weights.
    Parameters with `requires_grad=False` are left out; the layout is rebuilt when
    that set changes (freeze/unfreeze).
    """

    def __init__(self, params, bucket_bytes=DEFAULT_BUCKET_BYTES):
        if not isinstance(bucket_bytes, (int, np.integer)) or bucket_bytes < 1:
            raise ValueError(f"GradientAverager: bucket_bytes must be a positive integer, got {bucket_bytes!r}")
        self.source = params
        self.bucket_bytes = int(bucket_bytes)
        self._signature = None
        self.buckets = []       # lists of parameters, one dtype each
        self._plan = []         # see _make_plan
        self._nccl = None       # an nccl.NcclReducer when the gradients are summed GPU to GPU

    def _layout(self):
        params = [p for p in _parameters(self.source) if p.requires_grad]
        signature = tuple((id(p), p.shape, p.dtype.str) for p in params)
        if signature != self._signature:
            self._signature = signature
            self.buckets = []
            by_dtype = {}
            for p in params:
                by_dtype.setdefault(np.dtype(p.dtype).str, []).append(p)
            for group in by_dtype.values():
                bucket, size = [], 0
                for p in group:
                    nbytes = int(np.prod(p.shape)) * np.dtype(p.dtype).itemsize
                    if bucket and size + nbytes > self.bucket_bytes:
                        self.buckets.append(bucket)
                        bucket, size = [], 0
                    bucket.append(p)
                    size += nbytes
                if bucket:
                    self.buckets.append(bucket)
            self._plan = self._make_plan(len(params))
            self._nccl = nccl.reducer_for(params)
        return self.buckets

    def _make_plan(self, n_params):
        """Per bucket: (dtype, elements, [(parameter, offset, size)], header offset or None).

        The header, [weight, has-gradient flag of every parameter], rides at the end of
        the first float32/float64 bucket, so a step costs one allreduce per bucket and no
        more (0/1 flags and sample counts are exact in float32); with only float16
        gradients it is a separate float64 message.
        """
        plan, header_placed = [], False
        for bucket in self.buckets:
            dtype = np.dtype(bucket[0].dtype)
            entries, offset = [], 0
            for p in bucket:
                size = int(np.prod(p.shape))
                entries.append((p, offset, size))
                offset += size
            header_at = None
            if not header_placed and dtype in (np.dtype(np.float32), np.dtype(np.float64)):
                header_at, header_placed = offset, True
                offset += 1 + n_params
            plan.append((dtype, offset, entries, header_at))
        if not header_placed:
            plan.append((np.dtype(np.float64), 1 + n_params, [], 0))
        return plan

    def reduce(self, weight=1.0, average=True):
        """Reduce the parameters' current gradients in place (see the class); returns the sum of the weights.

        One allreduce per bucket, in place, on a new buffer per step: the reduced
        gradients are views into it (no copy back), and no later step writes there.
        """
        self._layout()
        on_gpu = self._nccl is not None  # else staged through host memory and MPI
        flats, header = [], None
        for dtype, elements, entries, header_at in self._plan:
            flat = self._nccl.empty(elements, dtype) if on_gpu else np.empty(elements, dtype=dtype)
            if header_at is not None:
                header = flat[header_at:]
                header[0] = weight
            for p, offset, size in entries:
                grad = p.grad
                if grad is None:
                    flat[offset:offset + size] = 0
                else:
                    array = grad.array
                    if not (on_gpu or isinstance(array, np.ndarray)):
                        array = array.get()
                    flat[offset:offset + size] = array.reshape(-1)
            if average and weight != 1.0 and entries:
                flat[:entries[-1][1] + entries[-1][2]] *= dtype.type(weight)
            flats.append(flat)
        flags = [p.grad is not None for _, _, entries, _ in self._plan for p, _, _ in entries]
        header[1:] = cupy_module().asarray(flags, dtype=header.dtype) if on_gpu else flags
        for flat in flats:
            if on_gpu:
                self._nccl.all_reduce_(flat)
            else:
                world.all_reduce_(flat)
        if on_gpu:  # one copy to the host, which also waits for the sums
            header = header.get()
        total_weight = float(header[0])
        if average and total_weight <= 0:
            raise ValueError(f"GradientAverager: the weights of all processes sum to {total_weight}; "
                             "each process's weight must be >= 0 and at least one > 0")
        index = 0
        for (dtype, _, entries, _), flat in zip(self._plan, flats):
            if average and entries:
                flat[:entries[-1][1] + entries[-1][2]] /= dtype.type(total_weight)
            for p, offset, size in entries:
                if header[1 + index] > 0:
                    view = flat[offset:offset + size].reshape(p.shape)
                    p.grad = Tensor(view if p.device == "cpu" else to_device(view, p.device))
                index += 1
        return total_weight


def average_gradients(model, weight=1.0):
    """Average the gradients of `model`'s parameters over all processes, in place.

    For a hand-written loop: call it after `loss.backward()` and before
    `optimizer.step()` in every process. `weight` (e.g. this process's number of
    samples) makes it a weighted average. A world of one leaves the gradients as they are.
    """
    if world.world_size() == 1:
        return
    GradientAverager(model).reduce(weight)


def broadcast_parameters(model, root=0):
    """Copy rank `root`'s parameters and buffers (BatchNorm statistics) into every process, in place.

    Call it once after building the model, so that every process starts from the
    same weights. Parameters keep their identity (optimizers holding them stay valid).
    """
    if world.world_size() == 1:
        return
    tensors = _parameters(model)
    if hasattr(model, "buffers"):
        tensors += [b for b in model.buffers() if b is not None]
    by_dtype = {}
    for t in tensors:
        by_dtype.setdefault(np.dtype(t.dtype).str, []).append(t)
    for dtype, group in sorted(by_dtype.items()):
        host = [t.array if t.device == "cpu" else t.array.get() for t in group]
        flat = np.concatenate([np.ascontiguousarray(a).reshape(-1) for a in host]) if host else np.empty(0, dtype)
        world.broadcast_(flat, root=root)
        offset = 0
        for t, a in zip(group, host):
            n = a.size
            values = flat[offset:offset + n].reshape(a.shape)
            if t.device == "cpu":
                t.array[...] = values
            else:
                t.array[...] = to_device(values, t.device)
            offset += n
