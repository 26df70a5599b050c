"""The two ways results leave the node. Each raises DeliveryError with the peer's answer."""

from __future__ import annotations

from pathlib import Path

import pydicom
from pydicom.uid import ExplicitVRLittleEndian, ImplicitVRLittleEndian
from pynetdicom import AE

from dicom_node.config import Destination, NodeConfig
from dicom_node.tls import client_context


class DeliveryError(RuntimeError):
    """The destination did not take every object; the message says why."""


def send_dimse(config: NodeConfig, dest: Destination, files: list[Path]) -> int:
    """C-STORE every file on one association; returns the number stored."""
    datasets = [pydicom.dcmread(f) for f in files]
    ae = AE(ae_title=config.ae_title)
    ae.acse_timeout = ae.dimse_timeout = ae.network_timeout = 30
    # each stored encoding in its own context, plus an uncompressed fallback per SOP class:
    # many PACS take no RLE/JPEG, and then the object is decompressed before sending
    native = {(str(ds.SOPClassUID), str(ds.file_meta.TransferSyntaxUID)) for ds in datasets}
    uncompressed = [ExplicitVRLittleEndian, ImplicitVRLittleEndian]
    for sop_class, syntax in sorted(native):
        if syntax not in uncompressed:
            ae.add_requested_context(sop_class, [syntax])
    for sop_class in sorted({c for c, _ in native}):
        ae.add_requested_context(sop_class, uncompressed)
    tls = client_context(config)
    assoc = ae.associate(dest.host, dest.port, ae_title=dest.ae_title,
                         tls_args=(tls, dest.host) if tls else None)
    if not assoc.is_established:
        why = "rejected" if assoc.is_rejected else "aborted or unreachable"
        raise DeliveryError(f"association with {dest.label} {why}")
    try:
        accepted = {(str(cx.abstract_syntax), str(cx.transfer_syntax[0]))
                    for cx in assoc.accepted_contexts}
        for ds in datasets:
            key = (str(ds.SOPClassUID), str(ds.file_meta.TransferSyntaxUID))
            if key not in accepted and ds.file_meta.TransferSyntaxUID.is_compressed:
                ds.decompress(generate_instance_uid=False)  # keep the UID the KO/SR cite
            status = assoc.send_c_store(ds)
            code = int(status.get("Status", -1)) if status else -1
            if code not in (0x0000, 0xB000, 0xB007, 0xB006):
                raise DeliveryError(f"{dest.label} answered C-STORE of {ds.SOPInstanceUID} "
                                    f"with status 0x{code & 0xFFFF:04X}" if code >= 0 else
                                    f"{dest.label} gave no C-STORE response")
    finally:
        if assoc.is_established:
            assoc.release()
    return len(datasets)


def send_stow(config: NodeConfig, dest: Destination, files: list[Path]) -> int:
    """STOW-RS all files in one request; returns the number the server accepted.

    Credentials in the destination URL go out as HTTP basic authentication (instead of
    DESTINATION_TOKEN) and are taken off the URL first: the DICOMweb client would otherwise
    send the user name as the Host header, and request errors would quote the password."""
    import requests
    from dicomweb_client.api import DICOMwebClient

    auth = dest.basic_auth
    headers = {"Authorization": f"Bearer {config.destination_token}"} if (
        config.destination_token and auth is None) else None
    session = requests.Session()
    session.auth = auth
    try:
        client = DICOMwebClient(dest.endpoint, headers=headers, timeout=60, session=session)
        datasets = [pydicom.dcmread(f) for f in files]
        try:
            response = client.store_instances(datasets)
        except requests.RequestException as exc:
            raise DeliveryError(f"STOW-RS to {dest.label} failed: {exc}") from None
    finally:
        session.close()
    failed = response.get("FailedSOPSequence", [])
    if failed:
        raise DeliveryError(f"STOW-RS to {dest.label}: {len(failed)} of {len(datasets)} refused")
    return len(datasets)
