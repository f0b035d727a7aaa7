"""A private CA and workload certificates with SPIFFE URI SANs, as Istio's CA would issue them.

Envoy fills ``source.principal`` of an ext-authz check from the client certificate's URI SAN, so
a test that presents one of these certificates speaks as that namespace's workload.
"""

from __future__ import annotations

import datetime
import ssl
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

__all__ = ["MeshCA", "Workload"]


@dataclass(frozen=True)
class Workload:
    cert: Path
    key: Path


def _key_pem(key: ec.EllipticCurvePrivateKey) -> bytes:
    return key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )


class MeshCA:
    def __init__(self, directory: Path, trust_domain: str = "cluster.local"):
        self.directory = directory
        self.trust_domain = trust_domain
        self._key = ec.generate_private_key(ec.SECP256R1())
        name = x509.Name([x509.NameAttribute(NameOID.ORGANIZATION_NAME, trust_domain)])
        now = datetime.datetime.now(datetime.UTC)
        self._name = name
        self._cert = (
            x509.CertificateBuilder()
            .subject_name(name)
            .issuer_name(name)
            .public_key(self._key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - datetime.timedelta(minutes=5))
            .not_valid_after(now + datetime.timedelta(days=1))
            .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
            .add_extension(
                x509.KeyUsage(
                    digital_signature=True,
                    content_commitment=False,
                    key_encipherment=False,
                    data_encipherment=False,
                    key_agreement=False,
                    key_cert_sign=True,
                    crl_sign=True,
                    encipher_only=False,
                    decipher_only=False,
                ),
                critical=True,
            )
            .sign(self._key, hashes.SHA256())
        )
        self.cert = directory / "ca.pem"
        self.cert.write_bytes(self._cert.public_bytes(serialization.Encoding.PEM))

    def issue(self, name: str, *, uri: str | None = None, dns: str | None = None) -> Workload:
        key = ec.generate_private_key(ec.SECP256R1())
        now = datetime.datetime.now(datetime.UTC)
        sans: list[x509.GeneralName] = []
        if uri is not None:
            sans.append(x509.UniformResourceIdentifier(uri))
        if dns is not None:
            sans.append(x509.DNSName(dns))
        cert = (
            x509.CertificateBuilder()
            .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name)]))
            .issuer_name(self._name)
            .public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - datetime.timedelta(minutes=5))
            .not_valid_after(now + datetime.timedelta(hours=1))
            .add_extension(x509.SubjectAlternativeName(sans), critical=False)
            .add_extension(
                x509.ExtendedKeyUsage(
                    [ExtendedKeyUsageOID.SERVER_AUTH, ExtendedKeyUsageOID.CLIENT_AUTH]
                ),
                critical=False,
            )
            .sign(self._key, hashes.SHA256())
        )
        workload = Workload(self.directory / f"{name}.pem", self.directory / f"{name}-key.pem")
        workload.cert.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
        workload.key.write_bytes(_key_pem(key))
        return workload

    def workload(self, namespace: str, service_account: str = "default") -> Workload:
        uri = f"spiffe://{self.trust_domain}/ns/{namespace}/sa/{service_account}"
        return self.issue(f"{namespace}-{service_account}", uri=uri)

    def client_context(self, workload: Workload | None) -> ssl.SSLContext:
        context = ssl.create_default_context(cafile=str(self.cert))
        context.check_hostname = False
        if workload is not None:
            context.load_cert_chain(str(workload.cert), str(workload.key))
        return context
