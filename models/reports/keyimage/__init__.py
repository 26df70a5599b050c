"""Key image (Secondary Capture) and the Key Object Selection that flags it."""

from models.reports.keyimage.sop import build_key_image, build_kos

__all__ = ["build_key_image", "build_kos"]
