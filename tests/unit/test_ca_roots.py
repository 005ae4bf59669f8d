"""qfbridge's HTTPS clients trust certifi's roots from a directory OpenSSL reads on demand: the
directory is certifi's bundle, whole, and OpenSSL finds each root under the name it was given.

OpenSSL is the judge here: a client handshakes (in memory) with a server whose certificate names a
root as its issuer. When OpenSSL finds that root in the directory, the chain fails on the signature
(the test holds no root's key); when the root's file is misnamed, it fails as "unable to get local
issuer certificate"."""

from __future__ import annotations

import datetime as dt
import ssl
import warnings
from collections.abc import Iterator
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.utils import CryptographyDeprecationWarning
from cryptography.x509.name import _ASN1Type
from cryptography.x509.oid import NameOID

from qfbridge.tls import ROOTS, tls_context
from qfbridge_local import ca_roots

SIGNATURE_FAILURE = 7  # X509_V_ERR_CERT_SIGNATURE_FAILURE: the issuer was found
ISSUER_NOT_FOUND = 20  # X509_V_ERR_UNABLE_TO_GET_ISSUER_CERT_LOCALLY
HOST = "hubee.test.invalid"
NOW = dt.datetime.now(dt.UTC)

_RSA = rsa.generate_private_key(public_exponent=65537, key_size=2048)
_EC = ec.generate_private_key(ec.SECP256R1())


@pytest.fixture(autouse=True)
def no_trust_from_the_environment(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    monkeypatch.delenv("SSL_CERT_FILE", raising=False)
    monkeypatch.delenv("SSL_CERT_DIR", raising=False)
    tls_context.cache_clear()
    yield
    tls_context.cache_clear()


def _pem(certificate: x509.Certificate) -> bytes:
    return certificate.public_bytes(serialization.Encoding.PEM)


def _leaf(
    issuer: x509.Name, signer: rsa.RSAPrivateKey | ec.EllipticCurvePrivateKey, issuer_key_id: bytes
) -> tuple[x509.Certificate, rsa.RSAPrivateKey | ec.EllipticCurvePrivateKey]:
    """A server certificate for ``HOST`` naming ``issuer`` (and its key identifier), signed by ``signer``."""
    key = _EC
    builder = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, HOST)]))
        .issuer_name(issuer)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(NOW - dt.timedelta(days=1))
        .not_valid_after(NOW + dt.timedelta(days=30))
        .add_extension(x509.SubjectAlternativeName([x509.DNSName(HOST)]), critical=False)
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(x509.AuthorityKeyIdentifier(issuer_key_id, None, None), critical=False)
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
    )
    return builder.sign(signer, hashes.SHA256()), key


def _handshake(client: ssl.SSLContext, chain: list[x509.Certificate], key: object, tmp: Path) -> int | None:
    """The client's verification error code (None: the handshake completed)."""
    (tmp / "chain.pem").write_bytes(b"".join(_pem(c) for c in chain))
    (tmp / "key.pem").write_bytes(
        key.private_bytes(  # type: ignore[attr-defined]
            serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
        )
    )
    server_context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    server_context.load_cert_chain(tmp / "chain.pem", tmp / "key.pem")
    to_server, to_client = ssl.MemoryBIO(), ssl.MemoryBIO()
    server_in, server_out = ssl.MemoryBIO(), ssl.MemoryBIO()
    client_side = client.wrap_bio(to_client, to_server, server_hostname=HOST)
    server_side = server_context.wrap_bio(server_in, server_out, server_side=True)
    done = {"client": False, "server": False}
    for _ in range(20):
        for name, side in (("client", client_side), ("server", server_side)):
            if done[name]:
                continue
            try:
                side.do_handshake()
                done[name] = True
            except ssl.SSLWantReadError:
                pass
            except ssl.SSLCertVerificationError as error:
                return int(error.verify_code)
            except ssl.SSLError:
                if name == "server":  # the client's alert after its own failure
                    done[name] = True
                else:
                    raise
        server_in.write(to_server.read())
        to_client.write(server_out.read())
        if all(done.values()):
            return None
    raise AssertionError("the handshake neither completed nor failed")


def _client(capath: Path) -> ssl.SSLContext:
    """A client trusting ``capath``; OpenSSL's strict checks of the roots themselves are off (a few
    of certifi's roots, no key identifier for one, fail them whatever their file's name)."""
    context = ssl.create_default_context(capath=str(capath))
    context.verify_flags &= ~ssl.VERIFY_X509_STRICT
    return context


def _key_id(root: x509.Certificate) -> bytes:
    try:
        return root.extensions.get_extension_for_class(x509.SubjectKeyIdentifier).value.digest
    except x509.ExtensionNotFound:
        return x509.SubjectKeyIdentifier.from_public_key(root.public_key()).digest


def _found(client: ssl.SSLContext, root: x509.Certificate, tmp: Path) -> int | None:
    signer = _EC if isinstance(root.public_key(), ec.EllipticCurvePublicKey) else _RSA
    leaf, key = _leaf(root.subject, signer, _key_id(root))
    return _handshake(client, [leaf], key, tmp)


