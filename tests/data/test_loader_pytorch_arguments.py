"""DataLoader takes PyTorch's pin_memory and persistent_workers (PyTorch's MNIST example passes both)."""
import numpy as np
import pytest

from easyfit.data import ArrayDataset, DataLoader


def _dataset():
    return ArrayDataset(np.arange(40, dtype=np.float32).reshape(20, 2), np.arange(20))


def _epochs(loader, count):
    return [[(x.numpy().copy(), y.numpy().copy()) for x, y in loader] for _ in range(count)]


@pytest.mark.parametrize("worker_type", ["thread", "process"])
def test_persistent_workers_keep_one_pool_and_give_the_same_batches(worker_type):
    kept = DataLoader(_dataset(), batch_size=6, shuffle=True, seed=3, num_workers=2, worker_type=worker_type,
                      persistent_workers=True, pin_memory=True)
    fresh = DataLoader(_dataset(), batch_size=6, shuffle=True, seed=3, num_workers=2, worker_type=worker_type)
    iter(kept).__next__()  # a pass left early keeps its workers too
    pool = kept._kept_executor
    assert pool is not None
    ours, theirs = _epochs(kept, 2), _epochs(fresh, 3)[1:]
    assert kept._kept_executor is pool
    for our_epoch, their_epoch in zip(ours, theirs):
        for (x, y), (x2, y2) in zip(our_epoch, their_epoch):
            np.testing.assert_array_equal(x, x2)
            np.testing.assert_array_equal(y, y2)
    kept.close()
    assert kept._kept_executor is None
    assert len(_epochs(kept, 1)[0]) == 4  # starts a new pool when iterated again
    kept.close()


def test_persistent_workers_need_workers():
    with pytest.raises(ValueError, match="persistent_workers=True needs num_workers > 0"):
        DataLoader(_dataset(), num_workers=0, persistent_workers=True)


def test_pin_memory_is_accepted_and_changes_nothing():
    pinned = DataLoader(_dataset(), batch_size=8, num_workers=0, pin_memory=True)
    plain = DataLoader(_dataset(), batch_size=8, num_workers=0)
    assert pinned.pin_memory and not plain.pin_memory
    for (x, y), (x2, y2) in zip(pinned, plain):
        np.testing.assert_array_equal(x.numpy(), x2.numpy())
