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

from qfbridge.tls import ROOTS, SHARED, roots_context, tls_context
from qfbridge_local import ca_roots

SIGNATURE_FAILURE = 7  # X509_V_ERR_CERT_SIGNATURE_FAILURE: the issuer was found
EXPIRED = 10  # X509_V_ERR_CERT_HAS_EXPIRED: the issuer was found, its validity is over
FOUND = {SIGNATURE_FAILURE, EXPIRED}
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


def _client(directory: Path) -> ssl.SSLContext:
    """A client trusting ``directory`` as qfbridge's context does; OpenSSL's strict checks of the
    roots themselves are off (a few of certifi's roots, one without a key identifier, fail them
    whatever their file's name)."""
    context = roots_context(directory)
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


def _certificates(path: Path) -> list[x509.Certificate]:
    with warnings.catch_warnings():  # a few of certifi's roots have a serial number ≤ 0
        warnings.simplefilter("ignore", CryptographyDeprecationWarning)
        return x509.load_pem_x509_certificates(path.read_bytes())


def _roots() -> list[tuple[str, x509.Certificate]]:
    return [(path.name, c) for path in sorted(ROOTS.iterdir()) for c in _certificates(path)]


def _root(name: x509.Name, key: rsa.RSAPrivateKey) -> x509.Certificate:
    return (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(NOW - dt.timedelta(days=1))
        .not_valid_after(NOW + dt.timedelta(days=365))
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .add_extension(
            x509.KeyUsage(False, False, False, False, False, True, True, False, False), critical=True
        )
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
        .sign(key, hashes.SHA256())
    )


def test_the_directory_is_certifis_bundle_one_root_per_file() -> None:
    import certifi

    committed = {path.name: path.read_text(encoding="ascii") for path in ROOTS.iterdir()}
    assert committed == ca_roots.generate(), "run `make ca-roots`"
    bundle = Path(certifi.where()).read_text(encoding="ascii")
    assert len(_roots()) == len(ca_roots.pem_certificates(bundle)) >= 100


def test_openssl_finds_every_root_of_the_directory_under_its_name(tmp_path: Path) -> None:
    client = _client(ROOTS)
    outcomes = {
        f"{name} {root.subject.rfc4514_string()}": _found(client, root, tmp_path) for name, root in _roots()
    }
    assert {name: code for name, code in outcomes.items() if code not in FOUND} == {}


def test_a_root_under_another_name_is_not_found(tmp_path: Path) -> None:
    """The control of the test above: the same handshake, the root's file misnamed."""
    name, root = _roots()[0]
    directory = tmp_path / "misnamed"
    directory.mkdir()
    (directory / f"{int(name.split('.')[0], 16) ^ 1:08x}.0").write_bytes(_pem(root))
    assert _found(_client(directory), root, tmp_path) == ISSUER_NOT_FOUND
    (directory / name).write_bytes(_pem(root))
    assert _found(_client(directory), root, tmp_path) == SIGNATURE_FAILURE


def test_roots_sharing_a_subject_are_loaded_up_front_and_each_verifies(tmp_path: Path) -> None:
    """OpenSSL reads a hash's files one at a time: a concurrent handshake could find the first in
    memory and never read the second. Roots sharing a subject hash go to one file loaded at once."""
    shared_name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "Autorite Deux Generations")])
    old_key, new_key = (rsa.generate_private_key(public_exponent=65537, key_size=2048) for _ in range(2))
    older, newer = _root(shared_name, old_key), _root(shared_name, new_key)
    alone = _root(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "Autorite Seule")]), _RSA)
    bundle = b"".join(_pem(c) for c in (older, alone, newer)).decode("ascii")
    files = ca_roots.generate(bundle)
    alone_hash = ca_roots.subject_hash(alone.subject.public_bytes())
    assert sorted(files) == sorted([f"{alone_hash}.0", SHARED])
    assert files[SHARED].count("BEGIN CERTIFICATE") == 2
    directory = tmp_path / "roots"
    directory.mkdir()
    for name, text in files.items():
        (directory / name).write_text(text, encoding="ascii")
    context = roots_context(directory)
    assert context.cert_store_stats()["x509_ca"] == 2  # the shared two, before any handshake
    for root, key in ((older, old_key), (newer, new_key), (alone, _RSA)):
        leaf, leaf_key = _leaf(root.subject, key, _key_id(root))
        assert _handshake(context, [leaf], leaf_key, tmp_path) is None


def _name(*rdns: list[tuple[x509.ObjectIdentifier, str, _ASN1Type | None]]) -> x509.Name:
    return x509.Name(
        [
            x509.RelativeDistinguishedName(
                [
                    x509.NameAttribute(oid, value, _type=kind) if kind else x509.NameAttribute(oid, value)
                    for oid, value, kind in rdn
                ]
            )
            for rdn in rdns
        ]
    )


