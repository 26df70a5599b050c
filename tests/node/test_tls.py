"""DICOM TLS on the SCP: mutual authentication with a throwaway CA."""

from __future__ import annotations

import ssl
import subprocess

import pytest
from pynetdicom import AE
from pynetdicom.sop_class import Verification

from dicom_node.dimse.scp import StoreSCP


def _pki(folder):
    def run(*args):
        subprocess.run(["openssl", *args], cwd=folder, check=True, capture_output=True)

    run("req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "2", "-subj", "/CN=test-ca",
        "-keyout", "ca.key", "-out", "ca.pem")
    for name in ("node", "pacs"):
        run("req", "-newkey", "rsa:2048", "-nodes", "-subj", "/CN=localhost",
            "-addext", "subjectAltName=DNS:localhost,IP:127.0.0.1",
            "-keyout", f"{name}.key", "-out", f"{name}.csr")
        run("x509", "-req", "-in", f"{name}.csr", "-CA", "ca.pem", "-CAkey", "ca.key",
            "-CAcreateserial", "-days", "2", "-copy_extensions", "copy", "-out", f"{name}.pem")
    return folder


def _echo(port, tls_args=None):
    ae = AE(ae_title="PACS")
    ae.add_requested_context(Verification)
    assoc = ae.associate("127.0.0.1", port, ae_title="LUMBARNODE", tls_args=tls_args)
    if not assoc.is_established:
        return None
    status = assoc.send_c_echo()
    assoc.release()
    return status.Status


@pytest.mark.filterwarnings("ignore::DeprecationWarning")
def test_mutual_tls(tmp_path, node_config, sessions):
    pki = _pki(tmp_path)
    config = node_config.replace(tls_cert=pki / "node.pem", tls_key=pki / "node.key",
                                 tls_ca=pki / "ca.pem")
    scp = StoreSCP(config, sessions)
    scp.start()
    try:
        client = ssl.create_default_context(ssl.Purpose.SERVER_AUTH, cafile=str(pki / "ca.pem"))
        client.load_cert_chain(str(pki / "pacs.pem"), str(pki / "pacs.key"))
        assert _echo(config.dimse_port, (client, "localhost")) == 0
        anonymous = ssl.create_default_context(ssl.Purpose.SERVER_AUTH,
                                               cafile=str(pki / "ca.pem"))
        assert _echo(config.dimse_port, (anonymous, "localhost")) is None
        assert _echo(config.dimse_port) is None  # plain TCP to a TLS port
    finally:
        scp.stop()
