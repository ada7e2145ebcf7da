"""The operator's side of mission control: what ``qmix-deploy`` and ``qmix-mission`` share, the
flags that reach mission control (`OperatorFlags`) and the channel they open to it (`dial`).

An operator's calls (Deploy, Operate) carry the operator token in the ``x-qmix-operator`` call
metadata when mission control was started with ``--operator-token-file``; without one, mission
control serves them to loopback callers only. No torch.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from qmix_edge.common.settings import LogLevel, check_log_level, log_level_setting, setting

from ..security import (
    OPERATOR_HEADER,
    ClientTls,
    host_of,
    read_token_file,
    require_secure_or_loopback,
)


@dataclass(frozen=True)
class OperatorFlags:
    """How an operator command reaches mission control (every field is a flag)."""

    coordinator: str = setting("", "HOST:PORT of mission control's gRPC port.", required=True)
    operator_token_file: str | None = setting(
        None, "File holding the operator token mission control was started with."
    )
    tls_ca: str | None = setting(None, "Dial TLS; the CA of mission control's certificate.")
    tls_server_name: str | None = setting(None, "Name mission control's certificate must carry.")
    allow_insecure: bool = setting(
        False, "Allow plain text to a non-loopback mission control (a trusted network only)."
    )
    log_level: LogLevel = log_level_setting("WARNING")

    def __post_init__(self) -> None:
        check_log_level(self.log_level)


def dial(flags: OperatorFlags) -> tuple[Any, tuple[tuple[str, str], ...] | None]:
    """(a gRPC channel to mission control, the call metadata carrying the operator token).
    `RuntimeFailure` (a `SecurityConfigError`) when the TLS or token files are unusable or plain
    text would leave this host without ``--allow-insecure``."""
    import grpc

    tls = ClientTls(Path(flags.tls_ca), server_name=flags.tls_server_name) if flags.tls_ca else None
    require_secure_or_loopback(
        host_of(flags.coordinator), tls is not None, flags.allow_insecure, "--tls-ca"
    )
    token = (
        read_token_file(flags.operator_token_file, "--operator-token-file")
        if flags.operator_token_file
        else None
    )
    metadata = ((OPERATOR_HEADER, token),) if token else None
    if tls is not None:
        channel = grpc.secure_channel(flags.coordinator, tls.credentials(), tls.channel_options())
    else:
        channel = grpc.insecure_channel(flags.coordinator)
    return channel, metadata
