"""Transport security of the runtime: TLS / mutual TLS credentials, bearer tokens, agent identity.

Owns who may speak for which agent:
- `ServerTls` / `ClientTls`: certificate paths -> gRPC credentials and the step lane's
  `ssl.SSLContext`, both checked when made: a file that is not PEM, or a key that is not its
  certificate's, is a `SecurityConfigError` naming the files at start-up, never a failed bind or
  handshake later. With a client CA the coordinator requires a client certificate (mutual TLS).
- An agent certificate is bound to its agent id: a SAN URI ``qmix-agent:<agent_id>`` if present,
  else the certificate's common name. `cert_agent_id` (gRPC) and `peercert_agent_id` (lane) read it.
- Per-agent bearer tokens (`load_tokens`): the agent sends ``authorization: Bearer <token>`` and
  ``x-qmix-agent-id: <agent_id>``; `qmix_edge.runtime.interceptor.TokenInterceptor` answers
  UNAUTHENTICATED for a missing or wrong token before any handler runs (compared with
  `hmac.compare_digest`). On the step lane the token travels in the Attach / JoinRequest frame.
- The rule that a caller may only speak as the agent its certificate or token proves is the
  coordinator's (`qmix_edge.runtime.coordinator.authorize`), the same on gRPC and the step lane.
- `is_loopback` / `require_secure_or_loopback`: plain text only on loopback unless allowed.

grpc.health.v1 stays open without a token (monitoring), but over the same TLS transport.
Must not import torch (nor qmix_edge.train / qmix_edge.export), nor grpc or ssl at import time
(a plain-text agent on the step lane loads neither).
"""

from __future__ import annotations

import contextlib
import hmac
import ipaddress
import json
import logging
import os
import stat
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Final

from .errors import RuntimeFailure

if TYPE_CHECKING:  # grpc and ssl are loaded only where credentials or contexts are made
    import ssl

    import grpc

log = logging.getLogger(__name__)

AGENT_ID_HEADER: Final = "x-qmix-agent-id"
"""Metadata key carrying the agent id a bearer token speaks for."""
AUTHORIZATION_HEADER: Final = "authorization"
"""Metadata key of the bearer token (``Bearer <token>``)."""
SAN_URI_PREFIX: Final = "qmix-agent:"
"""A SAN URI ``qmix-agent:<agent_id>`` binds a certificate to an agent id."""
OPEN_METHOD_PREFIXES: Final = (
    "/grpc.health.v1.Health/",
    "/qmix_edge.v1.Mission/Deploy",
    "/qmix_edge.v1.Mission/Operate",
)
"""Methods served without an agent token: health checks, and the operator's Deploy and Operate
(which check the operator token themselves)."""
OPERATOR_HEADER: Final = "x-qmix-operator"
"""Call metadata carrying the operator token (qmix-deploy)."""
MIN_TOKEN_CHARS: Final = 16
"""Shortest token accepted in a tokens file (a guessable token is no protection)."""


class SecurityConfigError(RuntimeFailure, ValueError):
    """Certificate, key or token configuration is missing, unreadable or inconsistent."""


def _read(path: str | os.PathLike[str], what: str) -> bytes:
    try:
        return Path(path).read_bytes()
    except OSError as e:
        raise SecurityConfigError(f"cannot read the {what} {str(path)!r}: {e}") from e


_CA: Final = "a PEM CA certificate"
_PAIR: Final = "a PEM certificate chain and the private key that belongs to it"


@contextlib.contextmanager
def _unusable(files: str, expected: str) -> Iterator[None]:
    """Turn ssl's complaint about TLS files into a `SecurityConfigError` naming them."""
    import ssl

    try:
        yield
    except (ssl.SSLError, OSError, ValueError) as e:
        raise SecurityConfigError(
            f"the TLS files {files} cannot be used: expected {expected}; ssl says: {e}. "
            "Check the paths, that the files are PEM, and that the key is this certificate's."
        ) from e


