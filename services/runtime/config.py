"""Settings shared by every service (environment variables, prefix ``LOYALTY_``)."""

from __future__ import annotations

from datetime import timedelta
from pathlib import Path
from typing import Literal, Self
from urllib.parse import parse_qs, urlsplit

from pydantic import Field, FilePath, SecretStr, field_validator, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from schemas.topics import DEFAULT_PARTITIONS
from services.common.durations import parse_duration

DEFAULT_BOOTSTRAP = "127.0.0.1:9092"

KafkaSecurityProtocol = Literal["PLAINTEXT", "SSL", "SASL_PLAINTEXT", "SASL_SSL"]
KafkaSaslMechanism = Literal["PLAIN", "SCRAM-SHA-256", "SCRAM-SHA-512"]
DatabaseSslMode = Literal["disable", "prefer", "require", "verify-ca", "verify-full"]
LogFormat = Literal["text", "json"]


class Settings(BaseSettings):
    """Where the broker and the database are, and how topics are named.

    ``database_url`` accepts ``postgresql://`` or ``postgresql+asyncpg://`` URLs; a
    unix socket directory is given as ``?host=/path``.
    """

    # errors name the variable, never echo its value: the URL and passwords are secrets
    model_config = SettingsConfigDict(
        env_prefix="LOYALTY_", frozen=True, extra="ignore", hide_input_in_errors=True
    )

    kafka_bootstrap: str = DEFAULT_BOOTSTRAP
    # How every Kafka client (services, relays, ticker, admin, CLI, benches) talks to
    # the brokers; turned into client options in one place (services/runtime/connections.py).
    kafka_security_protocol: KafkaSecurityProtocol = "PLAINTEXT"
    kafka_sasl_mechanism: KafkaSaslMechanism | None = None
    kafka_sasl_username: str | None = None
    kafka_sasl_password: SecretStr | None = None
    # SSL / SASL_SSL: the CA that signed the brokers' certificates (the system CAs
    # when unset), and a client certificate and key for mutual TLS.
    kafka_ssl_cafile: FilePath | None = None
    kafka_ssl_certfile: FilePath | None = None
    kafka_ssl_keyfile: FilePath | None = None
    kafka_ssl_key_password: SecretStr | None = None
    kafka_ssl_check_hostname: bool = True
    database_url: SecretStr = SecretStr("postgresql+asyncpg://postgres@127.0.0.1:5432/loyalty")
    # TLS to Postgres, with libpq's meaning of the modes ("prefer": TLS when the server
    # offers it, unverified; "require": TLS, verified only against a given root cert;
    # "verify-ca": the chain; "verify-full": the chain and the host name). A unix
    # socket (?host=/path) never uses TLS.
    database_ssl_mode: DatabaseSslMode = "prefer"
    database_ssl_rootcert: FilePath | None = None
    database_ssl_cert: FilePath | None = None
    database_ssl_key: FilePath | None = None
    topic_prefix: str = ""
    program: Path | None = None
    partitions: int = Field(default=DEFAULT_PARTITIONS, ge=1)
    session_timeout_ms: int = Field(default=10_000, ge=1_000)
    batch_max_records: int = Field(default=2_000, ge=1)
    consumer_poll_ms: int = Field(default=200, ge=1)
    batch_linger_ms: int = Field(default=50, ge=0)
    dedupe_retention_days: int = Field(default=30, ge=1)
    # How far an event's time may be ahead of its arrival (the Kafka record's
    # timestamp) before the consumer dead-letters it instead of handing it on: an
    # event from the future would move its tenant's stream clock there and expire
    # every open offer and credit at once. A duration: "90s", "5m", "1h".
    max_clock_skew: timedelta = timedelta(minutes=5)
    # How many times in a row a consumer retries a record whose batch fails for a
    # reason that is neither transient nor one poisoned record (a handler failing on
    # everything) before it dead-letters the record and moves on.
    max_attempts: int = Field(default=5, ge=1)
    # How often the elected ticker writes a round of clock ticks to every partition
    # of the input topics, so that expiries and time-driven segment changes happen
    # without traffic (services/runtime/ticks.py). "0s" turns ticking off.
    tick_interval: timedelta = timedelta(minutes=1)
    demo_api_key: SecretStr | None = None
    # "text" lines for a terminal, or "json": one object per line with the tenant,
    # service and event id when known (services/runtime/logs.py). The CLI reads it
    # before anything else, to set up logging; here it is checked with the rest.
    log_format: LogFormat = "text"

    @field_validator("max_clock_skew", "tick_interval", mode="before")
    @classmethod
    def _parse_duration(cls, value: object) -> object:
        # environment variables arrive as text: "5m" rather than ISO 8601's "PT5M"
        return parse_duration(value) if isinstance(value, str) else value

    @model_validator(mode="after")
    def _check_connections(self) -> Self:
        problems = kafka_problems(self) + database_problems(self)
        if problems:
            raise ValueError("; ".join(problems))
        return self

    def async_database_url(self) -> str:
        url = self.database_url.get_secret_value()
        for plain in ("postgresql://", "postgres://"):
            if url.startswith(plain):
                return "postgresql+asyncpg://" + url[len(plain) :]
        return url


