"""The one place that turns settings into client options: the security options of
every Kafka client the system makes (aiokafka keyword arguments) and the TLS
options of every Postgres connection (asyncpg's ``ssl``)."""

from __future__ import annotations

import ssl
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from aiokafka.helpers import create_ssl_context

from services.runtime.config import Settings


@dataclass(frozen=True)
class KafkaConnection:
    """Where the brokers are and how to talk to them: every aiokafka client the
    system creates (producer, consumer, admin) is made with ``client_kwargs()``."""

    bootstrap: str
    options: Mapping[str, Any] = field(default_factory=dict)

    def client_kwargs(self) -> dict[str, Any]:
        return {"bootstrap_servers": self.bootstrap, **self.options}

    def __repr__(self) -> str:  # the options hold the SASL password
        protocol = self.options.get("security_protocol", "PLAINTEXT")
        return f"KafkaConnection({self.bootstrap!r}, {protocol})"


Kafka = KafkaConnection | str
"""What a Kafka client is made from: a connection, or a bare bootstrap string for a
PLAINTEXT broker (the embedded one, tests)."""


def as_connection(kafka: Kafka) -> KafkaConnection:
    return KafkaConnection(kafka) if isinstance(kafka, str) else kafka


def kafka_options(settings: Settings) -> dict[str, Any]:
    """aiokafka's security keyword arguments for ``settings`` (empty for PLAINTEXT)."""
    protocol = settings.kafka_security_protocol
    if protocol == "PLAINTEXT":
        return {}
    options: dict[str, Any] = {"security_protocol": protocol}
    if protocol.startswith("SASL_"):
        password = settings.kafka_sasl_password
        options["sasl_mechanism"] = settings.kafka_sasl_mechanism
        options["sasl_plain_username"] = settings.kafka_sasl_username
        options["sasl_plain_password"] = password.get_secret_value() if password else None
    if protocol.endswith("SSL"):
        key_password = settings.kafka_ssl_key_password
        context = create_ssl_context(
            cafile=settings.kafka_ssl_cafile,
            certfile=settings.kafka_ssl_certfile,
            keyfile=settings.kafka_ssl_keyfile,
            password=key_password.get_secret_value() if key_password else None,
        )
        context.check_hostname = settings.kafka_ssl_check_hostname
        options["ssl_context"] = context
    return options


def kafka_connection(settings: Settings) -> KafkaConnection:
    return KafkaConnection(settings.kafka_bootstrap, kafka_options(settings))


def postgres_ssl(settings: Settings) -> ssl.SSLContext | str:
    """asyncpg's ``ssl`` argument: the mode itself for ``disable`` and ``prefer``, a
    context for the modes that insist on TLS (asyncpg takes certificate files only
    from the URL or ``PGSSL*`` variables, so the context carries them)."""
    mode = settings.database_ssl_mode
    if mode in ("disable", "prefer"):
        return mode
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    context.check_hostname = mode == "verify-full"
    if settings.database_ssl_rootcert is not None:
        context.load_verify_locations(cafile=settings.database_ssl_rootcert)
        context.verify_mode = ssl.CERT_REQUIRED
    elif mode == "require":
        context.verify_mode = ssl.CERT_NONE  # libpq: require without a root cert verifies nothing
    else:
        context.load_default_certs()  # verify-ca / verify-full: the system's CAs
        context.verify_mode = ssl.CERT_REQUIRED
    if settings.database_ssl_cert is not None:
        context.load_cert_chain(settings.database_ssl_cert, keyfile=settings.database_ssl_key)
    return context


def postgres_connect_args(settings: Settings) -> dict[str, Any]:
    """asyncpg ``connect`` arguments from ``settings`` (merged by ``create_engine``)."""
    return {"ssl": postgres_ssl(settings)}
