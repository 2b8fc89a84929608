"""Workers without the cluster's certificate are refused by the proxy and scheduler.

Each case starts a real `dask worker` that dials the gateway's proxy with
cluster A's SNI name, as a job would, but with the wrong credentials. The
control case (A's own credentials) must join, so the others fail for the
reason tested.
"""

from __future__ import annotations

import datetime
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

DEATH_TIMEOUT = 10


def self_signed() -> tuple[str, str]:
    now = datetime.datetime.now(datetime.UTC)
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "intruder")])
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(hours=1))
        .not_valid_after(now + datetime.timedelta(days=1))
        .sign(key, hashes.SHA256())
    )
    key_pem = key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )
    return cert.public_bytes(serialization.Encoding.PEM).decode(), key_pem.decode()


def start_worker(
    tmp: Path, proxy: str, cluster_name: str, ca: str, cert: str | None, key: str | None
) -> subprocess.Popen:
    env = dict(os.environ, DASK_DISTRIBUTED__COMM__REQUIRE_ENCRYPTION="True")
    (tmp / "ca.pem").write_text(ca)
    env["DASK_DISTRIBUTED__COMM__TLS__CA_FILE"] = str(tmp / "ca.pem")
    if cert is not None and key is not None:
        (tmp / "cert.pem").write_text(cert)
        (tmp / "key.pem").write_text(key)
        (tmp / "key.pem").chmod(0o600)
        env["DASK_DISTRIBUTED__COMM__TLS__WORKER__CERT"] = str(tmp / "cert.pem")
        env["DASK_DISTRIBUTED__COMM__TLS__WORKER__KEY"] = str(tmp / "key.pem")
    command = [
        sys.executable, "-m", "distributed.cli.dask_worker", proxy,
        "--scheduler-sni", f"daskgateway-{cluster_name}",
        "--name", "intruder", "--no-nanny", "--no-dashboard", "--host", "127.0.0.1",
        "--death-timeout", str(DEATH_TIMEOUT),
    ]  # fmt: skip
    return subprocess.Popen(
        command,
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    )


@pytest.fixture
def two_clusters(new_cluster):
    a, b = new_cluster(), new_cluster()
    return a, b


@pytest.mark.parametrize("credentials", ["none", "other cluster's", "self-signed", "own"])
def test_worker_credentials_decide_whether_it_joins(two_clusters, credentials, tmp_path):
    a, b = two_clusters
    ca = a.security.tls_cert  # what a genuine job trusts: cluster A's certificate
    cert, key = {
        "none": (None, None),
        "other cluster's": (b.security.tls_cert, b.security.tls_key),
        "self-signed": self_signed(),
        "own": (a.security.tls_cert, a.security.tls_key),
    }[credentials]
    worker = start_worker(tmp_path, a.worker_scheduler_address, a.name, ca, cert, key)
    client = a.get_client()
    try:
        joined = False
        deadline = time.monotonic() + DEATH_TIMEOUT + 20
        while time.monotonic() < deadline and worker.poll() is None and not joined:
            joined = any(
                w["name"] == "intruder"
                for w in client.scheduler_info(n_workers=-1)["workers"].values()
            )
            time.sleep(0.5)
        if credentials == "own":
            assert joined, "the control case must join: " + (worker.stderr.read() or "")
        else:
            assert not joined, f"a worker with {credentials} credentials joined cluster A"
            assert worker.wait(timeout=DEATH_TIMEOUT + 20) != 0, "it gave up with an error"
            assert not client.scheduler_info(n_workers=-1)["workers"]
    finally:
        worker.kill()
        worker.wait()
