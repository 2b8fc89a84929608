import datetime
import os
import stat

import pytest

from htcdaskgateway.credentials import check_credentials, staged_credentials
from htcdaskgateway.errors import CredentialError

from .conftest import make_credentials


def test_staging_is_private_and_removed():
    cert, key = make_credentials()
    with staged_credentials(cert, key) as (cert_path, key_path):
        directory = cert_path.parent
        assert stat.S_IMODE(os.stat(directory).st_mode) == 0o700
        for path in (cert_path, key_path):
            assert stat.S_IMODE(os.stat(path).st_mode) == 0o600
        assert key_path.read_text() == key
        assert cert_path.read_text() == cert
    assert not directory.exists()


def test_staging_is_removed_on_error():
    cert, key = make_credentials()
    with pytest.raises(RuntimeError), staged_credentials(cert, key) as (cert_path, _):
        directory = cert_path.parent
        raise RuntimeError
    assert not directory.exists()


def test_valid_credentials_pass():
    check_credentials(*make_credentials())


def test_expired_certificate_is_refused():
    now = datetime.datetime.now(datetime.UTC)
    cert, key = make_credentials(
        not_before=now - datetime.timedelta(days=2), not_after=now - datetime.timedelta(days=1)
    )
    with pytest.raises(CredentialError, match="expired"):
        check_credentials(cert, key)


def test_key_of_another_certificate_is_refused():
    cert, _ = make_credentials()
    _, other_key = make_credentials()
    with pytest.raises(CredentialError, match="does not belong"):
        check_credentials(cert, other_key)


def test_garbage_is_refused():
    with pytest.raises(CredentialError, match="cannot be read"):
        check_credentials("not a cert", "not a key")
