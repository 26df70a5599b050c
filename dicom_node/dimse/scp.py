"""The C-STORE / C-ECHO SCP.

Access is decided once per association (calling AE allowlist, optional IP pin, called AE
must be ours) and every refusal is audited. The C-STORE handler writes the dataset as the
peer encoded it (no decode/re-encode round trip) through :class:`~dicom_node.ingest.Ingestor`
and answers once the file is durable in the spool; the index row and every audit event of
the association are written by the process's :class:`~dicom_node.indexer.Indexer`, so no
answer waits for the database, and none is refused while it restarts.
"""

from __future__ import annotations

import logging
import os
import socket
import socketserver
import threading
from typing import Any

from pydicom.dataset import Dataset
from pynetdicom import AE, evt
from pynetdicom.sop_class import Verification
from pynetdicom.transport import ThreadedAssociationServer
from sqlalchemy.orm import Session, sessionmaker

from dicom_node import audit
from dicom_node.config import NodeConfig
from dicom_node.db.session import transaction
from dicom_node.dimse.part10 import from_c_store
from dicom_node.indexer import Indexer
from dicom_node.ingest import INVALID_UID, SUCCESS, IngestError, Ingestor
from dicom_node.instance_index import InstanceIndex
from dicom_node.sop_classes import STORAGE_CLASSES, TRANSFER_SYNTAXES
from dicom_node.tls import server_context

log = logging.getLogger(__name__)

REJECT_PERMANENT, SOURCE_USER = 0x01, 0x01
CALLING_AE_NOT_RECOGNISED, CALLED_AE_NOT_RECOGNISED = 0x03, 0x07


def build_ae(config: NodeConfig) -> AE:
    """The node's application entity: its title, limits and presentation contexts."""
    ae = AE(ae_title=config.ae_title)
    ae.maximum_associations = config.max_associations
    ae.maximum_pdu_size = config.max_pdu_size
    ae.require_called_aet = True
    ae.add_supported_context(Verification)
    for uid in STORAGE_CLASSES:
        ae.add_supported_context(uid, TRANSFER_SYNTAXES)
    return ae


def calling_peer(event: Any) -> tuple[str, str]:
    """Calling AE title and IP address of the association an event belongs to."""
    requestor = event.assoc.requestor
    return str(requestor.ae_title).strip(), str(requestor.address)


