"""What a fastai user reaches for first (issue 14, item 8): summary, ReduceLROnPlateau, MixUp,
CutMix, aug_transforms, top_losses with file names."""
import numpy as np
import pytest
from PIL import Image

import easyfit as ef
from easyfit import nn
from easyfit.data import (ArrayDataset, DataLoader, DataLoaders, ImageDataLoaders, RandomHorizontalFlip,
                          RandomLighting, RandomRotateZoom, aug_transforms)
from easyfit.learner import (Callback, ClassificationInterpretation, CutMix, Learner, MixUp, ReduceLROnPlateau,
                             accuracy)
from conftest import make_dls, make_model


def image_dls(n=32, size=8, seed=0):
    rng = np.random.default_rng(seed)
    x = rng.random((n, 3, size, size)).astype(np.float32)
    y = rng.integers(0, 2, n)
    train = DataLoader(ArrayDataset(x[:24], y[:24]), batch_size=8, shuffle=True, seed=1, num_workers=0)
    valid = DataLoader(ArrayDataset(x[24:], y[24:]), batch_size=8, num_workers=0)
    return DataLoaders(train, valid, classes=["a", "b"])


def conv_model():
    ef.manual_seed(0)
    return nn.Sequential(nn.Conv2d(3, 4, 3, padding=1), nn.BatchNorm2d(4), nn.ReLU(), nn.AdaptiveAvgPool2d(1),
                         nn.Flatten(), nn.Linear(4, 2))


def test_summary_lists_layers_output_shapes_parameters_and_trainable():
    learn = Learner(image_dls(), conv_model(), nn.CrossEntropyLoss())
    learn.freeze()
    text = learn.summary()
    lines = text.splitlines()
    conv = next(line for line in lines if line.startswith("0 ") and "Conv2d" in line)
    assert "(8, 4, 8, 8)" in conv and "112" in conv and conv.rstrip().endswith("no")   # frozen body
    bn = next(line for line in lines if line.startswith("1 ") and "BatchNorm2d" in line)
    assert bn.rstrip().endswith("yes")                                                  # train_bn
    head = next(line for line in lines if line.startswith("5 ") and "Linear" in line)
    assert "(8, 2)" in head and "10" in head and head.rstrip().endswith("yes")
    assert "total parameters: 130; trainable: 18; frozen: 112" in text
    assert repr(text) == str(text)                    # shows as a table, not a quoted string
    assert learn.model.training                       # left as it was


def test_forward_hooks_follow_pytorch():
    layer = nn.Linear(3, 2)
    seen = []
    handle = layer.register_forward_hook(lambda module, inputs, output: seen.append((module, output.shape)))
    layer(ef.ones((4, 3)))
    handle.remove()
    layer(ef.ones((4, 3)))
    assert seen == [(layer, (4, 2))]
    doubled = layer.register_forward_hook(lambda module, inputs, output: output * 2)
    np.testing.assert_allclose(layer(ef.ones((1, 3))).numpy(), 2 * layer.forward(ef.ones((1, 3))).numpy())
    doubled.remove()
    assert list(layer.state_dict()) == ["weight", "bias"]


def test_reduce_lr_on_plateau_divides_the_rate_after_patience_epochs():
    class Worse(Callback):   # the monitored loss never improves after the first epoch
        order = 55

        def after_epoch(self):
            self.learner.recorder.values[-1][1] = 1.0 + self.learner.epoch

    plateau = ReduceLROnPlateau(patience=2, factor=10.0, min_lr=1e-5)
    learn = Learner(make_dls(), make_model(), nn.CrossEntropyLoss(), lr=1e-2, cbs=[Worse(), plateau])
    learn.fit(6)
    assert [epoch for epoch, _ in plateau.reductions] == [2, 4]
    assert learn.opt.param_groups[-1]["lr"] == pytest.approx(1e-4)
    learn.fit(4)                                                  # floor at min_lr
    assert learn.opt.param_groups[-1]["lr"] == pytest.approx(1e-5)
    with pytest.raises(ValueError, match="factor must be > 1"):
        ReduceLROnPlateau(factor=0.5)


def test_mixup_blends_each_item_with_a_partner_and_the_loss_alike():
    learn = Learner(image_dls(), conv_model(), nn.CrossEntropyLoss(), cbs=[MixUp(0.4)], default_cbs=False)
    batch_x, batch_y = learn.dls.train.one_batch()
    ef.manual_seed(7)
    mix = learn.mix_up
    learn.xb, learn.yb = (batch_x,), batch_y
    mix.before_train()
    mix.before_batch()
    lam, perm = mix.lam, mix.permutation
    assert lam.shape == (8,) and (lam >= 0.5).all() and (lam <= 1).all() and sorted(perm) == list(range(8))
    weight = lam[:, None, None, None]
    expected = weight * batch_x.numpy() + (1 - weight) * batch_x.numpy()[perm]
    np.testing.assert_allclose(learn.xb[0].numpy(), expected, rtol=1e-6)
    pred = learn.model(learn.xb[0])
    per_item = nn.CrossEntropyLoss(reduction="none")
    want = (lam * per_item(pred, batch_y).numpy() + (1 - lam) * per_item(pred, batch_y[perm]).numpy()).mean()
    assert float(learn.loss_func(pred, batch_y).item()) == pytest.approx(want, rel=1e-5)
    mix.after_train()
    assert isinstance(learn.loss_func, nn.CrossEntropyLoss)      # the loss is put back for validation


