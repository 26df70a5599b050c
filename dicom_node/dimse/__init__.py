"""DICOM upper-layer services: the C-STORE/C-ECHO SCP and the C-STORE SCU for results."""