class StoreSCP:
    def __init__(
        self, config: NodeConfig, sessions: sessionmaker[Session], ingestor: Ingestor | None = None
    ) -> None:
        self.config = config
        self.sessions = sessions
        self._own_indexer: Indexer | None = None
        if ingestor is None:
            self._own_indexer = Indexer(sessions, InstanceIndex(config.max_instances_per_study))
            ingestor = Ingestor(config, sessions, self._own_indexer)
        self.ingestor = ingestor
        self.server: ThreadedAssociationServer | None = None
        if not config.allowed_callers:
            log.warning("ALLOWED_CALLERS is empty: every calling AE will be rejected")

    def start(self, *, reuse_port: bool = False) -> ThreadedAssociationServer:
        """Serve in background threads; returns the server (``shutdown()`` to stop).

        With ``reuse_port`` several processes bind the same port and the kernel spreads
        incoming associations over them (see :mod:`dicom_node.dimse.processes`).
        """
        if self._own_indexer is not None and not self._own_indexer.running:
            self._own_indexer.start()
        handlers = [
            (evt.EVT_REQUESTED, self._on_requested),
            (evt.EVT_ACCEPTED, self._on_accepted),
            (evt.EVT_REJECTED, self._on_rejected_by_limit),
            (evt.EVT_C_ECHO, self._on_echo),
            (evt.EVT_C_STORE, self._on_store),
        ]
        self.server = build_ae(self.config).make_server(
            (self.config.dimse_host, self.config.dimse_port),
            evt_handlers=handlers,
            ssl_context=server_context(self.config),
            server_class=_ReusePortServer if reuse_port else ThreadedAssociationServer,
        )
        threading.Thread(target=self.server.serve_forever, name="dimse-acceptor",
                         daemon=True).start()
        log.info("DICOM SCP %s listening on %s:%s", self.config.ae_title,
                 self.config.dimse_host, self.server.server_address[1])
        return self.server

    def stop(self) -> None:
        if self.server is not None:
            server, self.server = self.server, None
            # pynetdicom's own shutdown() also undoes start_server's bookkeeping, which
            # make_server does not do; stop the accept loop and close the socket directly
            socketserver.TCPServer.shutdown(server)
            server.server_close()
        if self._own_indexer is not None:
            self._own_indexer.stop()

    # --- handlers -----------------------------------------------------------------------

    def _on_requested(self, event: Any) -> None:
        requestor = event.assoc.requestor
        calling = str(requestor.primitive.calling_ae_title).strip()
        called = str(requestor.primitive.called_ae_title).strip()
        ip = str(requestor.address)
        if called != self.config.ae_title:
            self._reject(event, calling, ip, CALLED_AE_NOT_RECOGNISED,
                         f"called AE {called!r} is not {self.config.ae_title!r}")
        elif not any(c.matches(calling, ip) for c in self.config.allowed_callers):
            why = ("no callers are allowed (ALLOWED_CALLERS is empty)"
                   if not self.config.allowed_callers else f"calling AE {calling!r} from {ip} "
                   "is not in ALLOWED_CALLERS")
            self._reject(event, calling, ip, CALLING_AE_NOT_RECOGNISED, why)

    def _on_accepted(self, event: Any) -> None:
        """Audited only once negotiation succeeded: the association limit is checked after
        EVT_REQUESTED, so an entry made there could record a refused association."""
        calling, ip = calling_peer(event)
        # the receiver process, for sites running several (DIMSE_PROCESSES)
        self._audit("association.accepted", ae_title=calling, ip=ip,
                    called_ae=self.config.ae_title, receiver_pid=os.getpid())

    def _on_rejected_by_limit(self, event: Any) -> None:
        """pynetdicom's own refusal; the allowlist refusals above are audited where made.
        With our checks first, the only one left to it is the association limit."""
        calling, ip = calling_peer(event)
        why = (f"MAX_ASSOCIATIONS ({self.config.max_associations}) associations in progress "
               f"in receiver {os.getpid()}: refused as transient, the sender may retry")
        log.warning("association rejected: %s", why)
        self._audit("association.rejected", ae_title=calling, ip=ip, reason=why)

    def _reject(self, event: Any, calling: str, ip: str, diagnostic: int, why: str) -> None:
        log.warning("association rejected: %s", why)
        self._audit("association.rejected", ae_title=calling, ip=ip, reason=why)
        event.assoc.acse.send_reject(REJECT_PERMANENT, SOURCE_USER, diagnostic)
        event.assoc.kill()  # lets the DUL flush the A-ASSOCIATE-RJ before the socket closes

    def _audit(self, event_type: str, *, ae_title: str, ip: str, **detail: Any) -> None:
        indexer = self.ingestor.indexer
        if indexer is not None:  # written with the next index batch, not on this thread
            indexer.audit(event_type, ae_title=ae_title, ip=ip, actor="dimse", **detail)
            return
        try:
            with transaction(self.sessions) as session:
                audit.record(session, event_type, ae_title=ae_title, ip=ip, actor="dimse",
                             **detail)
        except Exception:  # auditing must not take the SCP down; the log keeps the trace
            log.exception("could not record audit event %s", event_type)

    def _on_echo(self, event: Any) -> int:
        return SUCCESS

    def _on_store(self, event: Any) -> int | Dataset:
        calling, ip = calling_peer(event)
        try:
            stored = self.ingestor.store(
                _as_file(event, calling),
                source="dimse",
                ae_title=calling,
                ip=ip,
                expected_sop_uid=str(event.request.AffectedSOPInstanceUID or ""),
            )
        except IngestError as exc:
            log.warning("C-STORE from %s refused (0x%04X): %s", calling, exc.status, exc.reason)
            self._audit("instance.refused", ae_title=calling, ip=ip, status=f"0x{exc.status:04X}",
                        reason=exc.reason)
            status = Dataset()
            status.Status = exc.status
            status.ErrorComment = exc.reason[:64]
            return status
        except Exception as exc:  # an unexpected fault is reported as out of resources
            log.exception("C-STORE from %s failed", calling)
            status = Dataset()
            status.Status = 0xA700
            status.ErrorComment = f"internal error: {type(exc).__name__}"[:64]
            return status
        if stored.duplicate:
            log.info("duplicate instance from %s ignored", calling)
        return SUCCESS


def _as_file(event: Any, calling: str) -> bytes:
    """The data set as the peer encoded it, as a DICOM file (no decode/re-encode)."""
    try:
        return from_c_store(event, calling)
    except ValueError as exc:  # non-ASCII or oversized request UIDs
        raise IngestError(INVALID_UID, f"request UIDs cannot be stored: {exc}") from None


class _ReusePortServer(ThreadedAssociationServer):
    """Binds with SO_REUSEPORT so sibling receiver processes can share one DICOM port."""

    def server_bind(self) -> None:
        self.socket.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
        super().server_bind()
