"""Fetching a study from a PACS over DICOMweb (QIDO-RS search, WADO-RS retrieve).

Some sites cannot push (no routing rule, a cloud archive, a study from before the node was
installed). A pulled instance goes through the same :class:`~dicom_node.ingest.Ingestor` as a
pushed one, so it is validated, spooled, indexed, audited and closed into a job by the
running node's scheduler exactly like a C-STORE; pulling the same study twice stores nothing
new. Instances stream one at a time, so a large study never sits in memory whole.
"""

from __future__ import annotations

import io
import logging
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlparse

from sqlalchemy.orm import Session, sessionmaker

from dicom_node import audit
from dicom_node.config import NodeConfig
from dicom_node.db.session import transaction
from dicom_node.ingest import IngestError, Ingestor
from dicom_node.uids import validate_uid

log = logging.getLogger(__name__)
SOURCE = "pull"
#: QIDO-RS attribute keywords a pull may filter on (others are refused, not ignored)
FILTER_KEYS = frozenset({"StudyInstanceUID", "PatientID", "AccessionNumber", "StudyDate",
                         "ModalitiesInStudy", "StudyDescription", "PatientName"})
STUDY_UID_TAG = "0020000D"


class PullError(RuntimeError):
    """The PACS could not be searched or read; the message says which request failed."""


@dataclass
class PullResult:
    study_instance_uid: str
    retrieved: int = 0
    stored: int = 0
    duplicates: int = 0
    refused: list[str] = field(default_factory=list)


def make_client(base_url: str, token: str = "", ca_bundle: str | None = None,
                timeout: float = 60.0) -> Any:
    """A dicomweb-client for ``base_url`` with an optional bearer token and CA bundle."""
    import requests
    from dicomweb_client.api import DICOMwebClient

    parsed = urlparse(base_url)
    if parsed.scheme not in ("http", "https") or not parsed.netloc:
        raise ValueError(f"DICOMweb URL must be http(s)://host[:port]/path, got {base_url!r}")
    session = requests.Session()
    if ca_bundle:
        session.verify = ca_bundle
    headers = {"Authorization": f"Bearer {token}"} if token else None
    return DICOMwebClient(url=base_url.rstrip("/"), session=session, headers=headers,
                          timeout=timeout)


def check_filters(filters: Mapping[str, str]) -> dict[str, str]:
    unknown = sorted(set(filters) - FILTER_KEYS)
    if unknown:
        raise ValueError(f"unsupported QIDO filter(s) {unknown}; allowed: {sorted(FILTER_KEYS)}")
    if not any(v.strip() for v in filters.values()):
        raise ValueError("at least one non-empty QIDO filter is required (refusing to pull "
                         "every study of the PACS)")
    return {k: v for k, v in filters.items() if v.strip()}


def find_studies(client: Any, filters: Mapping[str, str], limit: int) -> list[str]:
    """StudyInstanceUIDs matching ``filters`` (QIDO-RS), at most ``limit`` of them."""
    if limit < 1:
        raise ValueError(f"limit must be at least 1, got {limit}")
    try:
        hits = client.search_for_studies(search_filters=check_filters(filters), limit=limit)
    except Exception as exc:  # requests.HTTPError, connection errors, bad JSON
        raise PullError(f"QIDO-RS search at {client.base_url} failed: {exc}") from exc
    uids = []
    for hit in hits[:limit]:
        values = hit.get(STUDY_UID_TAG, {}).get("Value") or []
        if values:
            uids.append(validate_uid(values[0], "StudyInstanceUID in QIDO-RS answer"))
    return uids


def _part10(ds: Any) -> bytes:
    buffer = io.BytesIO()
    ds.save_as(buffer, enforce_file_format=True)
    return buffer.getvalue()


def pull_study(client: Any, ingestor: Ingestor, sessions: sessionmaker[Session],
               study_uid: str, actor: str = "pull") -> PullResult:
    """Retrieve one study with WADO-RS and ingest every instance of it."""
    study_uid = validate_uid(study_uid, "StudyInstanceUID")
    result = PullResult(study_uid)
    host = urlparse(client.base_url).hostname
    try:
        for ds in _iterate(client, study_uid):
            result.retrieved += 1
            try:
                stored = ingestor.store(_part10(ds), source=SOURCE, ip=host)
            except IngestError as exc:
                result.refused.append(f"{ds.get('SOPInstanceUID', '?')}: {exc.reason}")
                continue
            if stored.study_instance_uid != study_uid:
                result.refused.append(f"{stored.sop_instance_uid}: belongs to study "
                                      f"{stored.study_instance_uid}")
            if stored.duplicate:
                result.duplicates += 1
            else:
                result.stored += 1
    finally:
        with transaction(sessions) as session:
            audit.record(session, "study.pulled", study_uid=study_uid, actor=actor, ip=host,
                         url=client.base_url, retrieved=result.retrieved,
                         stored=result.stored, duplicates=result.duplicates,
                         refused=len(result.refused))
    if result.retrieved == 0:
        raise PullError(f"WADO-RS at {client.base_url} returned no instances for study "
                        f"{study_uid}")
    log.info("pulled study: %d retrieved, %d stored, %d duplicates, %d refused",
             result.retrieved, result.stored, result.duplicates, len(result.refused))
    return result


def _iterate(client: Any, study_uid: str) -> Iterable[Any]:
    try:
        yield from client.iter_study(study_uid)
    except Exception as exc:
        status = getattr(getattr(exc, "response", None), "status_code", None)
        if status == 404:
            raise PullError(f"study {study_uid} not found at {client.base_url}") from exc
        raise PullError(f"WADO-RS retrieve of study {study_uid} from {client.base_url} "
                        f"failed: {exc}") from exc


def pull(config: NodeConfig, sessions: sessionmaker[Session], base_url: str, *,
         study_uids: Iterable[str] = (), filters: Mapping[str, str] | None = None,
         limit: int = 10, token: str = "", ca_bundle: str | None = None) -> list[PullResult]:
    """Pull the given studies, or those a QIDO-RS search with ``filters`` finds."""
    uids = [validate_uid(u, "StudyInstanceUID") for u in study_uids]
    if not uids and not filters:
        raise ValueError("give a StudyInstanceUID or QIDO filters")
    client = make_client(base_url, token=token, ca_bundle=ca_bundle)
    if filters:
        uids += [u for u in find_studies(client, filters, limit) if u not in uids]
    ingestor = Ingestor(config, sessions)
    return [pull_study(client, ingestor, sessions, uid) for uid in uids]
