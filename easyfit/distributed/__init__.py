"""Data-parallel training over MPI: `mpiexec -n N python script.py`.

>>> import easyfit, easyfit.distributed as dist
>>> dist.init(), dist.rank(), dist.world_size(), dist.is_main()   # a plain python process
(1, 0, 1, True)
>>> float(dist.all_reduce(easyfit.tensor([1.0, 2.0]), op="sum").sum())   # doctest: +SKIP

With the Learner: `with learn.distrib_ctx(): learn.fit(...)` (see `DataParallel`).
In a hand-written loop: `broadcast_parameters(model)` once, then
`average_gradients(model)` between `loss.backward()` and `opt.step()`.
mpi4py is imported only under an MPI launcher (`pip install 'easyfit[mpi]'`), so a
plain `python script.py` is a world of one and needs no MPI at all.
"""
from .world import (init, is_initialized, rank, world_size, is_main, barrier, abort, all_reduce, all_reduce_,
                    broadcast, broadcast_, all_gather, launched_by_mpi, end_job_at_exit, wait_for_main_to_end)
from .gradients import GradientAverager, average_gradients, broadcast_parameters
from .data_parallel import DataParallel
from .sync_batchnorm import SyncBatchNorm, all_reduce_sum

__all__ = ["init", "is_initialized", "rank", "world_size", "is_main", "barrier", "abort", "all_reduce", "all_reduce_",
           "broadcast", "broadcast_", "all_gather",
           "launched_by_mpi", "end_job_at_exit", "wait_for_main_to_end",
           "GradientAverager", "average_gradients", "broadcast_parameters", "DataParallel",
           "SyncBatchNorm", "all_reduce_sum"]