# ------------------------------------------------------------------------------- credentials
@dataclass(frozen=True)
class ServerTls:
    """The coordinator's TLS material (PEM files)."""

    cert: Path
    """Server certificate chain."""
    key: Path
    """Its private key."""
    client_ca: Path | None = None
    """CA that signs agent certificates; given = mutual TLS (a client certificate is required)."""

    @property
    def mutual(self) -> bool:
        return self.client_ca is not None

    def credentials(self) -> grpc.ServerCredentials:
        """The gRPC server credentials; the files are read and checked first (`ssl_context`):
        gRPC itself only finds bad material when the port is bound, and says "cannot bind"."""
        import grpc

        chain = _read(self.cert, "--tls-cert server certificate")
        key = _read(self.key, "--tls-key server private key")
        ca = _read(self.client_ca, "--tls-client-ca CA certificate") if self.client_ca else None
        self.ssl_context()
        try:
            return grpc.ssl_server_credentials(
                [(key, chain)], root_certificates=ca, require_client_auth=ca is not None
            )
        except Exception as e:
            raise SecurityConfigError(
                f"bad server TLS material ({self.cert}, {self.key}): {e}"
            ) from e

    def ssl_context(self) -> ssl.SSLContext:
        """The step lane's server TLS: this certificate; with a client CA, client certificates
        are required and verified (mutual TLS), as on the gRPC port. `SecurityConfigError` when
        a file is not usable."""
        import ssl

        ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        ctx.minimum_version = ssl.TLSVersion.TLSv1_2
        with _unusable(f"--tls-cert {str(self.cert)!r} with --tls-key {str(self.key)!r}", _PAIR):
            ctx.load_cert_chain(str(self.cert), str(self.key))
        if self.client_ca is not None:
            ctx.verify_mode = ssl.CERT_REQUIRED
            with _unusable(f"--tls-client-ca {str(self.client_ca)!r}", _CA):
                ctx.load_verify_locations(cafile=str(self.client_ca))
        return ctx


@dataclass(frozen=True)
class ClientTls:
    """An agent's TLS material (PEM files)."""

    ca: Path
    """CA that signed the coordinator's certificate."""
    cert: Path | None = None
    """This agent's certificate (mutual TLS); its CN or SAN URI must name the agent id."""
    key: Path | None = None
    """Its private key."""
    server_name: str | None = None
    """Name to check the coordinator's certificate against, if not the host dialled."""

    def __post_init__(self) -> None:
        if (self.cert is None) != (self.key is None):
            raise SecurityConfigError(
                "a client certificate needs both --tls-cert and --tls-key (found only one)"
            )

    def read_pem(self) -> tuple[bytes, bytes | None, bytes | None]:
        """The CA, certificate chain and key bytes; `SecurityConfigError` when one is unreadable.
        Loads no grpc: a lane-only agent checks its files with this and never loads gRPC."""
        ca = _read(self.ca, "--tls-ca CA certificate")
        chain = _read(self.cert, "--tls-cert agent certificate") if self.cert else None
        key = _read(self.key, "--tls-key agent private key") if self.key else None
        return ca, chain, key

    def credentials(self) -> grpc.ChannelCredentials:
        import grpc

        ca, chain, key = self.read_pem()
        return grpc.ssl_channel_credentials(
            root_certificates=ca, private_key=key, certificate_chain=chain
        )

    def ssl_context(self) -> ssl.SSLContext:
        """The step lane's client TLS: the coordinator's certificate is verified against ``ca``
        and its host name; this agent's certificate is presented when configured (mutual TLS).
        `SecurityConfigError` when a file is not usable."""
        import ssl

        with _unusable(f"--tls-ca {str(self.ca)!r}", _CA):
            ctx = ssl.create_default_context(ssl.Purpose.SERVER_AUTH, cafile=str(self.ca))
        ctx.minimum_version = ssl.TLSVersion.TLSv1_2
        if self.cert is not None and self.key is not None:
            with _unusable(
                f"--tls-cert {str(self.cert)!r} with --tls-key {str(self.key)!r}", _PAIR
            ):
                ctx.load_cert_chain(str(self.cert), str(self.key))
        return ctx

    def channel_options(self) -> list[tuple[str, Any]]:
        return [("grpc.ssl_target_name_override", self.server_name)] if self.server_name else []


# ------------------------------------------------------------------------------------ tokens
def load_tokens(path: str | os.PathLike[str]) -> dict[str, str]:
    """Read a tokens file: a JSON object mapping agent id -> token (at least 16 characters).

    The file should be readable by its owner only; a group/world-readable file is logged."""
    raw = _read(path, "--tokens file")
    try:
        data = json.loads(raw)
    except ValueError as e:
        raise SecurityConfigError(
            f"--tokens {str(path)!r} must be a JSON object {{agent_id: token}}; it is not JSON ({e})"
        ) from e
    if not isinstance(data, dict) or not all(
        isinstance(k, str) and isinstance(v, str) for k, v in data.items()
    ):
        raise SecurityConfigError(
            f"--tokens {str(path)!r} must be a JSON object mapping agent id strings to token strings"
        )
    short = sorted(k for k, v in data.items() if len(v) < MIN_TOKEN_CHARS)
    if short:
        raise SecurityConfigError(
            f"tokens of {short} are shorter than {MIN_TOKEN_CHARS} characters; use random tokens "
            "(e.g. python -c 'import secrets; print(secrets.token_urlsafe(32))')"
        )
    if len(set(data.values())) != len(data):
        raise SecurityConfigError("two agents share a token: each agent needs its own token")
    _warn_if_readable_by_others(Path(path))
    return dict(data)


