"""`with learn.distrib_ctx(): learn.fit(...)`: the Learner trained data-parallel over MPI.

What happens inside the block, in every process of `mpiexec -n N`:

* the training and validation loaders are sharded (`DataLoader.shard`): rank r takes
  positions r, r+N, ... of each global batch of N x batch_size samples of the shared
  seeded order, so the union of the ranks' k-th batches is the k-th batch of one
  process at batch size N x batch_size (a language-model stream, `LMDataLoader`, deals
  out its N x batch_size rows by the same rule);
* at the start of every fit, parameters and buffers are broadcast from rank 0;
* after the loss, one small allreduce gives the global batch's number of target items
  B and its mean loss (so `learn.loss`, the recorder, TensorBoard and every callback see the global
  batch's loss); each rank's loss, a mean over its b_r items, is scaled by b_r / B,
  so that after backward the *sum* of the ranks' gradients, reduced in a few large
  messages, is exactly the gradient of the global batch's mean loss, also when the
  last batch splits unevenly and through SyncBatchNorm;
* after validation, the loss and every metric are combined over all ranks
  (`Metric.sync`): every rank sees the whole validation set's values;
* only rank 0 runs callbacks that print or write (`Callback.main_process_only`:
  progress, TensorBoard, CSV), saves checkpoints and exports; loading a checkpoint
  waits until every rank has got there, so rank 0 has finished writing it;
* an exception escaping the block in any rank is printed with the rank and its
  traceback, then ends every process (MPI_Abort): a rank never waits for ever on one
  that died;
* Ctrl-C (mpiexec passes SIGINT on to every rank) is noted, not raised at once: the
  ranks agree on it at the next collective (the per-batch loss allreduce, the
  validation reduce, the end of the block) and raise KeyboardInterrupt together, so no
  rank is left inside a collective. Rank 0's KeyboardInterrupt then leaves the block as
  in one process (its `finally` blocks and handlers run: the CLI moves `latest`),
  and every process ends when rank 0 exits; the other ranks wait for that in the block
  (at most `interrupt_grace` seconds). A second Ctrl-C makes mpiexec end them at once.

BatchNorm keeps per-process statistics (as in PyTorch DDP); use
`easyfit.distributed.SyncBatchNorm` to compute them over the global batch.
"""
import signal
import threading

import numpy as np

from ..core.tensor import Tensor
from ..data.loader import DataLoader
from ..learner.callback import Callback
from ..learner import parallel as learner_parallel
from ..learner.metrics import Metric
from . import world
from .gradients import DEFAULT_BUCKET_BYTES, GradientAverager, broadcast_parameters


