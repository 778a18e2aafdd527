"""`MNIST`: torchvision's dataset class over raw IDX files, read by easyfit.data.datasets."""
from pathlib import Path

from PIL import Image

from easyfit.data import datasets as easyfit_datasets


class MNIST:
    """Items `(transform(PIL image), int label)` from `root/MNIST/raw/*-ubyte[.gz]`.

    As torchvision's class when its raw files are present; `download=True` is accepted
    but nothing is ever downloaded: missing files raise easyfit's DatasetNotFoundError
    naming the folder.
    """

    def __init__(self, root, train=True, download=False, transform=None, target_transform=None):
        raw = Path(root).expanduser() / "MNIST" / "raw"
        (train_images, train_labels), (test_images, test_labels) = easyfit_datasets.mnist(path=raw, download=False)
        self.data, self.targets = (train_images, train_labels) if train else (test_images, test_labels)
        self.train = train
        self.transform = transform
        self.target_transform = target_transform

    def __len__(self):
        return len(self.data)

    def __getitem__(self, index):
        image = Image.fromarray(self.data[index], mode="L")
        target = int(self.targets[index])
        if self.transform is not None:
            image = self.transform(image)
        if self.target_transform is not None:
            target = self.target_transform(target)
        return image, target
