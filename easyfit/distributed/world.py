"""The process world: who we are among the processes `mpiexec` started, and how we talk.

A plain `python script.py` is a world of one: nothing is imported and every
collective returns its input. Under a launcher (`mpiexec -n N`, which sets PMI/PMIx
or Open MPI variables in the environment) `init()` imports mpi4py, which joins
MPI_COMM_WORLD. mpi4py is imported only here and only then, so `import easyfit`
never loads MPI.

Collectives take NumPy arrays, CuPy arrays (staged through host memory; only the
gradient averager sums on the GPU, with NCCL: see nccl.py), easyfit Tensors and Python numbers, and return a new value of the same kind.
Every process must call a collective in the same order with arrays of the same shape
and dtype, as with MPI itself.
"""
import atexit
import os
import sys
import time
import traceback

import numpy as np

from ..core.backend import is_array, to_device
from ..core.tensor import Tensor

# Environment variables that MPI launchers set in every process they start.
_LAUNCHER_VARIABLES = ("PMI_SIZE", "PMI_RANK", "PMIX_RANK", "OMPI_COMM_WORLD_SIZE", "MPI_LOCALNRANKS",
                       "HYDRA_CONTROL_FD")
_OPS = ("sum", "mean", "max", "min", "prod")


class _SingleProcess:
    """The world of one: every collective is the identity."""
    rank, size = 0, 1

    def Barrier(self):
        pass

    def Abort(self, code=1):
        os._exit(code)


_world = None      # None before init(); then an mpi4py communicator or _SingleProcess
_world_size = 1    # its size, read once (the fast paths need no MPI call to know it)
_mpi = None        # the mpi4py.MPI module when running under MPI


def launched_by_mpi():
    """Whether an MPI launcher started this process (its variables are in the environment)."""
    return any(name in os.environ for name in _LAUNCHER_VARIABLES)


def _import_mpi():
    try:
        from mpi4py import MPI
    except ImportError as error:
        raise ImportError("easyfit.distributed: this process was started by an MPI launcher but mpi4py is not "
                          "installed; install the MPI extra: pip install 'easyfit[mpi]' "
                          f"({type(error).__name__}: {error})") from None
    return MPI


def init():
    """Join the process world (idempotent); returns the world size.

    Under `mpiexec` this imports mpi4py and uses MPI_COMM_WORLD; otherwise it is a
    world of one. Every other function here calls it when needed, so calling it
    yourself only makes the moment explicit. With more than one process, an
    uncaught exception in any of them is printed with its rank and ends the whole
    job (MPI_Abort), so the others never wait for ever in a collective.
    """
    global _world, _mpi, _world_size
    if _world is None:
        if launched_by_mpi():
            _mpi = _import_mpi()
            _mpi_ops.update(sum=_mpi.SUM, mean=_mpi.SUM, max=_mpi.MAX, min=_mpi.MIN, prod=_mpi.PROD)
            _world = _mpi.COMM_WORLD
            if _world.size > 1:
                sys.excepthook = _abort_on_uncaught
        else:
            _world = _SingleProcess()
        _world_size = _world.size
    return _world_size


def is_initialized():
    """Whether `init()` has run in this process (PyTorch's name)."""
    return _world is not None


def _abort_on_uncaught(kind, error, trace):
    report_and_abort(error.with_traceback(trace) if error is not None else kind())


def _comm():
    if _world is None:
        init()
    return _world


def rank():
    """This process's number, 0 .. world_size() - 1."""
    return _comm().rank


def world_size():
    """The number of processes training together (1 without mpiexec)."""
    return _comm().size


def is_main():
    """True in rank 0, the process that prints, logs and saves."""
    return _comm().rank == 0


def barrier():
    """Wait until every process has reached this call."""
    _comm().Barrier()


