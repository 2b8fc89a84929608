"""The rig node's certificates and kubeconfigs, made fresh for each node.

One CA signs the apiserver's serving certificate and one client certificate
per component (its user and group name what RBAC and the Node authorizer
grant it); the service-account tokens get their own key pair. Nothing here
outlives the node container: its /etc/kubernetes is part of the container.

Usage: pki.py DIR NODE_NAME NODE_IP SERVICE_IP
"""

from __future__ import annotations

import base64
import datetime
import ipaddress
import json
import sys
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

VALID_FOR = datetime.timedelta(days=30)


def _key() -> ec.EllipticCurvePrivateKey:
    return ec.generate_private_key(ec.SECP256R1())


def _pem_key(key: ec.EllipticCurvePrivateKey) -> bytes:
    return key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )


def _pem_cert(cert: x509.Certificate) -> bytes:
    return cert.public_bytes(serialization.Encoding.PEM)


def _name(common_name: str, organization: str | None = None) -> x509.Name:
    attributes = [x509.NameAttribute(NameOID.COMMON_NAME, common_name)]
    if organization:
        attributes.append(x509.NameAttribute(NameOID.ORGANIZATION_NAME, organization))
    return x509.Name(attributes)


class Authority:
    def __init__(self) -> None:
        self.key = _key()
        now = datetime.datetime.now(datetime.UTC)
        subject = _name("htcdaskgateway-rig-ca")
        self.cert = (
            x509.CertificateBuilder()
            .subject_name(subject)
            .issuer_name(subject)
            .public_key(self.key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - datetime.timedelta(minutes=5))
            .not_valid_after(now + VALID_FOR)
            .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
            .add_extension(
                x509.SubjectKeyIdentifier.from_public_key(self.key.public_key()), critical=False
            )
            .add_extension(
                x509.KeyUsage(
                    digital_signature=True,
                    key_cert_sign=True,
                    crl_sign=True,
                    content_commitment=False,
                    key_encipherment=False,
                    data_encipherment=False,
                    key_agreement=False,
                    encipher_only=False,
                    decipher_only=False,
                ),
                critical=True,
            )
            .sign(self.key, hashes.SHA256())
        )

    def issue(
        self,
        common_name: str,
        organization: str | None = None,
        *,
        server_names: list[str] | None = None,
    ) -> tuple[bytes, bytes]:
        key = _key()
        now = datetime.datetime.now(datetime.UTC)
        usages = (
            [ExtendedKeyUsageOID.SERVER_AUTH] if server_names else [ExtendedKeyUsageOID.CLIENT_AUTH]
        )
        builder = (
            x509.CertificateBuilder()
            .subject_name(_name(common_name, organization))
            .issuer_name(self.cert.subject)
            .public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - datetime.timedelta(minutes=5))
            .not_valid_after(now + VALID_FOR)
            .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
            .add_extension(x509.ExtendedKeyUsage(usages), critical=False)
            # Python 3.13's default verification is strict (RFC 5280) and
            # refuses certificates without these.
            .add_extension(
                x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False
            )
            .add_extension(
                x509.AuthorityKeyIdentifier.from_issuer_public_key(self.key.public_key()),
                critical=False,
            )
        )
        if server_names:
            alt: list[x509.GeneralName] = []
            for name in server_names:
                try:
                    alt.append(x509.IPAddress(ipaddress.ip_address(name)))
                except ValueError:
                    alt.append(x509.DNSName(name))
            builder = builder.add_extension(x509.SubjectAlternativeName(alt), critical=False)
        return _pem_cert(builder.sign(self.key, hashes.SHA256())), _pem_key(key)


def kubeconfig(server: str, ca: bytes, cert: bytes, key: bytes, user: str) -> str:
    def b64(data: bytes) -> str:
        return base64.b64encode(data).decode()

    config = {
        "apiVersion": "v1",
        "kind": "Config",
        "clusters": [
            {"name": "rig", "cluster": {"server": server, "certificate-authority-data": b64(ca)}}
        ],
        "users": [
            {
                "name": user,
                "user": {"client-certificate-data": b64(cert), "client-key-data": b64(key)},
            }
        ],
        "contexts": [{"name": "rig", "context": {"cluster": "rig", "user": user}}],
        "current-context": "rig",
    }
    return json.dumps(config, indent=1)


def main(directory: str, node_name: str, node_ip: str, service_ip: str) -> None:
    out = Path(directory)
    pki = out / "pki"
    pki.mkdir(parents=True, exist_ok=True)
    ca = Authority()
    ca_pem = _pem_cert(ca.cert)
    (pki / "ca.crt").write_bytes(ca_pem)
    (pki / "ca.key").write_bytes(_pem_key(ca.key))
    (pki / "ca.key").chmod(0o600)

    def write(name: str, pair: tuple[bytes, bytes]) -> None:
        (pki / f"{name}.crt").write_bytes(pair[0])
        (pki / f"{name}.key").write_bytes(pair[1])
        (pki / f"{name}.key").chmod(0o600)

    write(
        "apiserver",
        ca.issue(
            "kube-apiserver",
            server_names=[
                "kubernetes",
                "kubernetes.default",
                "kubernetes.default.svc",
                "kubernetes.default.svc.cluster.local",
                "localhost",
                node_name,
                "127.0.0.1",
                node_ip,
                service_ip,
            ],
        ),
    )
    write("apiserver-kubelet-client", ca.issue("kube-apiserver-kubelet-client", "system:masters"))
    sa_key = _key()
    (pki / "sa.key").write_bytes(_pem_key(sa_key))
    (pki / "sa.key").chmod(0o600)
    (pki / "sa.pub").write_bytes(
        sa_key.public_key().public_bytes(
            serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
        )
    )
    # Components inside the node talk to the apiserver on loopback; the
    # admin's copy (for kubectl and helm outside the node) uses the node IP.
    clients = {
        "controller-manager": ("system:kube-controller-manager", None, "https://127.0.0.1:6443"),
        "scheduler": ("system:kube-scheduler", None, "https://127.0.0.1:6443"),
        "kubelet": (f"system:node:{node_name}", "system:nodes", "https://127.0.0.1:6443"),
        "kube-proxy": ("system:kube-proxy", None, "https://127.0.0.1:6443"),
        "admin": ("kubernetes-admin", "system:masters", f"https://{node_ip}:6443"),
    }
    for name, (user, group, server) in clients.items():
        cert, key = ca.issue(user, group)
        path = out / f"{name}.conf"
        path.write_text(kubeconfig(server, ca_pem, cert, key, user))
        path.chmod(0o600)


if __name__ == "__main__":
    main(*sys.argv[1:])
