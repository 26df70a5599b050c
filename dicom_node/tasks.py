"""Names of the queued tasks and their queues: the only thing node and workers must agree on."""

from __future__ import annotations

from typing import Final

PROCESS_STUDY: Final = "lumbar.process_study"
DELIVER_RESULTS: Final = "lumbar.deliver_results"
RELAY_OUTBOX: Final = "lumbar.relay_outbox"
RECONCILE: Final = "lumbar.reconcile"

GPU_QUEUE: Final = "gpu"
IO_QUEUE: Final = "io"

QUEUE_OF: Final[dict[str, str]] = {
    PROCESS_STUDY: GPU_QUEUE,
    DELIVER_RESULTS: IO_QUEUE,
    RELAY_OUTBOX: IO_QUEUE,
    RECONCILE: IO_QUEUE,
}