CN, ORG, C, E = NameOID.COMMON_NAME, NameOID.ORGANIZATION_NAME, NameOID.COUNTRY_NAME, NameOID.EMAIL_ADDRESS
T = _ASN1Type


@pytest.mark.parametrize(
    "name",
    [
        _name([(ORG, "Ville de Lyon", T.PrintableString)], [(CN, "QFBRIDGE  Test   Root", None)]),
        _name([(CN, "  Collectivité d'Île-de-France  ", T.UTF8String)]),
        _name([(CN, "Mairie DE Nîmes", T.BMPString)]),
        _name([(ORG, "CAISSE\tNationale  D'Allocations", T.T61String)], [(CN, "Racine", None)]),
        _name([(C, "FR", T.PrintableString), (ORG, "Multi Valued", T.UTF8String)]),
        # Canonicalising reorders this set: "A" (PrintableString) sorts after "b" (UTF8String)
        # before, before it after.
        _name([(ORG, "A", T.PrintableString), (ORG, "b", T.UTF8String)]),
        _name([(CN, "Mail Root", None)], [(E, "PKI@Example.FR", T.IA5String)]),
        _name([(CN, "Universal Wide", T.UniversalString)]),
        _name([(ORG, " \t ", T.UTF8String)], [(CN, "Blank Organisation", None)]),
        _name([(ORG, "Direction Interministérielle du Numérique " * 4, T.UTF8String)], [(CN, "Long", None)]),
    ],
    ids=[
        "printable",
        "utf8-accents",
        "bmp",
        "t61",
        "multi-valued-rdn",
        "rdn-reordered",
        "ia5-email",
        "universal",
        "blank-value",
        "long-form-lengths",
    ],
)
def test_the_hash_is_openssls_for_names_of_every_string_type(name: x509.Name, tmp_path: Path) -> None:
    root = _root(name, _RSA)
    directory = tmp_path / "roots"
    directory.mkdir()
    der_subject = ca_roots.subject(root.public_bytes(serialization.Encoding.DER))
    assert der_subject == name.public_bytes()
    (directory / f"{ca_roots.subject_hash(der_subject)}.0").write_bytes(_pem(root))
    leaf, key = _leaf(name, _RSA, _key_id(root))
    assert _handshake(_client(directory), [leaf], key, tmp_path) is None


@pytest.mark.parametrize(
    "name",
    [
        bytes.fromhex("3080310b300906035504061302465200000000"),  # indefinite length
        bytes.fromhex("30023100"),  # an empty RDN
        bytes.fromhex("300d310b30090603550403" + "2c020c00"),  # a constructed UTF8String
        bytes.fromhex("300c310a300806035504030301ff"),  # a BIT STRING value
        bytes.fromhex("300d310b300906035504061302"),  # truncated
        bytes.fromhex("30810b310930070603550406"),  # a non-minimal length
    ],
    ids=["indefinite", "empty-rdn", "constructed-string", "bit-string", "truncated", "non-minimal"],
)
def test_a_name_the_reader_does_not_fully_understand_is_refused_not_hashed(name: bytes) -> None:
    with pytest.raises(ca_roots.NotDer):
        ca_roots.subject_hash(name)


def test_the_shared_context_reads_the_roots_when_a_chain_names_one(tmp_path: Path) -> None:
    context = tls_context()
    assert context.cert_store_stats()["x509_ca"] == 0  # nothing parsed up front
    [isrg] = [
        root
        for _, root in _roots()
        if root.subject.rfc4514_string() == "CN=ISRG Root X1,O=Internet Security Research Group,C=US"
    ]
    assert _found(context, isrg, tmp_path) == SIGNATURE_FAILURE
    assert context.cert_store_stats()["x509_ca"] == 1


def test_a_missing_roots_directory_fails_when_the_context_is_built(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError):
        roots_context(tmp_path)


def test_ssl_cert_file_or_dir_replace_the_roots_as_with_httpx(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    _, root = _roots()[0]
    (tmp_path / "bundle.pem").write_bytes(_pem(root))
    monkeypatch.setenv("SSL_CERT_FILE", str(tmp_path / "bundle.pem"))
    assert tls_context().cert_store_stats()["x509_ca"] == 1
    tls_context.cache_clear()
    monkeypatch.delenv("SSL_CERT_FILE")
    monkeypatch.setenv("SSL_CERT_DIR", str(tmp_path))  # no hashed name in it: nothing found there
    assert _found(tls_context(), root, tmp_path) == ISSUER_NOT_FOUND
