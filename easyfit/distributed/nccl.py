"""Gradients of CUDA parameters summed GPU to GPU by NCCL, instead of through host memory.

`GradientAverager` asks `reducer_for(params)` whenever its bucket layout is (re)built.
Every process must take the same path, so the processes choose together (one
allgather): NCCL when, in every process, all trainable parameters sit on one CUDA
device, CuPy was built with NCCL, their dtypes are ones NCCL sums (float16/32/64), and
no two processes share a GPU (NCCL refuses two ranks on one device). Otherwise the
answer is None and the gradients are staged through host memory and MPI, as before.
`EASYFIT_NCCL=0` turns the path off.

This path was written without a GPU to run it on (NCCL needs two GPUs for two ranks):
its tests here check the choice and the calls it makes with stand-ins, and
docs/distributed.md says what has and has not been run.
"""
import os

import numpy as np

from ..core import backend
from . import world

# NumPy dtype name -> the cupy.cuda.nccl constant that names it
NCCL_DTYPES = {"float16": "NCCL_FLOAT16", "float32": "NCCL_FLOAT32", "float64": "NCCL_FLOAT64"}

_reducers = {}  # CUDA device index -> NcclReducer: one communicator per process and device


def nccl_enabled():
    """False when the user turned the NCCL path off with EASYFIT_NCCL=0."""
    return os.environ.get("EASYFIT_NCCL", "1") != "0"


def device_of_parameters(params):
    """The CUDA device index every parameter of `params` is on, or None (CPU, mixed
    devices, or a dtype NCCL does not sum)."""
    devices = {p.device for p in params}
    if len(devices) != 1:
        return None
    device = devices.pop()
    if device == "cpu" or any(np.dtype(p.dtype).name not in NCCL_DTYPES for p in params):
        return None
    return int(device[5:])


def _gpu_identity(device_index):
    """The GPU's PCI bus id: the same physical GPU gives the same id in every process,
    whatever CUDA_VISIBLE_DEVICES renumbered (the host name tells machines apart)."""
    import socket
    try:
        bus = backend.cupy_module().cuda.Device(device_index).pci_bus_id
    except Exception:
        bus = f"device {device_index}"
    return f"{socket.gethostname()}/{bus}"


def nccl_usable(offers):
    """Whether the processes can sum with NCCL, from every process's offer: the identity of
    its GPU, or None where it cannot (no NCCL, parameters on the CPU, ...)."""
    if not offers or any(offer is None for offer in offers):
        return False
    return len(set(offers)) == len(offers)  # one GPU per process


def reducer_for(params):
    """The NCCL reducer for `params`, or None for host memory. Collective: every process calls it."""
    comm = world._comm()
    if comm.size == 1:
        return None
    device = device_of_parameters(params) if nccl_enabled() and backend.nccl_module() is not None else None
    offers = comm.allgather(None if device is None else _gpu_identity(device))
    if not nccl_usable(offers):
        return None
    if device not in _reducers:
        _reducers[device] = NcclReducer(backend.nccl_module(), device, comm)
    return _reducers[device]


class NcclReducer:
    """One NCCL communicator over all processes of the MPI world, on this process's GPU."""

    def __init__(self, nccl, device_index, comm):
        self.nccl, self.device_index = nccl, device_index
        unique_id = comm.bcast(nccl.get_unique_id() if comm.rank == 0 else None, root=0)
        with backend.cupy_module().cuda.Device(device_index):
            self.communicator = nccl.NcclCommunicator(comm.size, unique_id, comm.rank)

    def empty(self, elements, dtype):
        """A new flat buffer on this reducer's GPU."""
        cupy = backend.cupy_module()
        with cupy.cuda.Device(self.device_index):
            return cupy.empty(elements, dtype=dtype)

    def all_reduce_(self, flat):
        """Sum the contiguous CuPy array `flat` over all processes, in place.

        Queued on the device's current stream, after the kernels that wrote the gradients;
        reading the result back (the averager reads the weights' sum) waits for it.
        """
        cupy = backend.cupy_module()
        code = getattr(self.nccl, NCCL_DTYPES[np.dtype(flat.dtype).name])
        with cupy.cuda.Device(self.device_index):
            stream = cupy.cuda.get_current_stream()
            self.communicator.allReduce(flat.data.ptr, flat.data.ptr, flat.size, code, self.nccl.NCCL_SUM,
                                        stream.ptr)
        return flat