def kafka_problems(s: Settings) -> list[str]:
    """What is wrong with the Kafka security settings, one clear sentence each."""
    problems: list[str] = []
    protocol = s.kafka_security_protocol
    sasl = protocol.startswith("SASL_")
    tls = protocol.endswith("SSL")
    if sasl:
        if s.kafka_sasl_mechanism is None:
            problems.append(
                f"LOYALTY_KAFKA_SECURITY_PROTOCOL={protocol} needs LOYALTY_KAFKA_SASL_MECHANISM"
                " (PLAIN, SCRAM-SHA-256 or SCRAM-SHA-512)"
            )
        missing = [
            name
            for name, value in (
                ("LOYALTY_KAFKA_SASL_USERNAME", s.kafka_sasl_username),
                ("LOYALTY_KAFKA_SASL_PASSWORD", s.kafka_sasl_password),
            )
            if _blank(value)
        ]
        if missing:
            problems.append(
                f"LOYALTY_KAFKA_SECURITY_PROTOCOL={protocol} needs " + " and ".join(missing)
            )
    else:
        given = [
            name
            for name, value in (
                ("LOYALTY_KAFKA_SASL_MECHANISM", s.kafka_sasl_mechanism),
                ("LOYALTY_KAFKA_SASL_USERNAME", s.kafka_sasl_username),
                ("LOYALTY_KAFKA_SASL_PASSWORD", s.kafka_sasl_password),
            )
            if value is not None
        ]
        if given:
            problems.append(
                f"{', '.join(given)} only apply with LOYALTY_KAFKA_SECURITY_PROTOCOL="
                f"SASL_PLAINTEXT or SASL_SSL (it is {protocol})"
            )
    tls_given = [
        name
        for name, value in (
            ("LOYALTY_KAFKA_SSL_CAFILE", s.kafka_ssl_cafile),
            ("LOYALTY_KAFKA_SSL_CERTFILE", s.kafka_ssl_certfile),
            ("LOYALTY_KAFKA_SSL_KEYFILE", s.kafka_ssl_keyfile),
            ("LOYALTY_KAFKA_SSL_KEY_PASSWORD", s.kafka_ssl_key_password),
        )
        if value is not None
    ]
    if not tls and tls_given:
        problems.append(
            f"{', '.join(tls_given)} only apply with LOYALTY_KAFKA_SECURITY_PROTOCOL="
            f"SSL or SASL_SSL (it is {protocol})"
        )
    if tls and s.kafka_ssl_certfile is None and s.kafka_ssl_keyfile is not None:
        problems.append("LOYALTY_KAFKA_SSL_KEYFILE needs LOYALTY_KAFKA_SSL_CERTFILE")
    return problems


def database_problems(s: Settings) -> list[str]:
    """What is wrong with the Postgres TLS settings, one clear sentence each."""
    problems: list[str] = []
    query = parse_qs(urlsplit(s.database_url.get_secret_value()).query)
    in_url = sorted(k for k in query if k in ("ssl", "sslmode", "sslrootcert", "sslcert", "sslkey"))
    if in_url:
        problems.append(
            f"LOYALTY_DATABASE_URL carries {', '.join(in_url)}: set TLS with"
            " LOYALTY_DATABASE_SSL_MODE / _SSL_ROOTCERT / _SSL_CERT / _SSL_KEY instead"
        )
    files = [
        name
        for name, value in (
            ("LOYALTY_DATABASE_SSL_ROOTCERT", s.database_ssl_rootcert),
            ("LOYALTY_DATABASE_SSL_CERT", s.database_ssl_cert),
            ("LOYALTY_DATABASE_SSL_KEY", s.database_ssl_key),
        )
        if value is not None
    ]
    if files and s.database_ssl_mode in ("disable", "prefer"):
        problems.append(
            f"{', '.join(files)} only apply with LOYALTY_DATABASE_SSL_MODE=require, verify-ca"
            f" or verify-full (it is {s.database_ssl_mode})"
        )
    if s.database_ssl_key is not None and s.database_ssl_cert is None:
        problems.append("LOYALTY_DATABASE_SSL_KEY needs LOYALTY_DATABASE_SSL_CERT")
    return problems


def _blank(value: str | SecretStr | None) -> bool:
    if isinstance(value, SecretStr):
        value = value.get_secret_value()
    return not value
