"""The cluster's TLS credentials on their way into worker jobs.

They are checked before anything is submitted and written only to a
private (0700) staging directory that exists for as long as the schedd
takes to copy them into its spool.
"""

from __future__ import annotations

import datetime
import os
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import serialization

from .errors import CredentialError
from .naming import CERT_FILE, KEY_FILE

# How far this machine's clock may be behind the gateway's that issued the
# certificate (it is issued at cluster start: "not valid before" is now).
CLOCK_SKEW = datetime.timedelta(minutes=5)


def check_credentials(
    tls_cert: str, tls_key: str, now: datetime.datetime | None = None
) -> x509.Certificate:
    """Refuse a certificate that is not valid now or does not match its key."""
    try:
        cert = x509.load_pem_x509_certificate(tls_cert.encode())
        key = serialization.load_pem_private_key(tls_key.encode(), password=None)
    except (ValueError, TypeError) as exc:
        raise CredentialError(f"The cluster's TLS credentials cannot be read: {exc}") from None
    now = now or datetime.datetime.now(datetime.UTC)
    if cert.not_valid_after_utc <= now:
        raise CredentialError(
            "The cluster's TLS certificate expired at "
            f"{cert.not_valid_after_utc:%Y-%m-%d %H:%M} UTC; start a new cluster"
        )
    if cert.not_valid_before_utc > now + CLOCK_SKEW:
        raise CredentialError(
            f"The cluster's TLS certificate is not valid before "
            f"{cert.not_valid_before_utc:%Y-%m-%d %H:%M} UTC; check this machine's clock"
        )
    spki = serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    if key.public_key().public_bytes(*spki) != cert.public_key().public_bytes(*spki):
        raise CredentialError("The cluster's TLS key does not belong to its certificate")
    return cert


@contextmanager
def staged_credentials(tls_cert: str, tls_key: str) -> Iterator[tuple[Path, Path]]:
    """Write the credentials to a fresh 0700 directory, removed on exit."""
    with tempfile.TemporaryDirectory(prefix="htcdaskgateway-") as directory:
        # mkdtemp creates the directory 0700; the files are created 0600.
        cert_path = Path(directory, CERT_FILE)
        key_path = Path(directory, KEY_FILE)
        _write_private(cert_path, tls_cert)
        _write_private(key_path, tls_key)
        yield cert_path, key_path


def _write_private(path: Path, text: str) -> None:
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w") as f:
        f.write(text)
