"""Node settings from `LUMBAR_NODE_*` environment variables or a TOML file.

Everything has a default that runs on one machine with no server at all (SQLite file,
filesystem broker) so `lumbar-node demo` works out of the box; production points the same
keys at PostgreSQL and Redis. Nothing here opens a connection: callers build engines and
brokers from the values when they need them.
"""

from __future__ import annotations

import dataclasses
import logging
import os
import re
import tomllib
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import unquote

ENV_PREFIX = "LUMBAR_NODE_"
#: hard time limit of one delivery task (C-STORE association or STOW-RS request and all its
#: objects); the worker kills a send that runs longer
DELIVERY_TIME_LIMIT_S = 300
#: variables with the prefix that belong to other parts (model registry, series rules, caches)
OTHER_PARTS_ENV = frozenset({"CONFIG", "WEIGHTS_DIR", "SERIES_RULES", "CACHE"})
log = logging.getLogger(__name__)
_AE_RE = re.compile(r"^[\x20-\x7e]{1,16}$")
#: `scheme://user:password@` at the start of a URL (the authority ends at the first / ? #)
_USERINFO = re.compile(r"^(https?://)([^/?#]*)@", re.IGNORECASE)


def redact_url(url: str) -> str:
    """The URL with any `user:password@` shown as `***@`: the form that may be stored."""
    return _USERINFO.sub(r"\1***@", url)


@dataclass(frozen=True)
class Caller:
    """One allowlist entry: an AE title, optionally pinned to an IP address."""

    ae_title: str  # "*" matches any AE
    ip: str | None = None

    def matches(self, ae_title: str, ip: str | None) -> bool:
        if self.ae_title != "*" and self.ae_title != ae_title.strip():
            return False
        return self.ip is None or self.ip == ip


@dataclass(frozen=True, repr=False)
class Destination:
    """Where results go: a DIMSE peer (`AE@host:port`) or a DICOMweb base URL, which may
    carry `user:password@` for HTTP basic authentication."""

    kind: str  # "dimse" | "dicomweb"
    ae_title: str = ""
    host: str = ""
    port: int = 0
    url: str = ""

    @property
    def label(self) -> str:
        """The name stored in delivery rows and shown in audit events, logs and the admin
        API, credentials redacted; deliveries find their destination in the configuration
        again by it, so credentials never need to be in the database."""
        return redact_url(self.url) if self.kind == "dicomweb" else self.spec

    @property
    def spec(self) -> str:
        """The configured text, credentials included: `parse_destinations` reads it back."""
        return self.url if self.kind == "dicomweb" else f"{self.ae_title}@{self.host}:{self.port}"

    @property
    def endpoint(self) -> str:
        """The base URL without credentials: what is requested (they go in a header)."""
        return _USERINFO.sub(r"\1", self.url)

    @property
    def basic_auth(self) -> tuple[str, str] | None:
        """(user, password) from the URL, percent-decoded; None when it has none."""
        match = _USERINFO.match(self.url) if self.kind == "dicomweb" else None
        if match is None:
            return None
        user, _, password = match.group(2).partition(":")
        return unquote(user), unquote(password)

    def __repr__(self) -> str:  # config objects end up in logs and tracebacks
        return f"Destination({self.label!r})"


