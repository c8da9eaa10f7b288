"""The cluster's PKI: one CA, serving and client certificates, the service-account key pair.

Files written under ``<cluster dir>/pki/`` (PEM; keys readable by the owner only)::

    ca.crt ca.key                          the cluster CA (also the client CA and signer)
    front-proxy-ca.crt/.key                CA of the aggregation layer's request headers
    front-proxy-client.crt/.key            API server -> aggregated API servers
    apiserver.crt/.key                     serving cert, SANs in `apiserver_sans`
    apiserver-kubelet-client.crt/.key      API server -> kubelet (O=system:masters)
    admin.crt/.key                         CN=kubernetes-admin, O=system:masters
    kube-controller-manager.crt/.key       CN=system:kube-controller-manager
    kube-scheduler.crt/.key                CN=system:kube-scheduler
    kube-proxy.crt/.key                    CN=system:kube-proxy
    kubelet.crt/.key                       CN=system:node:<node>, O=system:nodes (client)
    kubelet-serving.crt/.key               the kubelet's own serving cert
    service-account.key/.pub               RSA pair that signs and checks SA tokens

Existing files are reused so that kubeconfigs handed out earlier stay valid across
``up``/``down``; a serving certificate whose SANs no longer match is issued again. Go
ignores the CN for host names, so hosts go in SANs; serials are positive random 159-bit
numbers as RFC 5280 asks. Leaf keys are ECDSA P-256 (fast to generate, accepted by every
component); the service-account key is RSA because that is what Kubernetes documents.
"""

from __future__ import annotations

import datetime
import ipaddress
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from kubefaas_cluster import network

CA_VALIDITY = datetime.timedelta(days=3650)
LEAF_VALIDITY = datetime.timedelta(days=365)
# Tolerate a clock that is slightly behind on another machine reading the certs.
BACKDATE = datetime.timedelta(minutes=5)

PrivateKey = ec.EllipticCurvePrivateKey | rsa.RSAPrivateKey


@dataclass(frozen=True)
class KeyPair:
    """Paths of one PEM certificate and its key."""

    cert: Path
    key: Path


@dataclass(frozen=True)
class Pki:
    """Where every credential of one cluster lives; see the module docstring."""

    root: Path

    def pair(self, name: str) -> KeyPair:
        return KeyPair(cert=self.root / f"{name}.crt", key=self.root / f"{name}.key")

    @property
    def ca(self) -> KeyPair:
        return self.pair("ca")

    @property
    def front_proxy_ca(self) -> KeyPair:
        return self.pair("front-proxy-ca")

    @property
    def service_account_key(self) -> Path:
        return self.root / "service-account.key"

    @property
    def service_account_pub(self) -> Path:
        return self.root / "service-account.pub"


@dataclass(frozen=True)
class CertSpec:
    """What one leaf certificate says about its holder."""

    name: str
    common_name: str
    organizations: tuple[str, ...] = ()
    dns_names: tuple[str, ...] = ()
    ip_addresses: tuple[str, ...] = ()
    server: bool = False
    client: bool = False


def apiserver_sans(*, node_ip: str) -> tuple[tuple[str, ...], tuple[str, ...]]:
    """(DNS names, IPs) clients use to reach the API server, in-cluster and from the host."""
    dns = (
        "localhost",
        "kubernetes",
        "kubernetes.default",
        "kubernetes.default.svc",
        f"kubernetes.default.svc.{network.CLUSTER_DOMAIN}",
    )
    ips = tuple(dict.fromkeys(("127.0.0.1", node_ip, network.KUBERNETES_SERVICE_IP)))
    return dns, ips


def cluster_cert_specs(*, node_name: str, node_ip: str) -> list[CertSpec]:
    """Every leaf certificate a single-node cluster needs."""
    dns, ips = apiserver_sans(node_ip=node_ip)
    return [
        CertSpec("apiserver", "kube-apiserver", dns_names=dns, ip_addresses=ips, server=True),
        CertSpec(
            "apiserver-kubelet-client",
            "kube-apiserver-kubelet-client",
            organizations=("system:masters",),
            client=True,
        ),
        CertSpec("admin", "kubernetes-admin", organizations=("system:masters",), client=True),
        CertSpec("kube-controller-manager", "system:kube-controller-manager", client=True),
        CertSpec("kube-scheduler", "system:kube-scheduler", client=True),
        CertSpec("kube-proxy", "system:kube-proxy", client=True),
        CertSpec(
            "kubelet",
            f"system:node:{node_name}",
            organizations=("system:nodes",),
            client=True,
        ),
        CertSpec(
            "kubelet-serving",
            node_name,
            dns_names=tuple(dict.fromkeys((node_name, "localhost"))),
            ip_addresses=tuple(dict.fromkeys((node_ip, "127.0.0.1"))),
            server=True,
        ),
    ]


def _now() -> datetime.datetime:
    return datetime.datetime.now(datetime.UTC)


def _write_private(path: Path, data: bytes) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(path.suffix + ".tmp")
    tmp.write_bytes(data)
    tmp.chmod(0o600)
    tmp.replace(path)


def _write_public(path: Path, data: bytes) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(path.suffix + ".tmp")
    tmp.write_bytes(data)
    tmp.replace(path)


def _key_pem(key: PrivateKey) -> bytes:
    return key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )


def _name(common_name: str, organizations: tuple[str, ...] = ()) -> x509.Name:
    attributes = [x509.NameAttribute(NameOID.ORGANIZATION_NAME, org) for org in organizations]
    attributes.append(x509.NameAttribute(NameOID.COMMON_NAME, common_name))
    return x509.Name(attributes)


