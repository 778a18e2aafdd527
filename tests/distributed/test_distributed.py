"""easyfit.distributed: a world of one in-process, and real 2-process jobs under mpiexec (slow).

The 2-process tests run `mpiexec -n 2` on the scripts beside this file and compare with
one process at the global batch size; they skip with a reason when mpiexec or mpi4py
is missing (`pip install 'easyfit[mpi]'`).
"""
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

import easyfit as ef
from easyfit import distributed as dist, nn
from easyfit.data import ArrayDataset, DataLoader
from easyfit.learner import AvgMetric, F1Score, GatherMetric, Perplexity, accuracy

HERE = Path(__file__).resolve().parent
ROOT = HERE.parents[1]
sys.path.insert(0, str(HERE))
import _worker  # noqa: E402  (the script the 2-process jobs run; its learner is the reference too)
import _char_rnn_worker  # noqa: E402


def _mpiexec():
    beside = Path(sys.executable).parent / "mpiexec"
    return str(beside) if beside.is_file() else shutil.which("mpiexec")


def _have_mpi():
    try:
        import mpi4py  # noqa: F401
    except ImportError:
        return False
    return _mpiexec() is not None


needs_mpi = pytest.mark.skipif(not _have_mpi(), reason="needs mpiexec and mpi4py: pip install 'easyfit[mpi]'")


def _env():
    env = {k: v for k, v in os.environ.items() if not k.startswith(("PMI_", "PMIX_", "OMPI_", "HYDRA_"))}
    env["PYTHONPATH"] = os.pathsep.join([str(ROOT)] + ([env["PYTHONPATH"]] if env.get("PYTHONPATH") else []))
    env["OPENBLAS_NUM_THREADS"] = env["OMP_NUM_THREADS"] = "1"
    return env


def _mpirun(*args, timeout=120):
    return subprocess.run([_mpiexec(), "-n", "2", sys.executable, *map(str, args)], capture_output=True, text=True,
                          env=_env(), timeout=timeout, cwd=str(ROOT))


# ----------------------------------------------------------------------------------
# a world of one (no MPI needed)
# ----------------------------------------------------------------------------------
def test_world_of_one_collectives_return_their_input():
    assert dist.init() == 1 and dist.rank() == 0 and dist.world_size() == 1 and dist.is_main()
    dist.barrier()
    x = ef.tensor([1.0, 2.0])
    reduced = dist.all_reduce(x, op="mean")
    assert isinstance(reduced, ef.Tensor) and np.array_equal(reduced.numpy(), [1.0, 2.0])
    assert reduced.array is not x.array  # a new value, never the input itself
    assert dist.all_reduce(3) == 3 and isinstance(dist.all_reduce(2.5), float)
    assert np.array_equal(dist.broadcast(np.arange(3)), np.arange(3))
    assert [g.tolist() for g in dist.all_gather(np.arange(2))] == [[0, 1]]
    with pytest.raises(ValueError, match="op must be one of"):
        dist.all_reduce(x, op="average")
    with pytest.raises(ValueError, match="root must be a rank"):
        dist.broadcast(x, root=1)


def test_plain_import_and_a_world_of_one_never_load_mpi4py():
    code = ("import sys, easyfit, easyfit.distributed as d; assert d.init() == 1; "
            "sys.exit(1 if 'mpi4py' in sys.modules else 0)")
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=_env())
    assert result.returncode == 0, result.stderr


def test_under_a_launcher_without_mpi4py_the_error_names_the_extra():
    code = ("import sys; sys.modules['mpi4py'] = None\n"
            "import easyfit.distributed as d\n"
            "try:\n    d.init()\nexcept ImportError as e:\n    print(e)\n")
    env = dict(_env(), PMI_SIZE="2", PMI_RANK="0")
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env)
    assert "pip install 'easyfit[mpi]'" in result.stdout, result.stdout + result.stderr


@pytest.mark.parametrize("n_shards", [2, 3])
def test_sharding_follows_the_distributed_sampler_rule(n_shards):
    dataset = ArrayDataset(np.arange(23))
    one = DataLoader(dataset, batch_size=4 * n_shards, shuffle=True, seed=5, num_workers=0)
    shards = [DataLoader(dataset, batch_size=4, shuffle=True, seed=5, num_workers=0).shard(r, n_shards)
              for r in range(n_shards)]
    for epoch in (1, 2):
        whole = one.batches_for_epoch(epoch)
        parts = [dl.batches_for_epoch(epoch) for dl in shards]
        short_last = len(whole[-1]) < n_shards  # training drops it everywhere: no rank is left without data
        assert all(len(p) == len(whole) - short_last for p in parts)
        for k in range(len(parts[0])):
            for rank in range(n_shards):
                assert np.array_equal(parts[rank][k], whole[k][rank::n_shards])
            assert sorted(np.concatenate([p[k] for p in parts])) == sorted(whole[k])
    # the batches themselves (not only the plan) come from the shard
    (xb,), = [next(iter(shards[1]))]
    assert np.array_equal(xb.numpy(), one.batches_for_epoch(shards[1].epoch)[0][1::n_shards])


