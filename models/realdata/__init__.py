"""Real SPIDER MRI shipped beside the project (``../shared/realdata``) and the means to run
the node's own pipeline on it: readers for the slice folders and their expert gradings, and
a writer that wraps slices as a DICOM study the way a PACS would send them."""
