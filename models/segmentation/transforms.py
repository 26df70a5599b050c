"""Slice preparation and training augmentation (MONAI dictionary transforms).

Augmentation covers what differs between the 28 training patients and a clinical series:
patient posture and lordosis (rotation, shear), body size and field of view (zoom,
translation, crop), coil shading and sequence contrast (intensity scale/shift, gamma, bias
field), noise and blur from thicker clinical slices. No flips: every slice is first turned to
the canonical orientation (head up, anterior left), and a mirrored spine - canal in front of
the vertebral bodies, or the sacrum on top - is anatomy the network must never expect.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np

from models.segmentation.preprocess import (
    normalise_intensity,
    resample_image,
    resample_labels,
    resampled_shape,
)

if TYPE_CHECKING:
    from monai.transforms import Compose

    from models.segmentation.data import SliceSet

#: Training crop (pixels at TARGET_SPACING_MM): two to three lumbar levels with their canal.
PATCH_SIZE = (128, 128)


def prepare_slices(slice_set: SliceSet) -> list[dict[str, np.ndarray]]:
    """Normalise and resample every slice of a set: the network's input space."""
    items = []
    for image, label in zip(slice_set.images, slice_set.labels, strict=True):
        shape = resampled_shape(image.shape, slice_set.spacing)
        items.append({
            "image": resample_image(normalise_intensity(image), shape)[None],
            "label": resample_labels(label, shape)[None],
        })
    return items


def train_transforms(patch_size: tuple[int, int] = PATCH_SIZE) -> Compose:
    """Random crop + geometric and intensity augmentation on prepared slices."""
    from monai.transforms import (
        Compose,
        RandAdjustContrastd,
        RandAffined,
        RandBiasFieldd,
        RandGaussianNoised,
        RandGaussianSmoothd,
        RandScaleIntensityd,
        RandShiftIntensityd,
        RandSpatialCropd,
        SpatialPadd,
    )

    margin = tuple(int(s * 1.25) for s in patch_size)
    return Compose([
        SpatialPadd(keys=("image", "label"), spatial_size=margin),
        RandSpatialCropd(keys=("image", "label"), roi_size=margin, random_size=False),
        RandAffined(
            keys=("image", "label"),
            spatial_size=patch_size,
            prob=0.85,
            rotate_range=(np.deg2rad(20.0),),
            shear_range=(0.1, 0.1),
            scale_range=(0.2, 0.2),
            translate_range=(12.0, 12.0),
            mode=("bilinear", "nearest"),
            padding_mode="zeros",
        ),
        RandBiasFieldd(keys="image", prob=0.3, coeff_range=(0.0, 0.3)),
        RandScaleIntensityd(keys="image", factors=0.2, prob=0.5),
        RandShiftIntensityd(keys="image", offsets=0.1, prob=0.5),
        RandAdjustContrastd(keys="image", gamma=(0.6, 1.6), prob=0.5),
        RandGaussianSmoothd(keys="image", sigma_x=(0.3, 1.2), sigma_y=(0.3, 1.2), prob=0.2),
        RandGaussianNoised(keys="image", std=0.04, prob=0.3),
    ])