@dataclass(frozen=True)
class NodeConfig:
    data_dir: Path = Path("var")
    spool_dir: Path | None = None
    # secrets (or URLs that may hold a password) stay out of repr(), so a logged or
    # printed configuration never shows them
    database_url: str = field(default="", repr=False)
    broker_url: str = field(default="", repr=False)
    result_backend: str = field(default="", repr=False)
    #: prefix of every Redis key (queues, results) so several nodes can share one Redis
    broker_key_prefix: str = ""
    ae_title: str = "LUMBARNODE"
    dimse_host: str = "0.0.0.0"
    dimse_port: int = 11112
    http_host: str = "0.0.0.0"
    http_port: int = 8080
    allowed_callers: tuple[Caller, ...] = ()
    destinations: tuple[Destination, ...] = ()
    return_ports: Mapping[str, int] = field(default_factory=dict)
    api_token: str = field(default="", repr=False)
    #: browser origins allowed to call the HTTP API (a viewer such as OHIF served elsewhere)
    cors_origins: str = ""
    #: the node's root URL as clients reach it (through a reverse proxy, say); DICOMweb
    #: answers build BulkDataURI/RetrieveURL on `<public_base_url>/dicomweb`, so a viewer
    #: fetches pixels through the proxy instead of from the address the node listens on
    public_base_url: str = ""
    #: build those URLs from X-Forwarded-Proto/-Host/-Prefix when no public_base_url is set;
    #: off by default, since any client could send the headers to steer the URLs
    trust_forwarded_headers: bool = False
    #: folder of the pinned OHIF build (scripts/bootstrap.sh unpacks it); when set, the node
    #: serves the viewer same-origin under /viewer/, pointed at its own /dicomweb
    viewer_dir: Path | None = None
    #: bearer token sent with STOW-RS deliveries to DICOMweb destinations
    destination_token: str = field(default="", repr=False)
    settle_seconds: float = 10.0
    study_timeout_seconds: float = 120.0
    ignore_non_lumbar: bool = True
    max_associations: int = 10
    #: C-STORE receiver processes sharing the DICOM port (SO_REUSEPORT); one Python process
    #: is bound by its interpreter lock to about one core, so more processes is how ingest
    #: scales across cores. max_associations applies to each process.
    dimse_processes: int = 1
    max_pdu_size: int = 65536
    max_instance_bytes: int = 512 * 1024 * 1024
    max_instances_per_study: int = 5000
    #: bytes a receiving process may hold acknowledged in the spool but not yet indexed
    #: (the database restarting, say); past it C-STORE answers 0xA700, STOW-RS 503
    spool_max_pending_bytes: int = 2 * 1024**3
    #: free disk space under the spool below which instances are refused the same way
    spool_min_free_bytes: int = 512 * 1024**2
    #: how often serve indexes spooled files that have no row (a receiver killed between
    #: acknowledging and indexing); the whole spool is swept once at startup
    index_sweep_seconds: float = 30.0
    tls_cert: Path | None = None
    tls_key: Path | None = None
    tls_ca: Path | None = None
    delivery_max_attempts: int = 8
    delivery_backoff_seconds: float = 30.0
    delivery_backoff_cap_seconds: float = 3600.0
    #: a delivery `sending` for longer than this lost its worker and goes back to the queue.
    #: Three times the delivery task's hard limit (DELIVERY_TIME_LIMIT_S, itself well above
    #: the 30 s DIMSE and 60 s STOW-RS network timeouts), so a live send is never sent twice;
    #: far below the broker's redelivery (visibility) timeout, which would rescue it an hour on
    delivery_stale_seconds: int = 900
    job_time_limit_seconds: int = 1800
    #: first retry delay of a failed job (doubles per attempt, 3 attempts in all)
    job_retry_delay_seconds: float = 30.0
    job_stale_seconds: int = 3600
    scheduler_interval_seconds: float = 1.0
    #: review console: a sign-in lasts this long, then the user signs in again
    ui_session_hours: float = 12.0
    #: consecutive wrong passwords before an account is locked for LOGIN_LOCKOUT_SECONDS
    login_max_failures: int = 5
    login_lockout_seconds: float = 300.0
    #: agreement of radiologists with a model version below which the worklist warns
    agreement_floor: float = 0.7
    #: reviews a model version needs before its agreement is compared with the floor
    agreement_min_reviews: int = 20

    @property
    def spool(self) -> Path:
        return self.spool_dir or self.data_dir / "spool"

    @property
    def results_dir(self) -> Path:
        return self.data_dir / "results"

    @property
    def db_url(self) -> str:
        return self.database_url or f"sqlite:///{(self.data_dir / 'lumbar-node.sqlite').resolve()}"

    @property
    def broker(self) -> str:
        return self.broker_url or "filesystem://"

    @property
    def broker_folder(self) -> Path:
        """Message folder of the embedded filesystem broker."""
        return (self.data_dir / "broker").resolve()

    def replace(self, **changes: object) -> NodeConfig:
        return dataclasses.replace(self, **changes)  # type: ignore[arg-type]


def parse_callers(text: str) -> tuple[Caller, ...]:
    """`AE`, `AE@ip` or `*`, comma-separated; an empty string allows nobody."""
    callers = []
    for item in (part.strip() for part in text.split(",")):
        if not item:
            continue
        ae, _, ip = item.partition("@")
        if not _AE_RE.match(ae) or (ae != "*" and "\\" in ae):
            raise ValueError(f"invalid AE title in ALLOWED_CALLERS: {ae!r}")
        callers.append(Caller(ae.strip(), ip.strip() or None))
    return tuple(callers)


def parse_destinations(text: str) -> tuple[Destination, ...]:
    """`AE@host:port` for C-STORE, `http(s)://...` for STOW-RS, comma-separated."""
    out = []
    for item in (part.strip() for part in text.split(",")):
        if not item:
            continue
        if item.startswith(("http://", "https://")):
            out.append(Destination("dicomweb", url=item.rstrip("/")))
            continue
        match = re.fullmatch(r"([^@]{1,16})@([^:]+):(\d{1,5})", item)
        if not match or not 0 < int(match.group(3)) < 65536:
            raise ValueError(f"invalid destination {item!r}: expected AE@host:port or http(s)://")
        out.append(Destination("dimse", match.group(1), match.group(2), int(match.group(3))))
    labels = [d.label for d in out]
    twice = sorted({label for label in labels if labels.count(label) > 1})
    if twice:  # the label is how a delivery finds its destination again: it must be unique
        raise ValueError(f"destination listed more than once: {', '.join(twice)}")
    return tuple(out)


