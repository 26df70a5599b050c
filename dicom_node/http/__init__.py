"""HTTP side of the node: DICOMweb (STOW/QIDO/WADO), admin API, metrics and health."""
