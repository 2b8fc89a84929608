import datetime
import os

import dask.config
import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID


@pytest.fixture(autouse=True)
def _config_from_defaults_only(monkeypatch):
    # Tests see only the shipped defaults, whatever the environment sets.
    for name in list(os.environ):
        if name.startswith("DASK_GATEWAY__HTCONDOR"):
            monkeypatch.delenv(name)
    dask.config.refresh()
    yield
    monkeypatch.undo()
    dask.config.refresh()


def make_credentials(
    not_before: datetime.datetime | None = None,
    not_after: datetime.datetime | None = None,
) -> tuple[str, str]:
    """A self-signed certificate and its key, as PEM strings."""
    now = datetime.datetime.now(datetime.UTC)
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "test")])
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(not_before or now - datetime.timedelta(hours=1))
        .not_valid_after(not_after or now + datetime.timedelta(days=1))
        .sign(key, hashes.SHA256())
    )
    cert_pem = cert.public_bytes(serialization.Encoding.PEM).decode()
    key_pem = key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    ).decode()
    return cert_pem, key_pem