def abort(message=None, code=1):
    """End every process of the job now (MPI_Abort), after printing `message` to stderr.

    The way out when one process fails while the others wait in a collective: they
    would otherwise wait for ever.
    """
    if message:
        sys.stderr.write(message if message.endswith("\n") else message + "\n")
    sys.stderr.flush()
    sys.stdout.flush()
    # The launcher forwards our output through a pipe; MPI_Abort makes it kill the job at
    # once, so give it a moment to pass the message on before the job ends.
    time.sleep(0.3)
    _comm().Abort(code)
    os._exit(code)  # MPI_Abort may return in the calling process before the launcher ends it


def report_and_abort(error, code=1):
    """Print `error` with this process's rank and its traceback, then end every process."""
    comm = _comm()
    if isinstance(error, KeyboardInterrupt):
        abort(f"easyfit.distributed: rank {comm.rank} of {comm.size} interrupted; ending all {comm.size} "
              "processes (checkpoints are written atomically: the last complete one is intact)", code)
    text = "".join(traceback.format_exception(type(error), error, error.__traceback__))
    abort(f"easyfit.distributed: rank {comm.rank} of {comm.size} failed; ending all {comm.size} processes.\n"
          f"{text}", code)


_end_at_exit = None  # the exit code rank 0 ends the job with when it exits, after a Ctrl-C


def end_job_at_exit(code=1):
    """Rank 0 after a Ctrl-C: let the program clean up (its `finally` blocks and handlers
    run as in one process), then end every process (MPI_Abort) when this one exits.

    The other ranks wait for that in `wait_for_main_to_end`; without it they could not
    tell a rank 0 that is cleaning up from one that is gone.
    """
    global _end_at_exit
    if _world_size > 1 and _end_at_exit is None:
        _end_at_exit = code
        atexit.register(_end_job)


def _end_job():
    abort(code=_end_at_exit)


def wait_for_main_to_end(grace=30.0):
    """Ranks other than 0 after a Ctrl-C: rank 0 cleans up and then ends the job; wait for
    that (more Ctrl-Cs are ignored here: mpiexec ends the job on the second), and end it
    ourselves if rank 0 has not within `grace` seconds. Never returns."""
    comm = _comm()
    deadline = time.monotonic() + grace
    while time.monotonic() < deadline:
        try:
            time.sleep(0.05)
        except KeyboardInterrupt:
            pass
    abort(f"easyfit.distributed: rank {comm.rank} of {comm.size} interrupted; rank 0 did not end the job within "
          f"{grace:g} s, so this rank ends all {comm.size} processes", 1)


# ----------------------------------------------------------------------------------
# collectives
# ----------------------------------------------------------------------------------
def _host_array(x):
    """(contiguous NumPy array, how to give a result back in x's kind)."""
    if isinstance(x, Tensor):
        device = x.device
        array = x.array if device == "cpu" else x.array.get()
        return np.ascontiguousarray(array), lambda out: Tensor(out if device == "cpu" else to_device(out, device))
    if isinstance(x, np.ndarray):
        return np.ascontiguousarray(x), lambda out: out
    if is_array(x):  # a CuPy array: through host memory
        device = x.device
        return np.ascontiguousarray(x.get()), lambda out: to_device(out, f"cuda:{device.id}")
    if isinstance(x, (bool, np.bool_)):
        raise TypeError("easyfit.distributed: collectives do not take booleans; use an int (0/1) and op='max'/'min'")
    if isinstance(x, (int, float, np.integer, np.floating)):
        kind = type(x) if isinstance(x, (int, float)) else (lambda v: v)
        return np.asarray([x]), lambda out: kind(out[0])
    raise TypeError(f"easyfit.distributed: expected a Tensor, an array or a number, got {type(x).__name__}")


_mpi_ops = {}  # op name -> MPI.Op, filled when MPI is initialised


def _mpi_op(op):
    try:
        return _mpi_ops[op]
    except KeyError:
        raise ValueError(f"easyfit.distributed.all_reduce: op must be one of {', '.join(map(repr, _OPS))}, "
                         f"got {op!r}") from None