def test_cutmix_pastes_a_box_of_the_partner_and_weights_the_loss_by_its_area():
    learn = Learner(image_dls(size=16), conv_model(), nn.CrossEntropyLoss(), cbs=[CutMix(1.0)], default_cbs=False)
    batch_x, batch_y = learn.dls.train.one_batch()
    ef.manual_seed(3)
    cut = learn.cut_mix
    learn.xb, learn.yb = (batch_x,), batch_y
    cut.before_train()
    cut.before_batch()
    top, bottom, left, right = cut.box
    mixed, x, perm = learn.xb[0].numpy(), batch_x.numpy(), cut.permutation
    inside = np.zeros(x.shape, bool)
    inside[:, :, top:bottom, left:right] = True
    np.testing.assert_array_equal(mixed[inside], x[perm][inside])
    np.testing.assert_array_equal(mixed[~inside], x[~inside])
    assert cut.lam[0] == pytest.approx(1 - (bottom - top) * (right - left) / 256)
    cut.after_train()
    ef.manual_seed(0)
    learn.fit(2)                                  # trains with it, losses finite, validation unmixed
    assert np.isfinite(learn.validate()[0])


def test_training_with_mixup_or_cutmix_runs_and_records_finite_losses():
    for callback in (MixUp(), CutMix()):
        learn = Learner(image_dls(), conv_model(), nn.CrossEntropyLoss(), metrics=accuracy, cbs=[callback])
        learn.fit_one_cycle(2, lr_max=1e-2)
        assert len(learn.recorder.values) == 2 and np.isfinite(np.array(learn.recorder.values)).all()
        assert isinstance(learn.loss_func, nn.CrossEntropyLoss)


def test_aug_transforms_rotate_zoom_light_and_flip_for_training_only(tmp_path):
    tfms = aug_transforms()
    assert [type(t) for t in tfms] == [RandomHorizontalFlip, RandomRotateZoom, RandomLighting]
    rng = np.random.default_rng(0)
    image = np.zeros((20, 20, 3), np.uint8)
    image[5:15, 8:12] = 255                   # a vertical bar
    rotated = RandomRotateZoom(max_rotate=45, max_zoom=1.0, p=1.0)(image, np.random.default_rng(1))
    assert rotated.shape == image.shape and rotated.dtype == np.uint8 and not np.array_equal(rotated, image)
    assert abs(int(rotated.astype(int).sum()) - int(image.astype(int).sum())) < 0.35 * image.astype(int).sum()
    zoomed = RandomRotateZoom(max_rotate=0, max_zoom=2.0, p=1.0)(image, np.random.default_rng(2))
    assert zoomed[10, 10].max() == 255 and zoomed.astype(int).sum() > image.astype(int).sum()   # the bar widens
    assert np.array_equal(RandomRotateZoom(p=0.0)(image, rng), image)
    lit = RandomLighting(0.2, p=1.0)(np.full((4, 4, 3), 100, np.uint8), np.random.default_rng(3))
    assert lit.dtype == np.uint8 and lit.std() == 0 and lit[0, 0, 0] != 100 and abs(int(lit[0, 0, 0]) - 100) <= 60
    for label in ("x", "y"):
        (tmp_path / label).mkdir()
        for i in range(4):
            Image.fromarray(rng.integers(0, 256, (12, 12, 3), dtype=np.uint8)).save(tmp_path / label / f"{i}.png")
    dls = ImageDataLoaders.from_folder(tmp_path, size=10, bs=4, seed=0, item_tfms=aug_transforms())
    assert dls.valid.item_tfms == [dls.train.item_tfms[0]]         # Resize only: augmentations train-only
    assert dls.one_batch()[0].shape == (4, 3, 10, 10)


def test_top_losses_map_to_the_files_behind_them(tmp_path, capsys):
    rng = np.random.default_rng(0)
    for label in ("x", "y"):
        (tmp_path / label).mkdir()
        for i in range(6):
            Image.fromarray(rng.integers(0, 256, (8, 8, 3), dtype=np.uint8)).save(tmp_path / label / f"{i}.png")
    dls = ImageDataLoaders.from_folder(tmp_path, valid_pct=0.5, bs=4, seed=0)
    learn = Learner(dls, conv_model(), nn.CrossEntropyLoss(), default_cbs=False)
    interp = ClassificationInterpretation.from_learner(learn)
    losses, indices, items = interp.top_losses(3, with_items=True)
    assert [str(item) for item in items] == [str(dls.valid.dataset.files[i]) for i in indices]
    for loss, index, item in zip(losses, indices, items):
        single = learn.predict(item)[2]
        label = int(dls.valid.dataset.labels[index])
        assert loss == pytest.approx(-np.log(single[label]), rel=1e-4)
    interp.print_top_losses(2)
    printed = capsys.readouterr().out
    assert "file" in printed.splitlines()[0] and str(items[0]) in printed
