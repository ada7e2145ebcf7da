"""Test PKI of the trust tests (trustme): a team CA, the coordinator's certificate for 127.0.0.1,
agent certificates whose common name is the agent id, and a rogue CA. Imported by name."""

from __future__ import annotations

import datetime
from dataclasses import dataclass
from pathlib import Path

import trustme
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID


@dataclass(frozen=True)
class AgentCert:
    cert: Path
    key: Path


@dataclass(frozen=True)
class Pki:
    ca: Path
    """The team CA (signs the coordinator's and the agents' certificates)."""
    server_cert: Path
    server_key: Path
    agents: dict[str, AgentCert]
    """agent id -> certificate naming it (CN); also ``agent_9`` (not in the team) and
    ``rogue_agent_0`` (CN agent_0, signed by another CA)."""


def make_pki(out: Path, agent_ids: tuple[str, ...] = ("agent_0", "agent_1")) -> Pki:
    out.mkdir(parents=True, exist_ok=True)
    ca = trustme.CA(organization_name="qmix-edge test team")
    ca.cert_pem.write_to_path(str(out / "ca.pem"))
    server = ca.issue_cert("127.0.0.1", "localhost", common_name="coordinator")
    server.cert_chain_pems[0].write_to_path(str(out / "coordinator.pem"))
    server.private_key_pem.write_to_path(str(out / "coordinator.key"))
    agents: dict[str, AgentCert] = {}

    def issue(authority: trustme.CA, name: str, cn: str) -> None:
        c = authority.issue_cert(f"{cn.replace('_', '-')}.agents.invalid", common_name=cn)
        c.cert_chain_pems[0].write_to_path(str(out / f"{name}.pem"))
        c.private_key_pem.write_to_path(str(out / f"{name}.key"))
        agents[name] = AgentCert(out / f"{name}.pem", out / f"{name}.key")

    for a in (*agent_ids, "agent_9"):
        issue(ca, a, a)
    issue(trustme.CA(organization_name="rogue"), "rogue_agent_0", "agent_0")
    agents["uri_agent_1"] = _uri_cert(ca, out, "uri_agent_1", cn="device-17", agent_id="agent_1")
    return Pki(out / "ca.pem", out / "coordinator.pem", out / "coordinator.key", agents)


def _uri_cert(ca: trustme.CA, out: Path, name: str, *, cn: str, agent_id: str) -> AgentCert:
    """A client certificate whose CN is a device name and whose SAN URI names the agent id."""
    key = ec.generate_private_key(ec.SECP256R1())
    now = datetime.datetime.now(datetime.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, cn)]))
        .issuer_name(ca._certificate.subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(hours=1))
        .not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(
            x509.SubjectAlternativeName(
                [
                    x509.DNSName("device17.agents.invalid"),
                    x509.UniformResourceIdentifier(f"qmix-agent:{agent_id}"),
                ]
            ),
            critical=False,
        )
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .sign(ca._private_key, hashes.SHA256())
    )
    (out / f"{name}.pem").write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    (out / f"{name}.key").write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    return AgentCert(out / f"{name}.pem", out / f"{name}.key")
