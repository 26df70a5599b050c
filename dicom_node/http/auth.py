"""Who is using the HTTP server: console users, their sessions, CSRF tokens.

Passwords are argon2id hashes (argon2-cffi). A sign-in creates a server-side session row;
the browser holds only a random token in the `lumbar_session` cookie (HttpOnly,
SameSite=Strict, Secure when the node is reached over https) and the database only its
SHA-256, so neither a stolen database nor a script on the page yields a usable session.
Every form carries the session's CSRF token; SameSite=Strict already stops cross-site
POSTs in current browsers, the token covers older ones and same-site attackers.

Repeated wrong passwords lock the account for LOGIN_LOCKOUT_SECONDS: slow enough to stop
guessing, short enough that a locked-out radiologist is not stuck for a shift.
"""

from __future__ import annotations

import hashlib
import hmac
import re
import secrets
from dataclasses import dataclass
from datetime import timedelta

from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError
from fastapi import Request, Response
from sqlalchemy import select
from sqlalchemy.orm import Session, sessionmaker

from dicom_node import audit
from dicom_node.config import NodeConfig
from dicom_node.db.models import User, UserSession, utcnow
from dicom_node.studies import aware

COOKIE = "lumbar_session"
#: the sign-in form's CSRF token lives in its own cookie until a session exists
LOGIN_CSRF_COOKIE = "lumbar_login_csrf"
ROLES = ("radiologist", "admin")
MIN_PASSWORD = 10
_NAME = re.compile(r"[A-Za-z0-9._@-]{1,64}")
#: a session's last_seen_at is written at most this often (DICOMweb GETs come in bursts)
TOUCH_EVERY = timedelta(seconds=60)
_HASHER = PasswordHasher()
#: verified against when the user does not exist, so timing does not tell names apart
_DUMMY_HASH = _HASHER.hash(secrets.token_hex(16))


@dataclass(frozen=True)
class Principal:
    """The signed-in user as the request sees them."""

    user_id: int
    name: str
    role: str
    csrf_token: str
    session_id: int

    @property
    def is_admin(self) -> bool:
        return self.role == "admin"


class LoginRefused(Exception):
    """Sign-in failed; `locked` when the account is locked (wrong or right password)."""

    def __init__(self, message: str, locked: bool = False) -> None:
        super().__init__(message)
        self.locked = locked


def hash_password(password: str) -> str:
    return _HASHER.hash(password)


def check_new_user(name: str, role: str, password: str) -> None:
    if not _NAME.fullmatch(name):
        raise ValueError(f"invalid user name {name!r}: letters, digits and . _ @ - (1-64)")
    if role not in ROLES:
        raise ValueError(f"role must be one of {', '.join(ROLES)}, got {role!r}")
    if len(password) < MIN_PASSWORD:
        raise ValueError(f"password must have at least {MIN_PASSWORD} characters")


def add_user(session: Session, name: str, role: str, password: str, actor: str) -> User:
    """A new user in the caller's transaction; ValueError for a bad or taken name."""
    check_new_user(name, role, password)
    if session.scalar(select(User.id).where(User.name == name)) is not None:
        raise ValueError(f"user {name!r} exists already")
    user = User(name=name, role=role, password_hash=hash_password(password),
                failed_logins=0, disabled=False)
    session.add(user)
    session.flush()
    audit.record(session, "user.added", actor=actor, user=name, role=role)
    return user


def _verify(password_hash: str, password: str) -> bool:
    try:
        return _HASHER.verify(password_hash, password)
    except (VerificationError, InvalidHashError):
        return False


