"""Container health check of the node: GET /healthz on the node's own HTTP port.

It reads the node's settings the way the node does (LUMBAR_NODE_* variables or the TOML file
of LUMBAR_NODE_CONFIG), so a changed port or switching TLS on cannot leave the check probing
the wrong place. With TLS the node serves HTTPS; the certificate names the host the PACS uses,
not 127.0.0.1, and this check only asks whether this process is healthy, so it does not verify
the certificate. /healthz answers 503 when the database is unreachable: unhealthy too.

Exit status 0 healthy, 1 not (with the reason on stderr).
"""

from __future__ import annotations

import ssl
import sys
import urllib.error
import urllib.request

from dicom_node.config import load_config


def main() -> int:
    config = load_config()
    scheme = "https" if config.tls_cert else "http"
    context = ssl._create_unverified_context() if config.tls_cert else None
    url = f"{scheme}://127.0.0.1:{config.http_port}/healthz"
    try:
        with urllib.request.urlopen(url, timeout=4, context=context) as response:
            body = response.read(200)
    except (urllib.error.URLError, OSError) as error:
        print(f"unhealthy: {url}: {error}", file=sys.stderr)
        return 1
    print(body.decode(errors="replace"))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