def _roots() -> list[tuple[str, x509.Certificate]]:
    with warnings.catch_warnings():  # a few of certifi's roots have a serial number ≤ 0
        warnings.simplefilter("ignore", CryptographyDeprecationWarning)
        return [
            (path.name, x509.load_pem_x509_certificate(path.read_bytes())) for path in sorted(ROOTS.iterdir())
        ]


def test_the_directory_is_certifis_bundle_one_root_per_file() -> None:
    import certifi

    committed = {path.name: path.read_text(encoding="ascii") for path in ROOTS.iterdir()}
    assert committed == ca_roots.generate(), "run `make ca-roots`"
    bundle = Path(certifi.where()).read_text(encoding="ascii")
    assert len(committed) == len(ca_roots.pem_certificates(bundle)) >= 100


def test_openssl_finds_every_root_of_the_directory_under_its_name(tmp_path: Path) -> None:
    client = _client(ROOTS)
    outcomes = {name: _found(client, root, tmp_path) for name, root in _roots()}
    assert {name for name, code in outcomes.items() if code != SIGNATURE_FAILURE} == set()


def test_a_root_under_another_name_is_not_found(tmp_path: Path) -> None:
    """The control of the test above: the same handshake, the root's file misnamed."""
    name, root = _roots()[0]
    directory = tmp_path / "misnamed"
    directory.mkdir()
    (directory / f"{int(name.split('.')[0], 16) ^ 1:08x}.0").write_bytes(_pem(root))
    assert _found(_client(directory), root, tmp_path) == ISSUER_NOT_FOUND
    (directory / name).write_bytes(_pem(root))
    assert _found(_client(directory), root, tmp_path) == SIGNATURE_FAILURE


@pytest.mark.parametrize(
    "attributes",
    [
        [[("O", "Ville de Lyon", _ASN1Type.PrintableString)], [("CN", "QFBRIDGE  Test   Root", None)]],
        [[("CN", "  Collectivité d'Île-de-France  ", _ASN1Type.UTF8String)]],
        [[("CN", "Mairie DE Nîmes", _ASN1Type.BMPString)]],
        [[("O", "CAISSE\tNationale", _ASN1Type.T61String)], [("CN", "Racine", None)]],
        [[("C", "FR", _ASN1Type.PrintableString), ("O", "Multi Valued", _ASN1Type.UTF8String)]],
        [[("CN", "Mail Root", None)], [("E", "PKI@Example.FR", _ASN1Type.IA5String)]],
        [[("CN", "Universal Wide", _ASN1Type.UniversalString)]],
    ],
    ids=["printable", "utf8-accents", "bmp", "t61", "multi-valued-rdn", "ia5-email", "universal"],
)
def test_the_hash_is_openssls_for_names_of_every_string_type(
    attributes: list[list[tuple[str, str, _ASN1Type | None]]], tmp_path: Path
) -> None:
    oids = {"C": NameOID.COUNTRY_NAME, "O": NameOID.ORGANIZATION_NAME, "CN": NameOID.COMMON_NAME}
    oids["E"] = NameOID.EMAIL_ADDRESS
    name = x509.Name(
        [
            x509.RelativeDistinguishedName(
                [
                    x509.NameAttribute(oids[key], value, _type=kind)
                    if kind
                    else x509.NameAttribute(oids[key], value)
                    for key, value, kind in rdn
                ]
            )
            for rdn in attributes
        ]
    )
    root_key = _RSA
    root = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(root_key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(NOW - dt.timedelta(days=1))
        .not_valid_after(NOW + dt.timedelta(days=365))
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .add_extension(
            x509.KeyUsage(False, False, False, False, False, True, True, False, False), critical=True
        )
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(root_key.public_key()), critical=False)
        .sign(root_key, hashes.SHA256())
    )
    directory = tmp_path / "roots"
    directory.mkdir()
    der_subject = ca_roots.subject(root.public_bytes(serialization.Encoding.DER))
    assert der_subject == name.public_bytes()
    (directory / f"{ca_roots.subject_hash(der_subject)}.0").write_bytes(_pem(root))
    leaf, key = _leaf(name, root_key, _key_id(root))
    assert _handshake(_client(directory), [leaf], key, tmp_path) is None


def test_the_shared_context_reads_the_roots_when_a_chain_names_one(tmp_path: Path) -> None:
    context = tls_context()
    assert context.cert_store_stats()["x509_ca"] == 0  # nothing parsed up front
    _, root = _roots()[0]
    assert _found(context, root, tmp_path) == SIGNATURE_FAILURE
    assert context.cert_store_stats()["x509_ca"] >= 1


def test_ssl_cert_file_replaces_the_roots_as_with_httpx(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    _, root = _roots()[0]
    (tmp_path / "bundle.pem").write_bytes(_pem(root))
    monkeypatch.setenv("SSL_CERT_FILE", str(tmp_path / "bundle.pem"))
    assert tls_context().cert_store_stats()["x509_ca"] == 1