def test_sharding_a_short_last_batch():
    dataset = ArrayDataset(np.arange(9))  # global batches of 8 and 1
    train = [DataLoader(dataset, batch_size=4, num_workers=0).shard(r, 2) for r in range(2)]
    valid = [DataLoader(dataset, batch_size=4, num_workers=0).shard(r, 2, equal_counts=False) for r in range(2)]
    assert [len(dl) for dl in train] == [1, 1]            # training: the 1-sample batch is dropped everywhere
    assert [len(dl) for dl in valid] == [2, 1]            # validation: every sample is seen once
    assert np.array_equal(valid[0].batches_for_epoch(1)[1], [8])
    undone = valid[1].shard(0, 1)
    assert len(undone) == 3
    with pytest.raises(ValueError, match="rank must be in"):
        DataLoader(dataset).shard(2, 2)


def test_sharding_with_a_batch_sampler_deals_out_whole_batches():
    from easyfit.data.text import SortedBatchSampler
    lengths = np.random.default_rng(0).integers(1, 50, size=45)
    dataset = ArrayDataset(np.arange(45))

    def loader():
        return DataLoader(dataset, batch_size=4, num_workers=0, seed=2,
                          batch_sampler=SortedBatchSampler(lengths, 4, shuffle=True))

    whole = loader().batches_for_epoch(1)  # 12 batches: 11 of 4 and 1 of 1
    train = [loader().shard(r, 5).batches_for_epoch(1) for r in range(5)]
    valid = [loader().shard(r, 5, equal_counts=False).batches_for_epoch(1) for r in range(5)]
    assert [len(b) for b in train] == [2] * 5  # the 2 batches of the incomplete third group are dropped
    assert [len(b) for b in valid] == [3, 3, 2, 2, 2]
    for rank in range(5):
        assert all(np.array_equal(a, b) for a, b in zip(valid[rank], whole[rank::5]))


def _share_states(metric_factory, preds, targets, n_shards, batch_size):
    """Each rank's metric after accumulating its strided shares of every batch."""
    metrics = [metric_factory() for _ in range(n_shards)]
    for start in range(0, len(preds), batch_size * n_shards):
        for rank, metric in enumerate(metrics):
            p = preds[start:start + batch_size * n_shards][rank::n_shards]
            t = targets[start:start + batch_size * n_shards][rank::n_shards]
            if len(t):
                loss = float(-np.log(np.exp(p[np.arange(len(t)), t]) / np.exp(p).sum(-1)).mean())
                metric.accumulate(ef.tensor(p), ef.tensor(t), loss)
    return metrics


def _sync_all(metrics):
    """Run Metric.sync in every simulated rank with an all_gather over the ranks' states."""
    sent = []

    class Collected(Exception):
        pass

    def collect(obj):
        sent.append(obj)
        raise Collected

    for metric in metrics:
        try:
            metric.sync(collect)
        except Collected:
            pass
    for metric in metrics:
        metric.sync(lambda obj: list(sent))


def order_sensitive(pred, target):
    """A whole-set function that depends on item order (so the union must be put back in order)."""
    t = target.numpy()
    return float((t * np.arange(len(t))).sum())


@pytest.mark.parametrize("factory", [lambda: AvgMetric(accuracy), Perplexity, lambda: F1Score(),
                                     lambda: GatherMetric(order_sensitive)],
                         ids=["accuracy", "perplexity", "f1", "gathered"])
def test_metrics_synced_over_ranks_equal_one_process(factory):
    rng = np.random.default_rng(1)
    preds = rng.normal(size=(37, 4)).astype(np.float32)
    targets = rng.integers(0, 4, size=37)
    (one,) = _share_states(factory, preds, targets, 1, 6)
    ranks = _share_states(factory, preds, targets, 3, 2)
    _sync_all(ranks)
    for metric in ranks:
        assert metric.value == pytest.approx(one.value, rel=1e-6)  # float32 losses summed in another order


def test_gathered_metric_sync_accepts_whole_batches_of_unequal_size():
    shares = [(np.arange(4.0), np.arange(4)), (np.arange(1.0), np.arange(1))]  # a sampler's batches of 4 and 1
    metrics = []
    for preds, targets in shares:
        metric = GatherMetric(lambda p, t: float(p.numpy().sum()))
        metric.accumulate(ef.tensor(preds), ef.tensor(targets), 0.0)
        metrics.append(metric)
    _sync_all(metrics)
    assert [m.value for m in metrics] == [6.0, 6.0]


