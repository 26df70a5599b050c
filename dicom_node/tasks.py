"""Names of the queued tasks and their queues: the only thing node and workers must agree on."""

from __future__ import annotations

from typing import Final

PROCESS_STUDY: Final = "lumbar.process_study"
DELIVER_RESULTS: Final = "lumbar.deliver_results"
RELAY_OUTBOX: Final = "lumbar.relay_outbox"
RECONCILE: Final = "lumbar.reconcile"
#: a corrected SR from radiologists' reviews: builds DICOM with highdicom, so it runs where
#: the imaging stack is (the gpu queue's worker image), not on the io worker
CORRECTED_REPORT: Final = "lumbar.corrected_report"

GPU_QUEUE: Final = "gpu"
IO_QUEUE: Final = "io"

QUEUE_OF: Final[dict[str, str]] = {
    PROCESS_STUDY: GPU_QUEUE,
    DELIVER_RESULTS: IO_QUEUE,
    RELAY_OUTBOX: IO_QUEUE,
    RECONCILE: IO_QUEUE,
    CORRECTED_REPORT: GPU_QUEUE,
}
