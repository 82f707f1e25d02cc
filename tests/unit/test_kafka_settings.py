"""KafkaSettings: env parsing, validation and the aiokafka kwargs a client will actually receive."""

from __future__ import annotations

import datetime
import ssl
from pathlib import Path

import pytest
from pydantic import ValidationError

from schemas import topics
from schemas.topics import LOCAL_BOOTSTRAP, KafkaSettings


@pytest.fixture(autouse=True)
def _clean_env(monkeypatch: pytest.MonkeyPatch) -> None:
    """Tests run under `make test`, which exports RINGFENCE_KAFKA_BOOTSTRAP; start from a clean env."""
    for name in ("BOOTSTRAP", "SECURITY_PROTOCOL", "SASL_MECHANISM", "SASL_USERNAME", "SASL_PASSWORD",
                 "SSL_CAFILE", "SSL_CERTFILE", "SSL_KEYFILE", "CLIENT_ID"):
        monkeypatch.delenv(f"RINGFENCE_KAFKA_{name}", raising=False)


def test_defaults_point_at_the_local_broker() -> None:
    settings = KafkaSettings()
    assert settings.bootstrap is None
    assert not settings.is_external
    assert settings.bootstrap_servers == LOCAL_BOOTSTRAP
    assert settings.client_kwargs() == {
        "bootstrap_servers": LOCAL_BOOTSTRAP, "client_id": "ringfence", "security_protocol": "PLAINTEXT",
    }


def test_bootstrap_from_env_marks_cluster_external(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("RINGFENCE_KAFKA_BOOTSTRAP", " k1:9092,k2:9092 ")
    settings = KafkaSettings()
    assert settings.is_external
    assert settings.bootstrap_servers == "k1:9092,k2:9092"
    assert settings.faust_broker() == "kafka://k1:9092;kafka://k2:9092"


def test_empty_bootstrap_env_means_not_configured(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("RINGFENCE_KAFKA_BOOTSTRAP", "")
    assert KafkaSettings().bootstrap is None


def test_sasl_kwargs_and_password_hidden(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("RINGFENCE_KAFKA_BOOTSTRAP", "k1:9093")
    monkeypatch.setenv("RINGFENCE_KAFKA_SECURITY_PROTOCOL", "SASL_PLAINTEXT")
    monkeypatch.setenv("RINGFENCE_KAFKA_SASL_MECHANISM", "SCRAM-SHA-512")
    monkeypatch.setenv("RINGFENCE_KAFKA_SASL_USERNAME", "fleet")
    monkeypatch.setenv("RINGFENCE_KAFKA_SASL_PASSWORD", "hunter2")
    settings = KafkaSettings()
    kwargs = settings.client_kwargs()
    assert kwargs["sasl_mechanism"] == "SCRAM-SHA-512"
    assert kwargs["sasl_plain_username"] == "fleet"
    assert kwargs["sasl_plain_password"] == "hunter2"
    assert "ssl_context" not in kwargs
    assert "hunter2" not in repr(settings)
    assert "hunter2" not in settings.describe()
    assert "fleet" in settings.describe()


def test_sasl_protocol_without_mechanism_is_rejected() -> None:
    with pytest.raises(ValidationError, match="needs sasl_mechanism"):
        KafkaSettings(security_protocol="SASL_SSL")


def test_plain_mechanism_without_credentials_is_rejected() -> None:
    with pytest.raises(ValidationError, match="needs sasl_username and sasl_password"):
        KafkaSettings(security_protocol="SASL_PLAINTEXT", sasl_mechanism="PLAIN", sasl_username="u")


def test_unknown_protocol_is_rejected(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("RINGFENCE_KAFKA_SECURITY_PROTOCOL", "TLS")
    with pytest.raises(ValidationError, match="security_protocol"):
        KafkaSettings()


def test_certfile_without_keyfile_is_rejected() -> None:
    with pytest.raises(ValidationError, match="together"):
        KafkaSettings(security_protocol="SSL", ssl_certfile="/x/cert.pem")


def test_settings_are_frozen() -> None:
    settings = KafkaSettings()
    with pytest.raises(ValidationError):
        settings.client_id = "other"  # type: ignore[misc]


def _self_signed(tmp_path: Path) -> tuple[Path, Path]:
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "ringfence-test")])
    now = datetime.datetime.now(datetime.UTC)
    cert = (
        x509.CertificateBuilder().subject_name(name).issuer_name(name).public_key(key.public_key())
        .serial_number(x509.random_serial_number()).not_valid_before(now)
        .not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .sign(key, hashes.SHA256())
    )
    cert_path, key_path = tmp_path / "cert.pem", tmp_path / "key.pem"
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_path.write_bytes(key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    ))
    return cert_path, key_path


def test_ssl_builds_a_verifying_context_with_client_cert(tmp_path: Path) -> None:
    cert, key = _self_signed(tmp_path)
    settings = KafkaSettings(
        bootstrap="k1:9093", security_protocol="SSL",
        ssl_cafile=str(cert), ssl_certfile=str(cert), ssl_keyfile=str(key),
    )
    context = settings.client_kwargs()["ssl_context"]
    assert isinstance(context, ssl.SSLContext)
    assert context.verify_mode == ssl.CERT_REQUIRED
    assert context.check_hostname
    assert len(context.get_ca_certs()) == 1


def test_ssl_with_missing_cafile_fails_loudly(tmp_path: Path) -> None:
    settings = KafkaSettings(security_protocol="SSL", ssl_cafile=str(tmp_path / "absent.pem"))
    with pytest.raises(FileNotFoundError):
        settings.client_kwargs()


def test_topic_names_are_versioned_and_unique() -> None:
    assert len(set(topics.ALL_TOPICS)) == 10
    assert all(name.startswith("ringfence.") and name.endswith(".v1") for name in topics.ALL_TOPICS)
    assert topics.EVENTS == "ringfence.events.v1"
    assert topics.VERDICTS == "ringfence.verdicts.v1"
