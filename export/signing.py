"""Ed25519 signing of the artifact manifest: key pairs and detached signatures.

The signature covers the exact bytes of ``manifest.json``; the manifest lists the sha256 of every
graph, so one signature covers the whole artifact. Devices verify with the public key only
(`qmix_edge.runtime.artifact.verify_signature`); the private key never leaves the workstation.
Keys are PEM: PKCS#8 (unencrypted, file mode 0600) for the private key, SubjectPublicKeyInfo for the
public key.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Final

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from qmix_edge.common import atomic

from .errors import ExportConfigError

PRIVATE_KEY_FILE: Final = "qmix-signing.key"
"""File name of the private key `generate_keypair` writes."""
PUBLIC_KEY_FILE: Final = "qmix-signing.pub"
"""File name of the public key `generate_keypair` writes (copy this one to devices)."""


def generate_keypair(out_dir: str | os.PathLike[str], *, force: bool = False) -> tuple[Path, Path]:
    """Write a new Ed25519 key pair into ``out_dir``; return (private key path, public key path)."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    priv_path, pub_path = out / PRIVATE_KEY_FILE, out / PUBLIC_KEY_FILE
    if not force and (priv_path.exists() or pub_path.exists()):
        raise ExportConfigError(
            f"{priv_path} or {pub_path} already exists; refusing to overwrite a signing key "
            "(use --force to replace it, which invalidates every artifact it signed)"
        )
    key = Ed25519PrivateKey.generate()
    priv = key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )
    pub = key.public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    atomic.write_bytes(priv_path, priv, mode=0o600)
    atomic.write_bytes(pub_path, pub, mode=0o644)
    return priv_path, pub_path


def load_private_key(path: str | os.PathLike[str]) -> Ed25519PrivateKey:
    """Read a PEM Ed25519 private key; `ExportConfigError` when it is missing or not one."""
    try:
        data = Path(path).read_bytes()
    except OSError as e:
        raise ExportConfigError(
            f"cannot read the signing key {path}: {e}. Make one with: qmix-export keygen --out DIR"
        ) from e
    try:
        key = serialization.load_pem_private_key(data, password=None)
    except (ValueError, TypeError) as e:
        raise ExportConfigError(
            f"{path} is not an unencrypted PEM private key ({e}); make one with qmix-export keygen"
        ) from e
    if not isinstance(key, Ed25519PrivateKey):
        raise ExportConfigError(f"{path} holds a {type(key).__name__}; expected an Ed25519 key")
    return key


def sign(data: bytes, key: Ed25519PrivateKey) -> bytes:
    """The 64-byte Ed25519 signature of ``data``."""
    return key.sign(data)