def parse_return_ports(text: str) -> dict[str, int]:
    """`AE=port,...`: where to reach a calling AE's own SCP when no destination is set."""
    ports: dict[str, int] = {}
    for item in (part.strip() for part in text.split(",")):
        if not item:
            continue
        ae, sep, port = item.partition("=")
        if not sep or not port.isdigit() or not 0 < int(port) < 65536:
            raise ValueError(f"invalid RETURN_PORTS entry {item!r}: expected AE=port")
        ports[ae.strip()] = int(port)
    return ports


_FIELDS = {f.name: f for f in dataclasses.fields(NodeConfig)}
_PARSERS = {
    "allowed_callers": parse_callers,
    "destinations": parse_destinations,
    "return_ports": parse_return_ports,
}


def _convert(name: str, raw: object) -> object:
    if name in _PARSERS:
        if isinstance(raw, list):
            raw = ",".join(str(r) for r in raw)
        if isinstance(raw, dict):
            raw = ",".join(f"{k}={v}" for k, v in raw.items())
        return _PARSERS[name](str(raw))
    kind = _FIELDS[name].type
    text = str(raw).strip()
    try:
        if kind == "int":
            return int(text)
        if kind == "float":
            value = float(text)
            if value < 0:
                raise ValueError
            return value
        if kind == "bool":
            if text.lower() in ("1", "true", "yes", "on"):
                return True
            if text.lower() in ("0", "false", "no", "off"):
                return False
            raise ValueError
        if kind in ("Path", "Path | None"):
            return Path(text) if text else None
    except ValueError:
        raise ValueError(f"invalid value for {ENV_PREFIX}{name.upper()}: {raw!r}") from None
    return text


def load_config(
    env: Mapping[str, str] | None = None, toml_path: Path | None = None, **overrides: object
) -> NodeConfig:
    """TOML file first, then environment, then explicit overrides (highest)."""
    env = os.environ if env is None else env
    values: dict[str, object] = {}
    if toml_path is None and env.get(f"{ENV_PREFIX}CONFIG"):
        toml_path = Path(env[f"{ENV_PREFIX}CONFIG"])
    if toml_path is not None:
        with open(toml_path, "rb") as fh:
            data = tomllib.load(fh)
        for key, raw in data.get("lumbar_node", data).items():
            name = key.lower()
            if name not in _FIELDS:
                raise ValueError(f"unknown setting {key!r} in {toml_path}")
            values[name] = _convert(name, raw)
    for key, raw in env.items():
        if key.startswith(ENV_PREFIX) and key != f"{ENV_PREFIX}CONFIG":
            name = key[len(ENV_PREFIX) :].lower()
            if name in _FIELDS:
                values[name] = _convert(name, raw)
            elif name.upper() not in OTHER_PARTS_ENV:
                # a typo in a deployment must not silently fall back to a default
                log.warning("ignoring unknown setting %s", key)
    for name, raw in overrides.items():
        if name not in _FIELDS:
            raise ValueError(f"unknown setting {name!r}")
        values[name] = raw if not isinstance(raw, str) else _convert(name, raw)
    if "data_dir" in values and values["data_dir"] is None:
        raise ValueError("DATA_DIR must not be empty")
    config = NodeConfig(**values)  # type: ignore[arg-type]
    if not _AE_RE.match(config.ae_title):
        raise ValueError(f"invalid AE_TITLE {config.ae_title!r}")
    if config.delivery_stale_seconds <= DELIVERY_TIME_LIMIT_S:
        # a shorter limit would hand sends still in progress to a second worker
        raise ValueError(f"DELIVERY_STALE_SECONDS must exceed the {DELIVERY_TIME_LIMIT_S} s "
                         f"delivery time limit, got {config.delivery_stale_seconds}")
    if config.public_base_url and not re.fullmatch(r"https?://[^/?#\s]+(/[^?#\s]*)?",
                                                   config.public_base_url):
        raise ValueError(f"PUBLIC_BASE_URL must be an http(s) URL without query or fragment, "
                         f"got {config.public_base_url!r}")
    if bool(config.tls_cert) != bool(config.tls_key):
        raise ValueError("TLS_CERT and TLS_KEY must be given together")
    return config
