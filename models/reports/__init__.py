"""DICOM result objects of a study: SEG, TID 1500 SR, key image and KOS (highdicom)."""

from models.reports.keyimage import build_key_image, build_kos
from models.reports.seg import build_seg
from models.reports.sr import build_sr
from models.reports.writer import write_results

__all__ = ["build_key_image", "build_kos", "build_seg", "build_sr", "write_results"]