class DataParallel(Callback):
    """The callback that `Learner.distrib_ctx` adds for the duration of the block.

    `bucket_bytes`: size of the flat gradient messages (25 MB by default).
    `abort_on_error`: end every process when an exception leaves the block (default
    True; a world of one never aborts, it just re-raises).
    `interrupt_grace`: after a Ctrl-C, how long the other ranks give rank 0 to clean up
    and end the job before they end it themselves (seconds).
    """
    order = -50  # first: the global loss and gradients exist before any other callback reads them

    def __init__(self, bucket_bytes=DEFAULT_BUCKET_BYTES, abort_on_error=True, interrupt_grace=30.0):
        self.bucket_bytes = bucket_bytes
        self.abort_on_error = abort_on_error
        self.interrupt_grace = float(interrupt_grace)
        self.interrupted = False   # a Ctrl-C came that the ranks have not agreed on yet
        self.averager = None
        self._earlier = []         # (parameter, gradient) set aside during backward (gradient accumulation)
        self.batch_items = None    # target items in the current global batch (set after the loss)
        self.batch_samples = None  # samples (target rows) in it

    @property
    def name(self):
        """Inside the block the learner holds this callback as `learn.data_parallel` (and `learn.parallel`)."""
        return "data_parallel"

    # what the learner layer asks of `learn.parallel`
    @property
    def rank(self):
        """This process's rank."""
        return world.rank()

    @property
    def world_size(self):
        """The number of processes."""
        return world.world_size()

    @property
    def is_main(self):
        """True in rank 0, which alone prints and writes files."""
        return world.is_main()

    def barrier(self):
        """Wait for every process (the learner calls it before reading a checkpoint)."""
        world.barrier()

    # events
    def before_fit(self):
        """Every process starts the fit from rank 0's parameters and buffers."""
        broadcast_parameters(self.learner.model)
        self.averager = GradientAverager(self.learner.model, self.bucket_bytes)

    def after_loss(self):
        """Global item count and mean loss; scale this process's loss by its share of the items.

        Done here, first among the callbacks, so that every callback that decides from the
        loss (stopping on NaN, lr_find's divergence test) sees the same global loss in
        every process and they all decide alike.
        """
        learn = self.learner
        if not learn.training:
            return
        count = _item_count(learn.yb)
        samples = int(learn.yb.shape[0]) if learn.yb.ndim else 1
        loss = float(learn.loss.item())
        total, loss_sum, total_samples, interrupted = world.all_reduce(
            np.array([count, loss * count, samples, self.interrupted], dtype=np.float64))
        if interrupted:  # a Ctrl-C in any rank: all stop here, at the same batch
            raise KeyboardInterrupt
        self.batch_items, self.batch_samples = int(total), int(total_samples)
        learn.loss = Tensor(np.asarray(loss_sum / total, dtype=np.dtype(learn.loss.dtype)))
        if count != total:
            learn.loss_grad = learn.loss_grad * (count / total)

    def note_interrupt(self, signum, frame):
        """The SIGINT handler inside the block: note the Ctrl-C; the ranks act on it together.
        A second one before they have is raised at once."""
        if self.interrupted:
            raise KeyboardInterrupt
        self.interrupted = True

    def before_backward(self):
        """Set aside gradients accumulated by earlier batches (already summed): only this batch's are reduced."""
        self._earlier = []
        for p in self.learner.model.parameters():
            if p.grad is not None:
                self._earlier.append((p, p.grad))
                p.grad = None

    def after_backward(self):
        """Sum this batch's (share-scaled) gradients over processes, then add back the earlier ones."""
        self.averager.reduce(average=False)
        for p, earlier in self._earlier:
            p.grad = earlier if p.grad is None else earlier + p.grad
        self._earlier = []

    def after_validate(self):
        """Combine the validation loss and the metrics of every process's share."""
        learn = self.learner
        if getattr(learn.dl, "num_shards", 1) != world.world_size():
            return  # a loader that is not sharded: every rank saw everything already
        totals = world.all_reduce(np.array([learn._valid_loss_total, learn._valid_count, self.interrupted],
                                           dtype=np.float64))
        if totals[2]:
            raise KeyboardInterrupt
        learn._valid_loss_total, learn._valid_count = float(totals[0]), int(totals[1])
        for metric in learn.metrics:
            metric.sync(world.all_gather)


_PLAN = ("batches_for_epoch", "__len__", "__iter__", "stream_matrices")


def _shardable(dl):
    """A DataLoader whose `shard` knows its plan: the class that defines `shard` defines (or
    inherits) every method that plans the batches. DataLoader itself and LMDataLoader (which
    shards its rows) are; a subclass with its own plan but DataLoader's shard would ignore it."""
    if not isinstance(dl, DataLoader):
        return False
    mro = type(dl).__mro__

    def owner(name):
        return next((cls for cls in mro if name in vars(cls)), None)
    shard_owner = owner("shard")
    return all(owner(name) is None or issubclass(shard_owner, owner(name)) for name in _PLAN)


def _item_count(target):
    return int(np.prod(target.shape)) if target.shape else 1


