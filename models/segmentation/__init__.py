"""Slice-wise 2-D segmentation of sagittal lumbar MR into vertebra, disc and canal."""
