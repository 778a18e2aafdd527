"""`save_image`: a batch of images as one grid picture, as torchvision.utils.save_image lays it out."""
import math

import numpy as np
from PIL import Image


def save_image(tensor, fp, nrow=8, padding=2, pad_value=0.0):
    """Write a (B, C, H, W) or (C, H, W) tensor with values in [0, 1] as a grid, `nrow` images a row."""
    images = np.asarray(tensor.detach().numpy(), dtype=np.float32)
    if images.ndim == 3:
        images = images[None]
    if images.ndim != 4 or images.shape[1] not in (1, 3):
        raise ValueError(f"save_image needs (B, 1|3, H, W) images, got shape {images.shape}")
    if images.shape[1] == 1:
        images = np.repeat(images, 3, axis=1)
    count, _, height, width = images.shape
    columns = min(nrow, count)
    rows = math.ceil(count / columns)
    cell_h, cell_w = height + padding, width + padding
    grid = np.full((3, rows * cell_h + padding, columns * cell_w + padding), pad_value, dtype=np.float32)
    for k in range(count):
        top, left = (k // columns) * cell_h + padding, (k % columns) * cell_w + padding
        grid[:, top:top + height, left:left + width] = images[k]
    pixels = np.clip(grid * 255 + 0.5, 0, 255).astype(np.uint8).transpose(1, 2, 0)
    Image.fromarray(pixels).save(fp)
