"""Storage SOP classes and transfer syntaxes the node accepts.

A lumbar MR study carries MR images (classic and enhanced), scanner screenshots and
reports (secondary capture, SR, PDF), presentation states and key object selections, and
other nodes' SEGs. CT and radiographs are accepted too so that a wrong study sent here is
recorded and ignored with a reason instead of failing at the PACS.
"""

from __future__ import annotations

from typing import Final

from pydicom.uid import (
    JPEG2000,
    DeflatedExplicitVRLittleEndian,
    ExplicitVRBigEndian,
    ExplicitVRLittleEndian,
    ImplicitVRLittleEndian,
    JPEG2000Lossless,
    JPEGBaseline8Bit,
    JPEGExtended12Bit,
    JPEGLossless,
    JPEGLosslessSV1,
    JPEGLSLossless,
    JPEGLSNearLossless,
    RLELossless,
)
from pynetdicom import sop_class as sc

STORAGE_CLASSES: Final[dict[str, str]] = {
    str(uid): name
    for name, uid in (
        ("MR Image", sc.MRImageStorage),
        ("Enhanced MR Image", sc.EnhancedMRImageStorage),
        ("Enhanced MR Color Image", sc.EnhancedMRColorImageStorage),
        ("Legacy Converted Enhanced MR", sc.LegacyConvertedEnhancedMRImageStorage),
        ("MR Spectroscopy", sc.MRSpectroscopyStorage),
        ("Secondary Capture", sc.SecondaryCaptureImageStorage),
        ("MF Grayscale Byte SC", sc.MultiFrameGrayscaleByteSecondaryCaptureImageStorage),
        ("MF Grayscale Word SC", sc.MultiFrameGrayscaleWordSecondaryCaptureImageStorage),
        ("MF True Color SC", sc.MultiFrameTrueColorSecondaryCaptureImageStorage),
        ("Basic Text SR", sc.BasicTextSRStorage),
        ("Enhanced SR", sc.EnhancedSRStorage),
        ("Comprehensive SR", sc.ComprehensiveSRStorage),
        ("Comprehensive 3D SR", sc.Comprehensive3DSRStorage),
        ("Segmentation", sc.SegmentationStorage),
        ("Label Map Segmentation", sc.LabelMapSegmentationStorage),
        ("Key Object Selection", sc.KeyObjectSelectionDocumentStorage),
        ("Grayscale Softcopy PS", sc.GrayscaleSoftcopyPresentationStateStorage),
        ("Encapsulated PDF", sc.EncapsulatedPDFStorage),
        ("CT Image", sc.CTImageStorage),
        ("Enhanced CT Image", sc.EnhancedCTImageStorage),
        ("Digital X-Ray (presentation)", sc.DigitalXRayImageStorageForPresentation),
        ("Computed Radiography", sc.ComputedRadiographyImageStorage),
    )
}

TRANSFER_SYNTAXES: Final[list[str]] = [
    ExplicitVRLittleEndian,
    ImplicitVRLittleEndian,
    DeflatedExplicitVRLittleEndian,
    ExplicitVRBigEndian,
    JPEGBaseline8Bit,
    JPEGExtended12Bit,
    JPEGLosslessSV1,
    JPEGLossless,
    JPEGLSLossless,
    JPEGLSNearLossless,
    JPEG2000Lossless,
    JPEG2000,
    RLELossless,
]

#: what the node itself produces; these are stored as results, never trigger analysis
RESULT_CLASSES: Final[frozenset[str]] = frozenset(
    str(uid)
    for uid in (
        sc.Comprehensive3DSRStorage,
        sc.ComprehensiveSRStorage,
        sc.EnhancedSRStorage,
        sc.SegmentationStorage,
        sc.LabelMapSegmentationStorage,
        sc.KeyObjectSelectionDocumentStorage,
        sc.SecondaryCaptureImageStorage,
    )
)
