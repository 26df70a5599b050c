"""TLS contexts for the SCP, the SCU and HTTPS, from the configured cert/key/CA paths."""

from __future__ import annotations

import ssl

from dicom_node.config import NodeConfig


def server_context(config: NodeConfig) -> ssl.SSLContext | None:
    """None when no certificate is configured; mutual TLS when a CA is given."""
    if not config.tls_cert:
        return None
    ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ctx.load_cert_chain(str(config.tls_cert), str(config.tls_key))
    if config.tls_ca:
        ctx.load_verify_locations(str(config.tls_ca))
        ctx.verify_mode = ssl.CERT_REQUIRED
    return ctx


def client_context(config: NodeConfig) -> ssl.SSLContext | None:
    if not config.tls_ca:
        return None
    ctx = ssl.create_default_context(ssl.Purpose.SERVER_AUTH, cafile=str(config.tls_ca))
    if config.tls_cert:
        ctx.load_cert_chain(str(config.tls_cert), str(config.tls_key))
    return ctx
