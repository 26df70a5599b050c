"""Canonical orientation, resampling and label mapping of segmentation inputs."""

from __future__ import annotations

import numpy as np
import pytest

from models.segmentation.preprocess import (
    Orientation,
    normalise_intensity,
    resample_labels,
    resampled_shape,
    spider_to_semantic,
)


def _sagittal_affine(row_dir: list[float], col_dir: list[float],
                     spacing: tuple[float, float] = (0.6, 0.7)) -> np.ndarray:
    affine = np.eye(4)
    affine[:3, 0] = np.cross(row_dir, col_dir) * 4.0
    affine[:3, 1] = np.asarray(row_dir) * spacing[0]
    affine[:3, 2] = np.asarray(col_dir) * spacing[1]
    return affine


@pytest.mark.parametrize(("row_dir", "col_dir", "transpose", "flip_r", "flip_c"), [
    ([0, 0, -1], [0, 1, 0], False, False, False),   # canonical: rows to feet, cols to back
    ([0, 0, 1], [0, -1, 0], False, True, True),
    ([0, 1, 0], [0, 0, -1], True, False, False),     # DICOM default sagittal, transposed
    ([0, -1, 0], [0, 0, 1], True, True, True),
])
def test_orientation_round_trip(row_dir, col_dir, transpose, flip_r, flip_c):
    orientation = Orientation.from_affine(_sagittal_affine(row_dir, col_dir))
    assert (orientation.transpose, orientation.flip_rows, orientation.flip_cols) == (
        transpose, flip_r, flip_c)
    expected_spacing = (0.7, 0.6) if transpose else (0.6, 0.7)
    assert orientation.spacing == pytest.approx(expected_spacing)
    array = np.arange(2 * 5 * 7).reshape(2, 5, 7)
    canonical = orientation.to_canonical(array)
    assert np.array_equal(orientation.from_canonical(canonical), array)


def test_canonical_places_head_at_row_zero():
    # row index runs towards the head: the head pixel is the last row of the source
    orientation = Orientation.from_affine(_sagittal_affine([0, 0, 1], [0, 1, 0]))
    array = np.zeros((1, 4, 3))
    array[0, -1, 0] = 1  # most superior, most anterior
    assert orientation.to_canonical(array)[0, 0, 0] == 1


def test_axial_grid_is_rejected():
    with pytest.raises(ValueError, match="not a sagittal"):
        Orientation.from_affine(_sagittal_affine([1, 0, 0], [0, 1, 0]))


def test_spider_to_semantic_mapping():
    labels = np.array([[0, 1, 5, 50, 105, 100, 201, 206]], dtype=np.uint16)
    assert spider_to_semantic(labels).tolist() == [[0, 1, 1, 1, 1, 3, 2, 2]]
    with pytest.raises(ValueError, match="300"):
        spider_to_semantic(np.array([[300]]))


def test_normalise_is_contrast_invariant():
    rng = np.random.default_rng(0)
    image = rng.gamma(2.0, 100.0, size=(64, 48))
    a = normalise_intensity(image)
    b = normalise_intensity(image * 7.0 + 300.0)  # other scanner scaling, same anatomy
    assert a.min() >= 0 and a.max() <= 1
    assert np.allclose(a, b, atol=1e-5)
    assert not normalise_intensity(np.full((8, 8), 5.0)).any()


def test_resampling_sizes_and_errors():
    assert resampled_shape((320, 256), (0.94, 0.94)) == (301, 241)
    assert resampled_shape((512, 512), (0.5, 0.5)) == (256, 256)
    with pytest.raises(ValueError, match="spacing"):
        resampled_shape((10, 10), (0.0, 1.0))
    labels = np.zeros((10, 10), dtype=np.uint8)
    labels[2:6, 3:7] = 3
    up = resample_labels(labels, (20, 20))
    assert set(np.unique(up)) == {0, 3} and (up == 3).sum() == 64