def all_reduce(x, op="sum"):
    """Combine `x` over all processes elementwise: 'sum', 'mean', 'max', 'min' or 'prod'.

    Returns a new value of x's kind (Tensor, NumPy/CuPy array, number); x is unchanged.
    In a world of one it returns a copy of x.
    """
    if _world is None:
        init()
    if op not in _OPS:
        raise ValueError(f"easyfit.distributed.all_reduce: op must be one of {', '.join(map(repr, _OPS))}, got {op!r}")
    if type(x) is np.ndarray:  # the common case, kept short: small messages are dominated by Python
        array, back = np.ascontiguousarray(x), None
    else:
        array, back = _host_array(x)
    if _world_size == 1:
        out = array.copy()
    else:
        out = np.empty_like(array)
        _world.Allreduce(array, out, op=_mpi_ops[op])  # MPI writes the result straight into the new array
        if op == "mean":
            out = out / _world_size
    return out if back is None else back(out)


def all_reduce_(array, op="sum"):
    """`all_reduce` in place on a contiguous NumPy array: no new array (the gradient buckets' fast path).

    Kept to one MPI call and a few Python operations (about 0.2 us over raw mpi4py):
    mpi4py itself refuses a non-contiguous array.
    """
    if _world is None:
        init()
    if _world_size > 1:
        if type(array) is not np.ndarray:
            raise TypeError(f"easyfit.distributed.all_reduce_: needs a contiguous NumPy array, got "
                            f"{type(array).__name__}")
        mpi_op = _mpi_ops.get(op)  # 'mean' is MPI's SUM, divided below
        if mpi_op is None:
            _mpi_op(op)  # raises, naming the ops
        try:
            _world.Allreduce(_mpi.IN_PLACE, array, op=mpi_op)
        except BufferError:
            raise TypeError("easyfit.distributed.all_reduce_: needs a contiguous NumPy array") from None
        if op == "mean":
            array /= _world_size
    return array


def broadcast(x, root=0):
    """Rank `root`'s value of `x`, on every process (a new value of x's kind).

    Arrays and Tensors must have the same shape and dtype everywhere (checked: a
    mismatch raises naming both); any other picklable object is sent as is.
    """
    comm = _comm()
    _check_root(root, comm)
    if comm.size == 1:
        return _copy(x)
    if not (isinstance(x, (Tensor, np.ndarray)) or is_array(x)):
        return comm.bcast(x, root=root)
    array, back = _host_array(x)
    shape, dtype = comm.bcast((array.shape, array.dtype.str), root=root)
    mismatched = comm.allgather((array.shape, array.dtype.str) != (shape, dtype))
    if any(mismatched):  # every rank raises, so none is left waiting in Bcast
        ranks = [r for r, bad in enumerate(mismatched) if bad]
        raise ValueError(f"easyfit.distributed.broadcast: rank {root} sends an array of shape {shape} and dtype "
                         f"{np.dtype(dtype)}, but rank(s) {ranks} passed a different shape or dtype "
                         f"(rank {comm.rank}: shape {array.shape}, dtype {array.dtype})")
    out = array.copy()
    comm.Bcast(out, root=root)
    return back(out)


def broadcast_(array, root=0):
    """`broadcast` in place on a C-contiguous NumPy array of the same shape and dtype everywhere (unchecked)."""
    comm = _comm()
    if comm.size > 1:
        comm.Bcast(array, root=root)
    return array


def all_gather(x):
    """A list with every process's `x`, indexed by rank (shapes may differ between ranks).

    Tensors and arrays come back as the same kind; other values are pickled.
    """
    comm = _comm()
    if comm.size == 1:
        return [_copy(x)]
    if isinstance(x, (Tensor, np.ndarray)) or is_array(x):
        array, back = _host_array(x)
        return [back(a) for a in comm.allgather(array)]
    return comm.allgather(x)


def _check_root(root, comm):
    if not isinstance(root, (int, np.integer)) or not 0 <= root < comm.size:
        raise ValueError(f"easyfit.distributed: root must be a rank between 0 and {comm.size - 1}, got {root!r}")


def _copy(x):
    if isinstance(x, Tensor):
        return Tensor(x.array.copy())
    if isinstance(x, np.ndarray) or is_array(x):
        return x.copy()
    return x
