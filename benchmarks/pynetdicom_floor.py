"""The floor under any pynetdicom receiver: the node's AE and C-STORE framing, no storing.

Same presentation contexts, PDU size and file assembly as `lumbar-node serve`, and a handler
that answers success once it holds the instance's bytes: what is left of the node's cost
per instance when spooling, parsing and indexing are taken away. Prints one line per
instance so the benchmark can check that every one arrived.

    .venv/bin/python benchmarks/pynetdicom_floor.py PORT [--chunked]

``--chunked`` turns on pynetdicom's STORE_RECV_CHUNKED_DATASET (the data set written to a
temporary file as its fragments arrive, read back here): what that option costs or saves
on its own.
"""

from __future__ import annotations

import signal
import sys
import threading
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from pynetdicom import _config, evt

from dicom_node.config import NodeConfig
from dicom_node.dimse.part10 import from_c_store
from dicom_node.dimse.scp import build_ae, calling_peer
from dicom_node.ingest import quiet_value_checks

AE_TITLE = "FLOOR"


def main(argv: list[str]) -> int:
    quiet_value_checks()
    ae = build_ae(NodeConfig(ae_title=AE_TITLE))
    lock = threading.Lock()

    chunked = "--chunked" in argv
    _config.STORE_RECV_CHUNKED_DATASET = chunked

    def on_store(event: Any) -> int:
        if chunked:
            path = Path(event.dataset_path)
            data = path.read_bytes()
            path.unlink()
        else:
            data = from_c_store(event, calling_peer(event)[0])
        with lock:
            print(len(data), flush=True)
        return 0x0000

    server = ae.start_server(("127.0.0.1", int(argv[0])), block=False,
                             evt_handlers=[(evt.EVT_C_STORE, on_store)])
    done = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: done.set())
    done.wait()
    server.shutdown()
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
