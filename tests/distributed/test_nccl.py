"""The NCCL path for CUDA gradients, checked without a GPU: the processes' choice, the calls
made to CuPy's NCCL bindings, and the averager's arithmetic around a GPU-to-GPU sum.

Stand-ins take the place of CuPy and NCCL here; nothing of this has run on a GPU where it
was written (NCCL needs two GPUs for two ranks). See docs/distributed.md.
"""
from types import SimpleNamespace

import numpy as np
import pytest

import easyfit as ef
from easyfit import nn
from easyfit.distributed import GradientAverager, gradients, nccl


def test_nccl_is_used_only_when_every_process_has_a_gpu_of_its_own():
    assert nccl.nccl_usable(["host-a/0000:01:00.0", "host-a/0000:02:00.0"])
    assert nccl.nccl_usable(["host-a/0000:01:00.0", "host-b/0000:01:00.0"])
    assert not nccl.nccl_usable(["host-a/0000:01:00.0", "host-a/0000:01:00.0"])  # two ranks, one GPU
    assert not nccl.nccl_usable(["host-a/0000:01:00.0", None])  # one process cannot: all take host memory
    assert not nccl.nccl_usable([])


def test_the_device_is_offered_only_for_one_cuda_device_and_summable_dtypes():
    def param(device, dtype="float32"):
        return SimpleNamespace(device=device, dtype=np.dtype(dtype))
    assert nccl.device_of_parameters([param("cuda:1"), param("cuda:1", "float16")]) == 1
    assert nccl.device_of_parameters([param("cpu")]) is None
    assert nccl.device_of_parameters([param("cuda:0"), param("cuda:1")]) is None
    assert nccl.device_of_parameters([param("cuda:0", "int64")]) is None


def test_a_world_of_one_never_asks_for_nccl(monkeypatch):
    monkeypatch.setattr(nccl.backend, "nccl_module", lambda: pytest.fail("NCCL looked up in a world of one"))
    assert nccl.reducer_for(list(nn.Linear(2, 2).parameters())) is None


class _FakeCupy:
    """Just what NcclReducer uses of CuPy: a device context, the current stream, empty()."""

    def __init__(self):
        self.devices_entered = []
        self.cuda = SimpleNamespace(Device=self._device, get_current_stream=lambda: SimpleNamespace(ptr=77))

    def _device(self, index):
        fake = self

        class Context:
            def __enter__(self):
                fake.devices_entered.append(index)

            def __exit__(self, *exc):
                return False
        return Context()

    def empty(self, elements, dtype):
        return np.empty(elements, dtype=dtype)


class _FakeNccl:
    NCCL_FLOAT16, NCCL_FLOAT32, NCCL_FLOAT64, NCCL_SUM = 6, 7, 8, 0

    def __init__(self):
        self.calls = []
        fake = self

        class Communicator:
            def __init__(self, size, unique_id, rank):
                fake.calls.append(("init", size, unique_id, rank))

            def allReduce(self, send, recv, count, datatype, op, stream):
                fake.calls.append(("allReduce", send, recv, count, datatype, op, stream))
        self.NcclCommunicator = Communicator

    def get_unique_id(self):
        return (1, 2, 3)


class _Buffer(np.ndarray):
    """A NumPy array posing as a CuPy one: a device pointer (`.data.ptr`) and `.get()`."""

    @property
    def data(self):
        return SimpleNamespace(ptr=self.ctypes.data)

    def get(self):
        return np.asarray(self).copy()


def test_the_reducer_makes_one_communicator_and_sums_in_place_on_the_current_stream(monkeypatch):
    cupy, fake_nccl = _FakeCupy(), _FakeNccl()
    monkeypatch.setattr(nccl.backend, "cupy_module", lambda: cupy)
    comm = SimpleNamespace(size=2, rank=0, bcast=lambda value, root: value)
    reducer = nccl.NcclReducer(fake_nccl, 1, comm)
    assert fake_nccl.calls == [("init", 2, (1, 2, 3), 0)] and cupy.devices_entered == [1]
    for dtype, code in (("float16", 6), ("float32", 7), ("float64", 8)):
        flat = np.zeros(5, dtype=dtype).view(_Buffer)
        assert reducer.all_reduce_(flat) is flat
        assert fake_nccl.calls[-1] == ("allReduce", flat.ctypes.data, flat.ctypes.data, 5, code, 0, 77)
    assert cupy.devices_entered == [1, 1, 1, 1]


class _TwoEqualRanks:
    """A reducer standing in for NCCL between two processes holding the same gradients and weight."""

    def __init__(self):
        self.sizes = []

    def empty(self, elements, dtype):
        return np.full(elements, np.nan, dtype=dtype).view(_Buffer)

    def all_reduce_(self, flat):
        self.sizes.append(flat.size)
        flat *= 2
        return flat


def test_the_averager_on_the_gpu_path_weights_flags_and_averages_like_the_host_path(monkeypatch):
    ef.manual_seed(0)
    model = nn.Sequential(nn.Linear(3, 4), nn.ReLU(), nn.Linear(4, 2))
    unused = nn.Linear(2, 2)  # no gradient anywhere: must keep grad None
    params = list(model.parameters()) + list(unused.parameters())
    model(ef.tensor(np.random.default_rng(0).normal(size=(5, 3)).astype(np.float32))).sum().backward()
    expected = [None if p.grad is None else p.grad.numpy().copy() for p in params]

    reducer = _TwoEqualRanks()
    monkeypatch.setattr(nccl, "reducer_for", lambda ps: reducer)
    monkeypatch.setattr(gradients, "cupy_module", lambda: SimpleNamespace(asarray=np.asarray))
    total = GradientAverager(params).reduce(weight=3.0)
    assert total == 6.0  # both processes' weights
    n_elements = sum(p.array.size for p in params)
    assert reducer.sizes == [n_elements + 1 + len(params)]  # one bucket: gradients, weight, flags
    for p, want in zip(params, expected):
        if want is None:
            assert p.grad is None
        else:
            np.testing.assert_allclose(p.grad.numpy(), want, rtol=1e-6)
