"""Run by test_distributed.py under `mpiexec -n 2`: the collectives and a hand-written loop.

Any failed check raises, which (through easyfit.distributed's excepthook) ends the job
with a non-zero exit code and the rank's traceback.
"""
import numpy as np

import easyfit as ef
from easyfit import distributed as dist, nn

assert dist.init() == 2 and dist.world_size() == 2
rank = dist.rank()
assert dist.is_main() == (rank == 0)

# all_reduce on Tensors, arrays and numbers; the input is left unchanged
x = ef.tensor([1.0, 2.0, 3.0]) * (rank + 1)
total = dist.all_reduce(x)
assert isinstance(total, ef.Tensor) and np.allclose(total.numpy(), [3.0, 6.0, 9.0]), total
assert np.allclose(x.numpy(), np.array([1.0, 2.0, 3.0]) * (rank + 1))
mean = dist.all_reduce(np.arange(4, dtype=np.float32) + rank, op="mean")
assert mean.dtype == np.float32 and np.allclose(mean, np.arange(4) + 0.5), mean
assert dist.all_reduce(rank + 1, op="max") == 2 and dist.all_reduce(float(rank), op="min") == 0.0
assert dist.all_reduce(np.int64(rank + 1)) == 3

# all_reduce_ in place: the same array back; a non-contiguous one or a bad op is refused
buffer = np.arange(4, dtype=np.float32) + rank
assert dist.all_reduce_(buffer, op="mean") is buffer and np.allclose(buffer, np.arange(4) + 0.5)
for bad, kwargs in ((np.zeros((4, 4))[:, ::2], {}), ([1.0, 2.0], {}), (np.zeros(2), {"op": "avg"})):
    try:
        dist.all_reduce_(bad, **kwargs)
    except (TypeError, ValueError) as error:
        assert "all_reduce" in str(error), error
    else:
        raise AssertionError(f"all_reduce_ accepted {bad!r} {kwargs}")

# broadcast: arrays keep their kind; a shape mismatch is an error naming both
assert np.array_equal(dist.broadcast(np.full(3, rank), root=1), np.full(3, 1))
assert dist.broadcast({"rank": rank})["rank"] == 0
try:
    dist.broadcast(np.zeros(2 + rank))
except ValueError as error:
    assert "shape" in str(error)
else:
    raise AssertionError("broadcast accepted arrays of different shapes")

# all_gather: one entry per rank, shapes may differ
gathered = dist.all_gather(ef.tensor(np.arange(rank + 1, dtype=np.float32)))
assert [g.shape for g in gathered] == [(1,), (2,)] and isinstance(gathered[1], ef.Tensor)
assert dist.all_gather(f"r{rank}") == ["r0", "r1"]

# a hand-written loop: broadcast_parameters, then average_gradients each step
ef.manual_seed(rank)  # deliberately different initial weights
model = nn.Sequential(nn.Linear(4, 8), nn.ReLU(), nn.Linear(8, 2), nn.Linear(2, 2))
model[2].weight.requires_grad = False  # frozen: not reduced, stays without a gradient
dist.broadcast_parameters(model)
opt = ef.optim.SGD(model.parameters(), lr=0.1)
data = np.random.default_rng(0).normal(size=(8, 4)).astype(np.float32)
for step in range(3):
    share = ef.tensor(data[rank::2])
    loss = (model(share) ** 2).mean()
    loss.backward()
    dist.average_gradients(model)
    assert model[2].weight.grad is None
    opt.step()
    opt.zero_grad()
params = np.concatenate([p.numpy().ravel() for p in model.parameters()])
others = dist.all_gather(params)
assert np.array_equal(others[0], others[1]), "ranks diverged"

# GradientAverager: weighted mean over several buckets of two dtypes; the header's has-gradient flags
tensors = [ef.nn.Parameter(np.zeros((3, 4), np.float32)), ef.nn.Parameter(np.zeros(5, np.float64)),
          ef.nn.Parameter(np.zeros(2, np.float32)), ef.nn.Parameter(np.zeros(3, np.float64))]