def create_ca(pair: KeyPair, *, common_name: str = "kubefaas-local-ca") -> None:
    """A self-signed CA allowed to sign leaf certificates only (path length 0)."""
    key = ec.generate_private_key(ec.SECP256R1())
    subject = _name(common_name)
    now = _now()
    cert = (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - BACKDATE)
        .not_valid_after(now + CA_VALIDITY)
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
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
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
        .sign(key, hashes.SHA256())
    )
    _write_private(pair.key, _key_pem(key))
    _write_public(pair.cert, cert.public_bytes(serialization.Encoding.PEM))


def _load_ca(pair: KeyPair) -> tuple[x509.Certificate, PrivateKey]:
    cert = x509.load_pem_x509_certificate(pair.cert.read_bytes())
    key = serialization.load_pem_private_key(pair.key.read_bytes(), password=None)
    if not isinstance(key, ec.EllipticCurvePrivateKey | rsa.RSAPrivateKey):
        raise ValueError(f"{pair.key}: unsupported CA key type {type(key).__name__}")
    return cert, key


def issue(ca: KeyPair, pair: KeyPair, spec: CertSpec) -> None:
    """Sign a leaf certificate for `spec` with the CA and write it with a fresh key."""
    ca_cert, ca_key = _load_ca(ca)
    key = ec.generate_private_key(ec.SECP256R1())
    now = _now()
    usages = []
    if spec.server:
        usages.append(ExtendedKeyUsageOID.SERVER_AUTH)
    if spec.client:
        usages.append(ExtendedKeyUsageOID.CLIENT_AUTH)
    builder = (
        x509.CertificateBuilder()
        .subject_name(_name(spec.common_name, spec.organizations))
        .issuer_name(ca_cert.subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - BACKDATE)
        .not_valid_after(now + LEAF_VALIDITY)
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=True,
                content_commitment=False,
                key_encipherment=False,
                data_encipherment=False,
                key_agreement=False,
                key_cert_sign=False,
                crl_sign=False,
                encipher_only=False,
                decipher_only=False,
            ),
            critical=True,
        )
        .add_extension(x509.ExtendedKeyUsage(usages), critical=False)
        .add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_key.public_key()),
            critical=False,
        )
    )
    sans: list[x509.GeneralName] = [x509.DNSName(name) for name in spec.dns_names]
    sans.extend(x509.IPAddress(ipaddress.ip_address(ip)) for ip in spec.ip_addresses)
    if sans:
        builder = builder.add_extension(x509.SubjectAlternativeName(sans), critical=False)
    cert = builder.sign(ca_key, hashes.SHA256())
    _write_private(pair.key, _key_pem(key))
    _write_public(pair.cert, cert.public_bytes(serialization.Encoding.PEM))


def _matches(pair: KeyPair, spec: CertSpec, *, ca: KeyPair) -> bool:
    """True if the stored cert was signed by this CA and names the same subject and SANs."""
    if not (pair.cert.is_file() and pair.key.is_file()):
        return False
    cert = x509.load_pem_x509_certificate(pair.cert.read_bytes())
    ca_cert = x509.load_pem_x509_certificate(ca.cert.read_bytes())
    try:
        # A CA created again keeps its name but not its key: check the signature itself.
        cert.verify_directly_issued_by(ca_cert)
    except (ValueError, TypeError, InvalidSignature):
        return False
    if cert.subject != _name(spec.common_name, spec.organizations):
        return False
    if cert.not_valid_after_utc < _now() + datetime.timedelta(days=1):
        return False
    try:
        san = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    except x509.ExtensionNotFound:
        return not (spec.dns_names or spec.ip_addresses)
    dns = set(san.get_values_for_type(x509.DNSName))
    ips = {str(ip) for ip in san.get_values_for_type(x509.IPAddress)}
    return dns == set(spec.dns_names) and ips == set(spec.ip_addresses)


def create_service_account_keys(pki: Pki) -> None:
    """The RSA pair the API server checks and the controller-manager signs SA tokens with."""
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    _write_private(pki.service_account_key, _key_pem(key))
    _write_public(
        pki.service_account_pub,
        key.public_key().public_bytes(
            serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
        ),
    )


FRONT_PROXY_CLIENT = CertSpec("front-proxy-client", "front-proxy-client", client=True)


def ensure_pki(pki: Pki, *, node_name: str, node_ip: str) -> None:
    """Create whatever credential is missing or stale; keep the rest.

    The front-proxy CA is separate from the cluster CA, as Kubernetes asks, so that a
    client certificate of the cluster CA can never pose as the aggregation proxy.
    """
    pki.root.mkdir(parents=True, exist_ok=True)
    pki.root.chmod(0o700)
    for ca, common_name in ((pki.ca, "kubefaas-local-ca"), (pki.front_proxy_ca, "front-proxy-ca")):
        if not (ca.cert.is_file() and ca.key.is_file()):
            create_ca(ca, common_name=common_name)
    for spec in cluster_cert_specs(node_name=node_name, node_ip=node_ip):
        pair = pki.pair(spec.name)
        if not _matches(pair, spec, ca=pki.ca):
            issue(pki.ca, pair, spec)
    proxy_client = pki.pair(FRONT_PROXY_CLIENT.name)
    if not _matches(proxy_client, FRONT_PROXY_CLIENT, ca=pki.front_proxy_ca):
        issue(pki.front_proxy_ca, proxy_client, FRONT_PROXY_CLIENT)
    if not (pki.service_account_key.is_file() and pki.service_account_pub.is_file()):
        create_service_account_keys(pki)