def read_token_file(path: str | os.PathLike[str], flag: str = "--token-file") -> str:
    """A token file's content without surrounding whitespace (``flag``: the flag that named it)."""
    token = _read(path, flag).decode("utf-8", "replace").strip()
    if not token:
        raise SecurityConfigError(f"{flag} {str(path)!r} is empty")
    _warn_if_readable_by_others(Path(path))
    return token


def _warn_if_readable_by_others(path: Path) -> None:
    try:
        mode = path.stat().st_mode
    except OSError:
        return
    if mode & (stat.S_IRGRP | stat.S_IROTH):
        log.warning("%s is readable by other users; chmod 600 it", path)


def token_metadata(agent_id: str, token: str) -> tuple[tuple[str, str], ...]:
    """The call metadata an agent sends with every RPC."""
    return ((AUTHORIZATION_HEADER, f"Bearer {token}"), (AGENT_ID_HEADER, agent_id))


def call_metadata(pairs: Any) -> dict[str, str]:
    """gRPC call metadata as a dict: text values only, the first value of a repeated key."""
    out: dict[str, str] = {}
    for k, v in pairs or ():
        if isinstance(v, bytes):
            continue
        out.setdefault(k, v)
    return out


def token_ok(tokens: Mapping[str, str], md: Mapping[str, str]) -> tuple[bool, str]:
    """(valid, why not) for the token metadata of one call."""
    auth = md.get(AUTHORIZATION_HEADER, "")
    agent_id = md.get(AGENT_ID_HEADER, "")
    if not auth.startswith("Bearer ") or not agent_id:
        return False, (
            "a bearer token is required: send metadata 'authorization: Bearer <token>' and "
            f"'{AGENT_ID_HEADER}: <agent id>' (qmix-agent --token-file)"
        )
    if not token_matches(tokens, agent_id, auth[len("Bearer ") :]):
        return False, f"the token is not valid for agent {agent_id[:80]!r}"
    return True, ""


def token_matches(tokens: Mapping[str, str], agent_id: str, presented: str) -> bool:
    """Whether ``presented`` is ``agent_id``'s token (constant time; an unknown id compares
    against a dummy, so the answer time does not tell ids apart)."""
    expected = tokens.get(agent_id)
    ok = hmac.compare_digest(
        presented.encode("utf-8", "replace"), (expected or "\0" * 32).encode("utf-8")
    )
    return expected is not None and ok


# ---------------------------------------------------------------------------------- identity
def agent_id_named(uris: Iterable[str], common_names: Iterable[str]) -> str | None:
    """The binding rule of a certificate to an agent: the first SAN URI
    ``qmix-agent:<id>``, else the first common name, else None."""
    for uri in uris:
        if uri.startswith(SAN_URI_PREFIX):
            return uri[len(SAN_URI_PREFIX) :]
    return next(iter(common_names), None)


def _text(raw: Any) -> str:
    return raw.decode("utf-8", "replace") if isinstance(raw, bytes) else str(raw)


def cert_agent_id(auth_context: Mapping[str, Any]) -> str | None:
    """The agent id a verified client certificate names in a gRPC call's auth context, or None
    when the peer presented no certificate."""
    return agent_id_named(
        (_text(r) for r in auth_context.get("x509_subject_alternative_name", ()) or ()),
        (_text(r) for r in auth_context.get("x509_common_name", ()) or ()),
    )


def peercert_agent_id(cert: Mapping[str, Any] | None) -> str | None:
    """The agent id a verified client certificate names as Python's ssl reports it
    (`SSLSocket.getpeercert()`, the step lane), or None without a certificate."""
    if not cert:
        return None
    return agent_id_named(
        (str(v) for kind, v in cert.get("subjectAltName", ()) if kind == "URI"),
        (str(v) for rdn in cert.get("subject", ()) for key, v in rdn if key == "commonName"),
    )


# ----------------------------------------------------------------------------------- plaintext
def host_of(target: str) -> str:
    """The host part of ``host:port`` / ``[v6]:port`` / ``dns:///host:port``."""
    t = target.split("///", 1)[-1]
    if t.startswith("["):
        return t[1 : t.find("]")]
    return t.rsplit(":", 1)[0] if t.count(":") == 1 else t


def is_loopback(host: str) -> bool:
    if host in ("localhost", "localhost.localdomain", "ip6-localhost"):
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def require_secure_or_loopback(host: str, secure: bool, allow_insecure: bool, flag: str) -> None:
    """Refuse plain text off loopback unless ``--allow-insecure`` was given."""
    if secure or allow_insecure or is_loopback(host):
        return
    raise SecurityConfigError(
        f"plain text (no TLS) with {host!r} (not loopback) is refused: give {flag} to use TLS, or "
        "--allow-insecure if this network is trusted (anyone on it could join as any agent)"
    )