def test_distrib_ctx_in_a_world_of_one_trains_as_usual(tmp_path):
    plain = _worker.make_learner(16, tmp_path)
    plain.fit(1)
    inside = _worker.make_learner(16, tmp_path)
    with inside.distrib_ctx() as learn:
        assert learn is inside and inside.parallel is None  # nothing to shard or reduce
        inside.fit(1)
    assert inside.parallel is None and not hasattr(inside, "data_parallel")
    for key, value in plain.model.state_dict().items():
        assert np.array_equal(value.numpy(), inside.model.state_dict()[key].numpy()), key


def _two_process_world(monkeypatch):
    """Make distrib_ctx's checks see a world of 2 (they run before any collective)."""
    from easyfit.distributed import world
    world.init()  # the real world of one first: rank() and barrier() still ask it
    monkeypatch.setattr(world, "world_size", lambda: 2)
    monkeypatch.setattr(world, "init", lambda: 2)


def test_distrib_ctx_refuses_a_metric_that_cannot_be_synced(tmp_path, monkeypatch):
    class Median(ef.learner.Metric):
        def reset(self):
            pass

        def accumulate(self, pred, target, loss):
            pass

        @property
        def value(self):
            return 0.0

    _two_process_world(monkeypatch)
    learn = _worker.make_learner(8, tmp_path)
    learn.metrics.append(Median())
    with pytest.raises(TypeError, match="'median'.*sync"):
        with learn.distrib_ctx():
            pass
    assert learn.parallel is None


class _OwnPlan(DataLoader):
    """A loader with its own plan but DataLoader's shard, which would ignore that plan."""

    def batches_for_epoch(self, epoch):
        return super().batches_for_epoch(epoch)[::-1]


def test_distrib_ctx_refuses_a_loader_it_cannot_shard(tmp_path, monkeypatch):
    from easyfit.data import DataLoaders
    _two_process_world(monkeypatch)
    learn = _worker.make_learner(8, tmp_path)
    learn.dls = DataLoaders(_OwnPlan(learn.dls.train.dataset, batch_size=4), learn.dls.valid)
    with pytest.raises(TypeError, match=r"train loader \(_OwnPlan\) cannot be sharded"):
        with learn.distrib_ctx():
            pass
    assert learn.parallel is None and learn.dls.valid.num_shards == 1