def authenticate(session: Session, config: NodeConfig, name: str, password: str,
                 ip: str) -> User:
    """The user if the password is right and the account usable; else LoginRefused.
    Every outcome is audited in the caller's transaction (commit it even on refusal)."""
    now = utcnow()
    user = session.scalar(select(User).where(User.name == name))
    if user is None or user.disabled:
        _verify(_DUMMY_HASH, password)
        audit.record(session, "ui.login_failed", actor=name[:128], ip=ip,
                     reason="unknown or disabled user")
        raise LoginRefused("wrong user name or password")
    if user.locked_until is not None and aware(user.locked_until) > now:
        audit.record(session, "ui.login_failed", actor=name, ip=ip, reason="account locked")
        raise LoginRefused("too many failed sign-ins: try again later", locked=True)
    if not _verify(user.password_hash, password):
        user.failed_logins += 1
        locked = user.failed_logins >= config.login_max_failures
        if locked:
            user.locked_until = now + timedelta(seconds=config.login_lockout_seconds)
            user.failed_logins = 0
        audit.record(session, "ui.login_failed", actor=name, ip=ip, reason="wrong password",
                     locked=locked)
        raise LoginRefused("too many failed sign-ins: try again later" if locked
                           else "wrong user name or password", locked=locked)
    if _HASHER.check_needs_rehash(user.password_hash):
        user.password_hash = hash_password(password)
    user.failed_logins, user.locked_until, user.last_login_at = 0, None, now
    return user


def _digest(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


def open_session(session: Session, config: NodeConfig, user: User, ip: str) -> str:
    """A new session for `user`; returns the cookie value (shown once, stored hashed)."""
    token = secrets.token_urlsafe(32)
    now = utcnow()
    session.add(UserSession(token_sha256=_digest(token), user_id=user.id,
                            csrf_token=secrets.token_urlsafe(32), created_at=now,
                            last_seen_at=now, ip=ip,
                            expires_at=now + timedelta(hours=config.ui_session_hours)))
    audit.record(session, "ui.login", actor=user.name, ip=ip, role=user.role)
    return token


def close_session(session: Session, token: str, ip: str) -> None:
    row = session.scalar(select(UserSession).where(UserSession.token_sha256 == _digest(token)))
    if row is not None and row.revoked_at is None:
        row.revoked_at = utcnow()
        user = session.get(User, row.user_id)
        audit.record(session, "ui.logout", actor=user.name if user else None, ip=ip)


def principal_for(sessions: sessionmaker[Session], token: str | None) -> Principal | None:
    """The user behind a session cookie value, if the session is live."""
    if not token or len(token) > 128:
        return None
    now = utcnow()
    with sessions() as session, session.begin():
        row = session.scalar(select(UserSession).where(
            UserSession.token_sha256 == _digest(token)))
        if row is None or row.revoked_at is not None or aware(row.expires_at) <= now:
            return None
        user = session.get(User, row.user_id)
        if user is None or user.disabled:
            return None
        if now - aware(row.last_seen_at) > TOUCH_EVERY:
            row.last_seen_at = now
        return Principal(user.id, user.name, user.role, row.csrf_token, row.id)


def principal(sessions: sessionmaker[Session], request: Request) -> Principal | None:
    """The request's signed-in user, looked up once per request."""
    if not hasattr(request.state, "principal"):
        request.state.principal = principal_for(sessions, request.cookies.get(COOKIE))
    return request.state.principal  # type: ignore[no-any-return]


def csrf_ok(expected: str | None, given: str | None) -> bool:
    return bool(expected) and bool(given) and hmac.compare_digest(str(expected), str(given))


def secure_cookies(config: NodeConfig) -> bool:
    """Secure cookies when browsers reach the node over https (its own TLS or a proxy)."""
    return config.public_base_url.lower().startswith("https://") or config.tls_cert is not None


def set_session_cookie(response: Response, config: NodeConfig, token: str) -> None:
    response.set_cookie(COOKIE, token, httponly=True, samesite="strict", path="/",
                        secure=secure_cookies(config),
                        max_age=int(config.ui_session_hours * 3600))


def clear_session_cookie(response: Response, config: NodeConfig) -> None:
    response.delete_cookie(COOKIE, path="/", httponly=True, samesite="strict",
                           secure=secure_cookies(config))


class Requester(str):
    """The client IP as `authorised` returns it, carrying the signed-in user's name when a
    session cookie (not the bearer token) let the request in, so reads are audited under
    the person who made them."""

    user: str | None

    def __new__(cls, ip: str, user: str | None = None) -> Requester:
        obj = super().__new__(cls, ip)
        obj.user = user
        return obj