for bucket_bytes in (16, 2**20):
    averager = dist.GradientAverager(tensors, bucket_bytes=bucket_bytes)
    for step in range(2):  # the second step reuses the layout
        tensors[0].grad = ef.tensor(np.full((3, 4), rank + 1.0, np.float32))
        tensors[1].grad = ef.tensor(np.full(5, rank + 1.0))
        tensors[2].grad = ef.tensor(np.full(2, 2.0, np.float32)) if rank == 1 else None   # only in rank 1
        tensors[3].grad = None                                                             # nowhere
        assert averager.reduce(weight=rank + 1.0) == 3.0
        np.testing.assert_allclose(tensors[0].grad.numpy(), 5 / 3, rtol=1e-6)   # (1 * 1 + 2 * 2) / (1 + 2)
        np.testing.assert_allclose(tensors[1].grad.numpy(), 5 / 3, rtol=1e-12)
        assert tensors[1].grad.dtype == np.float64 and tensors[0].grad.shape == (3, 4)
        np.testing.assert_allclose(tensors[2].grad.numpy(), 4 / 3, rtol=1e-6)  # rank 0 counts as zeros
        assert tensors[3].grad is None
    assert len(averager.buckets) == (4 if bucket_bytes == 16 else 2)

# the same steps in one process on the whole batch (mean of equal shares = mean of the batch)
if rank == 0:
    ef.manual_seed(0)
    reference = nn.Sequential(nn.Linear(4, 8), nn.ReLU(), nn.Linear(8, 2), nn.Linear(2, 2))
    reference[2].weight.requires_grad = False
    opt = ef.optim.SGD(reference.parameters(), lr=0.1)
    for step in range(3):
        loss = (reference(ef.tensor(data)) ** 2).mean()
        loss.backward()
        opt.step()
        opt.zero_grad()
    expected = np.concatenate([p.numpy().ravel() for p in reference.parameters()])
    np.testing.assert_allclose(params, expected, rtol=1e-5, atol=1e-6)
# SyncBatchNorm on (N, C, H, W) shares: output, input gradient and running statistics of the whole batch
images = np.random.default_rng(1).normal(loc=3.0, size=(6, 3, 4, 4)).astype(np.float32)
sync, whole = dist.SyncBatchNorm(3), nn.BatchNorm2d(3)
share = ef.tensor(images[rank::2], requires_grad=True)
out = sync(share)
(out * out).sum().backward()
full = ef.tensor(images, requires_grad=True)
expected = whole(full)
(expected * expected).sum().backward()
np.testing.assert_allclose(out.numpy(), expected.numpy()[rank::2], rtol=1e-4, atol=1e-5)
np.testing.assert_allclose(share.grad.numpy(), full.grad.numpy()[rank::2], rtol=1e-3, atol=1e-4)
np.testing.assert_allclose(sync.running_var.numpy(), whole.running_var.numpy(), rtol=1e-5)
np.testing.assert_allclose(dist.all_reduce(sync.weight.grad).numpy(), whole.weight.grad.numpy(), rtol=1e-4)

# convert_sync_batchnorm: a model's BatchNorms, converted, keep the statistics of the global batch
def bn_model():
    ef.manual_seed(0)
    return nn.Sequential(nn.Conv2d(3, 4, 3, padding=1), nn.BatchNorm2d(4), nn.ReLU(), nn.Flatten(),
                         nn.Linear(64, 5), nn.BatchNorm1d(5))


converted, plain = dist.SyncBatchNorm.convert_sync_batchnorm(bn_model()), bn_model()
assert [type(m).__name__ for m in converted].count("SyncBatchNorm") == 2
for step in range(2):
    converted(ef.tensor(images[rank::2]))
    plain(ef.tensor(images))
for key, value in plain.state_dict().items():
    np.testing.assert_allclose(converted.state_dict()[key].numpy(), value.numpy(), rtol=1e-5, atol=1e-6,
                               err_msg=key)

dist.barrier()
print(f"rank {rank}: ok")
