"""The Learner's side of data-parallel training, which `easyfit.distributed` runs.

Layers import downward only, so the learner layer cannot import easyfit.distributed.
Instead easyfit.distributed registers the context that `Learner.distrib_ctx()` opens
when it is imported, and `import easyfit` imports it (cheaply: MPI itself is loaded
only by `easyfit.distributed.init()` under `mpiexec`). While the context is open,
`learn.parallel` is the running data-parallel object (`rank`, `world_size`,
`is_main`, `barrier()`), which the learner layer consults to let rank 0 alone print,
log and write files.
"""

_context_factory = None


def register_context(factory):
    """Called by easyfit.distributed: `factory(learn, **options)` returns the `distrib_ctx` context manager."""
    global _context_factory
    _context_factory = factory


def data_parallel_context(learn, **options):
    if _context_factory is None:
        raise RuntimeError("Learner.distrib_ctx: easyfit.distributed is not loaded; import easyfit.distributed")
    return _context_factory(learn, **options)


def is_main_process(learn):
    """True unless `learn` trains data-parallel and this process is not rank 0."""
    parallel = learn.parallel
    return parallel is None or parallel.is_main


def wait_for_main(learn):
    """In data-parallel training, wait until every process (rank 0, which writes files, too) gets here."""
    if learn.parallel is not None:
        learn.parallel.barrier()


def batch_items(learn, local_count):
    """Target items in the training batch: the global batch's in data-parallel training."""
    parallel = learn.parallel
    return local_count if parallel is None or parallel.batch_items is None else parallel.batch_items


def batch_samples(learn, local_count):
    """Samples (target rows) in the training batch: the global batch's in data-parallel training."""
    parallel = learn.parallel
    return local_count if parallel is None or parallel.batch_samples is None else parallel.batch_samples