def test_distrib_ctx_shards_a_language_model_stream_by_rows(tmp_path, monkeypatch):
    from easyfit.data import DataLoaders, LMDataLoader
    _two_process_world(monkeypatch)
    learn = _worker.make_learner(8, tmp_path)
    learn.dls = DataLoaders(LMDataLoader(np.arange(500), batch_size=4, bptt=8),
                            LMDataLoader(np.arange(40), batch_size=4, bptt=8))
    with learn.distrib_ctx():  # rank 0 of 2: rows 0, 2, 4, 6 of one process's 8
        assert [dl.num_shards for dl in (learn.dls.train, learn.dls.valid)] == [2, 2]
        xb, _ = learn.dls.train.one_batch()
        np.testing.assert_array_equal(xb.numpy()[:, 0], np.arange(0, 8, 2) * (499 // 8))
    assert [dl.num_shards for dl in (learn.dls.train, learn.dls.valid)] == [1, 1]
    # a stream too short for 2 x 4 rows is refused, and nothing stays sharded
    learn.dls = DataLoaders(LMDataLoader(np.arange(500), batch_size=4, bptt=8),
                            LMDataLoader(np.arange(6), batch_size=4, bptt=8))
    with pytest.raises(ValueError, match="too short for 2 processes x batch_size=4"):
        with learn.distrib_ctx():
            pass
    assert learn.parallel is None and [dl.num_shards for dl in (learn.dls.train, learn.dls.valid)] == [1, 1]


def test_distrib_ctx_notes_ctrl_c_and_raises_it_where_the_ranks_agree(tmp_path, monkeypatch):
    """Inside the block SIGINT is noted, not raised where it lands (a rank could be left in a
    collective); the ranks act on it at the next collective, here the block's closing one."""
    import signal
    _two_process_world(monkeypatch)
    learn = _worker.make_learner(8, tmp_path)
    with pytest.raises(KeyboardInterrupt):
        with learn.distrib_ctx():
            callback = learn.parallel
            assert signal.getsignal(signal.SIGINT) == callback.note_interrupt
            os.kill(os.getpid(), signal.SIGINT)   # noted: the block goes on
            assert callback.interrupted
            with pytest.raises(KeyboardInterrupt):
                callback.note_interrupt(signal.SIGINT, None)   # a second Ctrl-C is raised at once
    assert signal.getsignal(signal.SIGINT) is signal.default_int_handler and learn.parallel is None
    assert learn.dls.train.num_shards == 1


class _NotMain:
    """Stands in for the data-parallel object of a rank other than 0."""
    is_main, rank, world_size, batch_items, batch_samples = False, 1, 2, None, None

    def barrier(self):
        pass


def test_ranks_other_than_0_run_no_printing_callbacks_and_write_no_files(tmp_path, capsys):
    learn = _worker.make_learner(8, tmp_path)
    learn.parallel = _NotMain()
    learn._build_hooks()
    learn.fit(1, cbs=[ef.learner.CSVLogger()])
    learn.save("checkpoint")
    learn.export(tmp_path / "model.safetensors")
    assert capsys.readouterr().out == ""
    assert not list(tmp_path.rglob("*.*"))


def test_sync_batchnorm_in_a_world_of_one_is_batchnorm():
    ef.manual_seed(0)
    x = ef.randn(6, 3, 4, 4)
    sync, plain = dist.SyncBatchNorm(3), nn.BatchNorm2d(3)
    assert list(sync.state_dict()) == list(plain.state_dict())
    assert np.allclose(sync(x).numpy(), plain(x).numpy())
    assert np.allclose(sync.running_var.numpy(), plain.running_var.numpy())


def test_convert_sync_batchnorm_replaces_every_batchnorm_and_keeps_its_state():
    class Net(nn.Module):
        def __init__(self):
            super().__init__()
            self.body = nn.Sequential(nn.Conv2d(3, 4, 3), nn.BatchNorm2d(4, momentum=None), nn.ReLU())
            self.heads = [nn.Linear(4, 2), nn.BatchNorm1d(2, eps=1e-3)]
            self.same = self.body[1]                                  # one module held twice
            self.pair = (nn.BatchNorm1d(3, affine=False), nn.Identity())

    model = Net().eval()
    before, weight = model.state_dict(), model.body[1].weight
    assert dist.SyncBatchNorm.convert_sync_batchnorm(model) is model
    assert [type(m).__name__ for m in model.modules()].count("SyncBatchNorm") == 3
    assert model.same is model.body[1] and model.body[1].weight is weight   # optimizers keep their Parameters
    bn = model.body[1]
    assert (bn.momentum, model.heads[1].eps, model.pair[0].affine, bn.training) == (None, 1e-3, False, False)
    after = model.state_dict()
    assert list(after) == list(before)
    assert all(np.array_equal(after[k].numpy(), before[k].numpy()) for k in before)
    single = dist.SyncBatchNorm.convert_sync_batchnorm(nn.BatchNorm2d(3))
    assert type(single) is dist.SyncBatchNorm
    with pytest.raises(ValueError, match="process groups"):
        dist.SyncBatchNorm.convert_sync_batchnorm(model, process_group="group")


# ----------------------------------------------------------------------------------
# two processes (mpiexec -n 2)
# ----------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def two_process_run(tmp_path_factory):
    """2 processes x batch 8: trains 2 epochs, saves 'mid' after epoch 0 and 'final'."""
    out = tmp_path_factory.mktemp("two")
    result = _mpirun(HERE / "_worker.py", "train", out)
    assert result.returncode == 0, result.stdout + result.stderr
    return out, result


@pytest.fixture(scope="module")
def one_process_run(tmp_path_factory):
    """The reference: one process at the global batch (16), same seeds; saves 'mid1' after epoch 0."""
    out = tmp_path_factory.mktemp("one")
    learn = _worker.make_learner(16, out)
    learn.remove_cb(learn.progress)
    learn.fit_one_cycle(2, lr_max=1e-2, cbs=[_worker.SaveAfterFirstEpoch("mid1")])
    return out, learn, _worker.weights(learn), learn.validate()


def _assert_weights_close(got, expected):
    for key, value in expected.items():
        np.testing.assert_allclose(got[key], value, rtol=1e-4, atol=1e-6, err_msg=key)


@needs_mpi
@pytest.mark.slow
def test_two_processes_equal_one_process_at_the_global_batch(two_process_run, one_process_run):
    out, result = two_process_run
    _, learn, expected, expected_valid = one_process_run
    ranks = [dict(np.load(out / f"rank{r}.npz")) for r in range(2)]
    for key in ranks[0]:
        assert np.array_equal(ranks[0][key], ranks[1][key]), f"{key} differs between the ranks"
    _assert_weights_close(ranks[0], expected)
    for r in range(2):
        recorded = json.loads((out / f"rank{r}.json").read_text())
        # validation loss and metrics of every epoch, and validate(), equal one process's on every rank
        np.testing.assert_allclose(np.array(recorded["values"])[:, 1:], np.array(learn.recorder.values)[:, 1:],
                                   rtol=1e-5)
        np.testing.assert_allclose(recorded["validate"], expected_valid, rtol=1e-5)
        np.testing.assert_allclose(recorded["losses"], learn.recorder.losses, rtol=1e-4)
    # rank 0 alone printed, wrote TensorBoard events and saved checkpoints
    assert result.stdout.count("train_loss") == 1, result.stdout
    assert len(list((out / "tb").glob("events.out.tfevents.*"))) == 1
    assert sorted(p.name for p in (out / "models").iterdir()) == ["final.safetensors", "mid.safetensors"]


@needs_mpi
@pytest.mark.slow
def test_a_two_process_checkpoint_resumes_in_one_process_and_back(two_process_run, one_process_run):
    two_out, _ = two_process_run
    one_out, _, expected, _ = one_process_run
    learn = _worker.make_learner(16, two_out)
    learn.remove_cb(learn.progress)
    learn.fit_one_cycle(2, lr_max=1e-2, resume="mid")  # written by 2 processes
    _assert_weights_close(_worker.weights(learn), expected)
    result = _mpirun(HERE / "_worker.py", "resume", one_out, "mid1")  # written by one process
    assert result.returncode == 0, result.stdout + result.stderr
    for r in range(2):
        _assert_weights_close(dict(np.load(one_out / f"rank{r}.npz")), expected)


@needs_mpi
@pytest.mark.slow
def test_gradient_accumulation_counts_the_items_of_all_processes(tmp_path):
    result = _mpirun(HERE / "_worker.py", "accumulate", tmp_path)
    assert result.returncode == 0, result.stdout + result.stderr
    learn = _worker.make_learner(16, tmp_path)
    learn.remove_cb(learn.progress)
    learn.fit(1, cbs=[ef.learner.GradientAccumulation(n_acc=40)])
    for r in range(2):
        _assert_weights_close(dict(np.load(tmp_path / f"rank{r}.npz")), _worker.weights(learn))


@needs_mpi
@pytest.mark.slow
def test_lr_find_on_two_processes_equals_one_process(tmp_path):
    result = _mpirun(HERE / "_worker.py", "lr_find", tmp_path)
    assert result.returncode == 0, result.stdout + result.stderr
    learn = _worker.make_learner(16, tmp_path)
    learn.remove_cb(learn.progress)
    expected = learn.lr_find(num_it=30)
    for r in range(2):
        found = json.loads((tmp_path / f"lr_find{r}.json").read_text())
        np.testing.assert_allclose(found["losses"], learn.recorder.lr_find_losses, rtol=1e-4)
        np.testing.assert_allclose(found["suggestions"], list(expected), rtol=1e-4)


@needs_mpi
@pytest.mark.slow
def test_an_exception_in_rank_1_ends_every_rank(tmp_path):
    result = _mpirun(HERE / "_worker.py", "fail", tmp_path, timeout=60)  # a hang would time out here
    assert result.returncode != 0, result.stdout + result.stderr
    assert "rank 1 of 2 failed" in result.stderr and "RuntimeError: boom in rank 1" in result.stderr, \
        f"exit {result.returncode}\nstdout:\n{result.stdout}\nstderr:\n{result.stderr}"
    assert not list(tmp_path.glob("rank*.npz"))


@needs_mpi
@pytest.mark.slow
def test_collectives_and_a_hand_written_loop_on_two_processes():
    result = _mpirun(HERE / "_collectives.py", timeout=60)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "rank 0: ok" in result.stdout and "rank 1: ok" in result.stdout


# ----------------------------------------------------------------------------------
# the char-RNN recipe: a language-model stream, each rank carrying its rows' recurrent state
# ----------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def char_rnn_text(tmp_path_factory):
    return _char_rnn_worker.write_text(tmp_path_factory.mktemp("text") / "text.txt")


@pytest.fixture(scope="module")
def char_rnn_two_process_run(tmp_path_factory, char_rnn_text):
    """2 processes x 4 rows: 2 epochs, 'mid' saved in the middle of epoch 1."""
    out = tmp_path_factory.mktemp("char_two")
    result = _mpirun(HERE / "_char_rnn_worker.py", "train", char_rnn_text, out)
    assert result.returncode == 0, result.stdout + result.stderr
    return out


@pytest.fixture(scope="module")
def char_rnn_one_process_run(tmp_path_factory, char_rnn_text):
    """The reference: one process at the global batch of 8 rows; 'mid1' saved at the same batch."""
    out = tmp_path_factory.mktemp("char_one")
    learn = _char_rnn_worker.make_learner(char_rnn_text, 8, out)
    learn.fit_one_cycle(_char_rnn_worker.EPOCHS, lr_max=_char_rnn_worker.LR,
                        cbs=[_char_rnn_worker.SaveAt("mid1", _char_rnn_worker.MID_ITER)])
    return out, learn, _char_rnn_worker.weights(learn), learn.validate()


@needs_mpi
@pytest.mark.slow
def test_char_rnn_on_two_processes_equals_one_process_at_the_global_batch(char_rnn_two_process_run,
                                                                         char_rnn_one_process_run):
    out = char_rnn_two_process_run
    _, learn, expected, expected_valid = char_rnn_one_process_run
    ranks = [dict(np.load(out / f"rank{r}.npz")) for r in range(2)]
    for key in ranks[0]:
        assert np.array_equal(ranks[0][key], ranks[1][key]), f"{key} differs between the ranks"
    _assert_weights_close(ranks[0], expected)
    for r in range(2):
        recorded = json.loads((out / f"rank{r}.json").read_text())
        np.testing.assert_allclose(np.array(recorded["values"])[:, 1:], np.array(learn.recorder.values)[:, 1:],
                                   rtol=1e-5)
        np.testing.assert_allclose(recorded["validate"], expected_valid, rtol=1e-5)
        np.testing.assert_allclose(recorded["losses"], learn.recorder.losses, rtol=1e-4)
    # rank 0's mid-epoch checkpoint holds both ranks' recurrent state, in one process's row order
    saved = ef.load(out / "models" / "mid.safetensors")["callbacks"]["reset_hidden_state"]
    assert [saved[k].shape for k in sorted(saved)] == [(2, 8, 16), (2, 8, 16)]  # LSTM (h, c): 2 layers x 8 rows


@needs_mpi
@pytest.mark.slow
def test_char_rnn_checkpoint_resumes_mid_epoch_from_two_processes_in_one_and_back(
        char_rnn_text, char_rnn_two_process_run, char_rnn_one_process_run):
    two_out = char_rnn_two_process_run
    one_out, _, expected, _ = char_rnn_one_process_run
    learn = _char_rnn_worker.make_learner(char_rnn_text, 8, two_out)
    learn.fit_one_cycle(_char_rnn_worker.EPOCHS, lr_max=_char_rnn_worker.LR, resume="mid")  # written by 2
    _assert_weights_close(_char_rnn_worker.weights(learn), expected)
    result = _mpirun(HERE / "_char_rnn_worker.py", "resume", char_rnn_text, one_out, "mid1")  # written by 1
    assert result.returncode == 0, result.stdout + result.stderr
    ranks = [dict(np.load(one_out / f"rank{r}.npz")) for r in range(2)]
    for key in ranks[0]:
        assert np.array_equal(ranks[0][key], ranks[1][key]), f"{key} differs between the ranks"
    _assert_weights_close(ranks[0], expected)


@needs_mpi
@pytest.mark.slow
def test_cli_nprocs_trains_the_char_rnn_recipe(tmp_path, char_rnn_text):
    out = tmp_path / "run"
    command = [sys.executable, "-m", "recipes.cli", "train", "char-rnn", "--data", str(char_rnn_text), "--epochs", "1",
               "--bs", "4", "--set", "bptt=16", "--set", "hidden_size=16", "--set", "emb_size=8",
               "--set", "chunk_chars=400", "--set", "valid_pct=0.2", "--nprocs", "2", "--out", str(out)]
    result = subprocess.run(command, capture_output=True, text=True, env=_env(), timeout=180, cwd=str(ROOT))
    assert result.returncode == 0, result.stdout + result.stderr
    assert result.stdout.count("final: valid_loss") == 1 and result.stdout.count("train_loss") == 1, result.stdout
    assert json.loads((out / "results.json").read_text())["perplexity"] < 30  # 40-odd characters: it learned
    assert (out / "model.safetensors").is_file() and (out / "models" / "checkpoint.safetensors").is_file()
    generated = subprocess.run([sys.executable, "-m", "recipes.cli", "generate", str(out), "--prompt", "the ",
                                "--length", "20", "--seed", "0"], capture_output=True, text=True, env=_env(),
                               timeout=60, cwd=str(ROOT))
    assert generated.returncode == 0 and generated.stdout.startswith("the "), generated.stdout + generated.stderr


# ----------------------------------------------------------------------------------
# the command line
# ----------------------------------------------------------------------------------
def test_cli_nprocs_without_mpi4py_names_the_extra(tmp_path, monkeypatch, capsys):
    from recipes import cli
    monkeypatch.chdir(tmp_path)
    monkeypatch.setitem(sys.modules, "mpi4py", None)
    assert cli.main(["train", "vision", "--nprocs", "2", "--epochs", "1"]) == cli.EXIT_USAGE
    assert "pip install 'easyfit[mpi]'" in capsys.readouterr().err
    assert not Path("easyfit-runs").exists()  # refused before a run folder was made


def test_cli_nprocs_under_mpiexec_is_refused(monkeypatch, capsys):
    from recipes import cli
    monkeypatch.setenv("PMI_SIZE", "2")
    assert cli.main(["train", "vision", "--nprocs", "2", "--epochs", "1"]) == cli.EXIT_USAGE
    assert "mpiexec -n N easyfit train" in capsys.readouterr().err
    assert "mpi4py.MPI" not in sys.modules  # refused before joining any MPI world


_CLI_ARGS = ["train", "vision", "--epochs", "1", "--bs", "32", "--set", "width=8"]


def _check_cli_run(result, out):
    assert result.returncode == 0, result.stdout + result.stderr
    assert result.stdout.count("final: valid_loss") == 1, result.stdout  # printed once, by rank 0
    assert result.stdout.count("train_loss") == 1, result.stdout
    assert json.loads((out / "results.json").read_text())["accuracy"] > 0.5
    assert len(list((out / "tensorboard").glob("events.out.tfevents.*"))) == 1
    assert (out / "model.safetensors").is_file() and (out / "models" / "checkpoint.safetensors").is_file()


@needs_mpi
@pytest.mark.slow
def test_cli_nprocs_launches_mpiexec_itself(tmp_path):
    out = tmp_path / "run"
    result = subprocess.run([sys.executable, "-m", "recipes.cli", *_CLI_ARGS, "--nprocs", "2", "--out", str(out)],
                            capture_output=True, text=True, env=_env(), timeout=180, cwd=str(ROOT))
    _check_cli_run(result, out)


@needs_mpi
@pytest.mark.slow
def test_cli_under_mpiexec(tmp_path):
    out = tmp_path / "run"
    script = shutil.which("easyfit")
    command = [script] if script else [sys.executable, "-m", "recipes.cli"]
    result = subprocess.run([_mpiexec(), "-n", "2", *command, *_CLI_ARGS, "--out", str(out)],
                            capture_output=True, text=True, env=_env(), timeout=180, cwd=str(ROOT))
    _check_cli_run(result, out)
    again = subprocess.run([_mpiexec(), "-n", "2", *command, *_CLI_ARGS, "--out", str(out)],
                           capture_output=True, text=True, env=_env(), timeout=180, cwd=str(ROOT))
    assert again.returncode == 0, again.stdout + again.stderr
    assert again.stderr.count("holds a finished run") == 1, again.stderr  # said by rank 0 alone


# --nprocs: the parent process checks the command, claims the run folder and finishes it
def _fake_ranks(monkeypatch, write, interrupt):
    """Replace mpiexec by a function that writes what the ranks would have written into the
    folder given with --out, then fails as a Ctrl-C would (or ends with exit code 0)."""
    from recipes import cli
    calls = []

    def launch(nprocs, argv):
        calls.append((nprocs, list(argv)))
        out = Path(argv[argv.index("--out") + 1])
        write(out)
        if interrupt:
            raise KeyboardInterrupt
        return 0
    monkeypatch.setattr(cli, "launch_processes", launch)
    return calls


def _config_only(out):
    (out / "config.json").write_text("{}")


def _checkpoint(out):
    _config_only(out)
    (out / "models").mkdir()
    (out / "models" / "checkpoint_last.safetensors").write_bytes(b"saved by rank 0")


def test_cli_nprocs_interrupted_with_a_checkpoint_prints_the_resume_command_once(tmp_path, monkeypatch, capsys):
    from recipes import cli
    monkeypatch.chdir(tmp_path)
    calls = _fake_ranks(monkeypatch, _checkpoint, interrupt=True)
    assert cli.main(["train", "vision", "--epochs", "1", "--nprocs", "2"]) == cli.EXIT_FAILURE
    run = Path("easyfit-runs/vision/run-001")
    assert calls == [(2, ["train", "vision", "--epochs", "1", "--out", str(run)])]  # the ranks write where told
    err = capsys.readouterr().err
    assert err.count("resume with") == 1
    assert f"easyfit train vision --resume {run} --nprocs 2" in err
    assert os.readlink("easyfit-runs/vision/latest") == "run-001"   # like a run in one process
    assert (run / "models" / "checkpoint_last.safetensors").read_bytes() == b"saved by rank 0"


def test_cli_nprocs_interrupted_before_a_checkpoint_leaves_no_empty_run(tmp_path, monkeypatch, capsys):
    from recipes import cli
    monkeypatch.chdir(tmp_path)
    _fake_ranks(monkeypatch, _checkpoint, interrupt=False)   # a finished earlier run, marked latest
    assert cli.main(["train", "vision", "--epochs", "1", "--nprocs", "2"]) == cli.EXIT_OK
    _fake_ranks(monkeypatch, _config_only, interrupt=True)
    assert cli.main(["train", "vision", "--epochs", "1", "--nprocs", "2"]) == cli.EXIT_FAILURE
    assert "nothing to resume" in capsys.readouterr().err
    assert not Path("easyfit-runs/vision/run-002").exists()   # removed, as in one process
    assert os.readlink("easyfit-runs/vision/latest") == "run-001"


def test_cli_nprocs_refuses_a_recipe_that_cannot_be_sharded_before_starting_mpiexec(tmp_path, monkeypatch, capsys):
    from recipes import char_rnn, cli
    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(char_rnn, "DATA_PARALLEL", False)  # as a recipe whose loader cannot be shared out says
    calls = _fake_ranks(monkeypatch, _checkpoint, interrupt=False)
    assert cli.main(["train", "char-rnn", "--nprocs", "2"]) == cli.EXIT_USAGE
    err = capsys.readouterr().err
    assert err.startswith("easyfit: error: the char-rnn recipe cannot train on 2 processes") and err.count("\n") == 1
    assert calls == [] and not Path("easyfit-runs").exists()


def test_cli_nprocs_checks_the_config_before_starting_mpiexec(tmp_path, monkeypatch, capsys):
    from recipes import cli
    monkeypatch.chdir(tmp_path)
    calls = _fake_ranks(monkeypatch, _checkpoint, interrupt=False)
    assert cli.main(["train", "vision", "--set", "no_such_setting=1", "--nprocs", "2"]) == cli.EXIT_USAGE
    assert "no_such_setting" in capsys.readouterr().err
    assert calls == [] and not Path("easyfit-runs").exists()


@needs_mpi
@pytest.mark.slow
def test_cli_under_mpiexec_refuses_a_recipe_that_cannot_be_sharded_once(tmp_path):
    code = ("import sys; from recipes import char_rnn, cli; char_rnn.DATA_PARALLEL = False; "
            "sys.exit(cli.main(['train', 'char-rnn']))")
    result = subprocess.run([_mpiexec(), "-n", "2", sys.executable, "-c", code],
                            capture_output=True, text=True, env=_env(), timeout=60, cwd=str(tmp_path))
    assert result.returncode == 2, result.stdout + result.stderr
    assert result.stderr.count("cannot train on 2 processes") == 1, result.stderr
    assert not (tmp_path / "easyfit-runs").exists()


@needs_mpi
@pytest.mark.slow
@pytest.mark.parametrize("signal_name", ["SIGINT", "SIGTERM"])
def test_cli_nprocs_ctrl_c_stops_every_rank_and_prints_the_resume_command(tmp_path, signal_name):
    """A real Ctrl-C (SIGINT to the command's process group, as a terminal sends it), or a
    SIGTERM to the command alone (as `timeout` or a batch system sends it)."""
    import signal
    import time
    env = _env()
    command = [sys.executable, "-m", "recipes.cli", *_CLI_ARGS[:2], "--epochs", "30", *_CLI_ARGS[4:], "--nprocs", "2"]
    process = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env,
                               cwd=str(tmp_path), start_new_session=True)
    run = tmp_path / "easyfit-runs" / "vision" / "run-001"
    checkpoint = run / "models" / "checkpoint_last.safetensors"
    deadline = time.monotonic() + 120
    while not checkpoint.is_file() and process.poll() is None and time.monotonic() < deadline:
        time.sleep(0.1)
    if signal_name == "SIGINT":
        os.killpg(process.pid, signal.SIGINT)
    else:
        process.send_signal(signal.SIGTERM)
    out, err = process.communicate(timeout=60)   # every rank ends: no hang
    if signal_name == "SIGINT":
        assert process.returncode == 1, out + err
        hint = f"easyfit train vision --resume {Path('easyfit-runs/vision/run-001')} --nprocs 2"
        assert err.count("resume with") == 1 and hint in err, err
    else:
        assert process.returncode != 0, out + err
    assert os.readlink(run.parent / "latest") == "run-001"
    assert (run / "config.json").is_file() and checkpoint.is_file()
    ef.load(checkpoint)   # complete and readable


@needs_mpi
@pytest.mark.slow
@pytest.mark.parametrize("when", ["after_a_checkpoint", "before_the_first_checkpoint"])
def test_ctrl_c_under_your_own_mpiexec_tidies_the_run_folder_as_one_process_does(tmp_path, when):
    """A real Ctrl-C to `mpiexec -n 2 easyfit train` (SIGINT to its process group, as a terminal
    sends it; mpiexec passes it on to the ranks): the ranks stop together, rank 0 tidies the
    run folder as one process would (`latest` moves to a run with a checkpoint, a run without
    one is removed) and says once how to go on, and the job ends."""
    import signal
    import time
    command = [_mpiexec(), "-n", "2", sys.executable, "-m", "recipes.cli", *_CLI_ARGS[:2], "--epochs", "30",
               *_CLI_ARGS[4:]]
    process = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=_env(),
                               cwd=str(tmp_path), start_new_session=True)
    run = tmp_path / "easyfit-runs" / "vision" / "run-001"
    checkpoint = run / "models" / "checkpoint_last.safetensors"
    waited_for = checkpoint if when == "after_a_checkpoint" else run / "config.json"
    deadline = time.monotonic() + 120
    while not waited_for.is_file() and process.poll() is None and time.monotonic() < deadline:
        time.sleep(0.01)
    assert process.poll() is None, process.communicate()
    os.killpg(process.pid, signal.SIGINT)
    out, err = process.communicate(timeout=60)   # every rank ends: no hang
    assert process.returncode != 0, out + err
    if when == "after_a_checkpoint":
        hint = f"resume with: mpiexec -n 2 easyfit train vision --resume {Path('easyfit-runs/vision/run-001')})"
        assert err.count("resume with") == 1 and hint in err, err
        assert os.readlink(run.parent / "latest") == "run-001"   # moved, as by a run in one process
        assert (run / "config.json").is_file()
        ef.load(checkpoint)   # complete and readable
    else:
        assert err.count("nothing to resume") == 1, err
        assert not run.exists() and not (run.parent / "latest").exists()   # removed, as in one process