class DistribContext:
    """The context manager `Learner.distrib_ctx(**options)` returns (options go to `DataParallel`)."""

    def __init__(self, learn, **options):
        self.learn = learn
        self.callback = DataParallel(**options)
        self.sharded = []
        self.entered = False
        self.previous_sigint = None

    def __enter__(self):
        learn = self.learn
        if learn.parallel is not None or self.entered:
            raise RuntimeError("Learner.distrib_ctx: already inside a distrib_ctx block")
        self.entered = True
        if world.init() == 1:
            return learn  # a world of one: the block trains exactly as without it
        for metric in learn.metrics:
            if type(metric).sync is Metric.sync:
                raise TypeError(f"Learner.distrib_ctx: metric {metric.name!r} ({type(metric).__name__}) has no "
                                "sync(all_gather), so its value cannot cover every process's share; define it")
        size, rank = world.world_size(), world.rank()
        loaders = [(split, getattr(learn.dls, split, None)) for split in ("train", "valid")]
        for split, dl in loaders:  # check them all before changing any
            if dl is not None and not _shardable(dl):
                raise TypeError(f"Learner.distrib_ctx: the {split} loader ({type(dl).__name__}) cannot be sharded "
                                "between processes: only an easyfit.data.DataLoader that plans its batches with "
                                "DataLoader's own batches_for_epoch, or one whose class also defines shard, can")
        try:
            for split, dl in loaders:
                if dl is not None:
                    before = (dl.shard_rank, dl.num_shards, dl.shard_equal_counts)
                    dl.shard(rank, size, equal_counts=(split == "train"))  # may refuse (a stream too short)
                    self.sharded.append((dl, before))
        except Exception:
            self._unshard()
            self.entered = False
            raise
        learn.parallel = self.callback
        learn.add_cb(self.callback)  # also rebuilds the hooks: rank > 0 drops main-process-only callbacks
        self._catch_interrupts()
        return learn

    def _catch_interrupts(self):
        """Note Ctrl-C instead of raising it wherever it lands (see DataParallel.note_interrupt).

        Only in the main thread, and only over Python's own SIGINT handler: a handler the
        program installed itself is left alone."""
        self.previous_sigint = None
        if (threading.current_thread() is threading.main_thread()
                and signal.getsignal(signal.SIGINT) is signal.default_int_handler):
            self.previous_sigint = signal.signal(signal.SIGINT, self.callback.note_interrupt)

    def _release_interrupts(self):
        if self.previous_sigint is not None:
            signal.signal(signal.SIGINT, self.previous_sigint)
            self.previous_sigint = None

    def __exit__(self, kind, error, trace):
        learn = self.learn
        self.entered = False
        if learn.parallel is not self.callback:
            return False  # a world of one: nothing was changed
        callback = self.callback
        try:
            learn.remove_cb(callback)
        finally:
            del learn.parallel  # back to the class default, None
            self._unshard()
            learn._build_hooks()
        raise_interrupt = False
        try:
            if error is None:  # the closing barrier also agrees on a Ctrl-C noted since the last collective
                raise_interrupt = bool(world.all_reduce(np.array([callback.interrupted], dtype=np.float64))[0])
        finally:
            self._release_interrupts()
            callback.interrupted = False
        if (raise_interrupt or isinstance(error, KeyboardInterrupt)) and callback.abort_on_error:
            if not world.is_main():
                world.wait_for_main_to_end(callback.interrupt_grace)  # rank 0 cleans up, then ends the job
            world.end_job_at_exit(1)   # rank 0: clean up as one process would, then end every process
        elif error is not None and callback.abort_on_error:
            world.report_and_abort(error)
        if raise_interrupt:
            raise KeyboardInterrupt
        return False

    def _unshard(self):
        for dl, (rank, size, equal) in self.sharded:
            dl.shard(rank, size, equal_counts=equal)
        self.sharded = []


def distrib_ctx(learn, **options):
    """The context of `Learner.distrib_ctx` (registered with the learner layer on import)."""
    return DistribContext(learn, **options)


learner_parallel.register_context(distrib_ctx)
