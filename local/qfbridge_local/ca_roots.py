"""The root certificates qfbridge's HTTPS clients trust, as a directory OpenSSL reads on demand.

A TLS context loaded from certifi's bundle (``cacert.pem``) parses its ~120 root certificates at
once: ~17 ms of CPU at the first HTTPS client of every execution environment that talks to HubEE or
API Particulier (docs/performance.md, cold request). The same certificates, one file each, named
after the hash of their subject as OpenSSL's ``c_rehash`` names them (``<hash>.0``), are read only
when a chain names one: ``qfbridge.tls.tls_context`` loads the directory (``capath``), not the bundle.
The certificates are certifi's (the version of the layer's lock), nothing added nor left out.

Roots whose subjects share a hash (two generations of one authority under one name, or a true
collision) go together into ``shared-subjects.pem`` instead, which the context loads up front: OpenSSL reads a
hash's files one at a time, and a concurrent handshake can find the first one in memory and never
look for the second (certifi has none today; Debian's bundle has such a pair).

tests/unit/test_ca_roots.py checks that the committed directory is what this module generates from
the installed certifi, that OpenSSL finds every root under its name, and that the hash is OpenSSL's
for names of every string type (``make ca-roots`` writes the directory).

The hash (OpenSSL's ``X509_NAME_hash``): the first four bytes, little-endian, of the SHA-1 of the
subject's canonical encoding — its relative distinguished names (SETs) concatenated without the
outer SEQUENCE, each text value re-encoded as a UTF8String with its ASCII letters lowercased, its
leading and trailing ASCII spaces dropped and each run of inner ones made a single space. The names
are read strictly (DER only): what this reader does not understand is refused, never hashed wrong.
"""

from __future__ import annotations

import base64
import hashlib
import re
import ssl
from pathlib import Path

from qfbridge.tls import ROOTS, SHARED

_PEM = re.compile(r"-----BEGIN CERTIFICATE-----\s*(.+?)\s*-----END CERTIFICATE-----", re.S)

# ASN.1 universal tags of the string types OpenSSL canonicalises (ASN1_MASK_CANON), with the
# encoding ASN1_STRING_to_UTF8 reads each with (the one-byte ones byte by byte, as Latin-1).
_TEXT = {
    0x0C: "utf-8",  # UTF8String
    0x13: "latin-1",  # PrintableString
    0x14: "latin-1",  # T61String (TeletexString)
    0x16: "latin-1",  # IA5String
    0x1A: "latin-1",  # VisibleString
    0x1C: "utf-32-be",  # UniversalString
    0x1E: "utf-16-be",  # BMPString
}
_NUMERIC = 0x12  # NumericString: a string type OpenSSL keeps as it is
_SPACE = b" \t\n\v\f\r"


class NotDer(ValueError):
    """A name this module cannot hash with certainty (not DER, or beyond what it reads)."""


def _read(data: bytes, offset: int) -> tuple[int, bytes, int]:
    """One DER element at ``offset``: (tag, content, offset after it). Low tag numbers and definite,
    minimal lengths only (DER's); anything else raises ``NotDer``."""
    if offset + 2 > len(data):
        raise NotDer("truncated element")
    tag = data[offset]
    if tag & 0x1F == 0x1F:
        raise NotDer("high tag number")
    length = data[offset + 1]
    offset += 2
    if length == 0x80:
        raise NotDer("indefinite length")
    if length & 0x80:
        count = length & 0x7F
        raw = data[offset : offset + count]
        if len(raw) != count or raw[0] == 0:
            raise NotDer("truncated or non-minimal length")
        length = int.from_bytes(raw, "big")
        if length < 0x80:
            raise NotDer("non-minimal length")
        offset += count
    if offset + length > len(data):
        raise NotDer("length beyond the data")
    return tag, data[offset : offset + length], offset + length


def _elements(content: bytes) -> list[tuple[int, bytes, bytes]]:
    """The DER elements ``content`` holds: (tag, content, the whole element's bytes) each."""
    result, offset = [], 0
    while offset < len(content):
        start = offset
        tag, value, offset = _read(content, offset)
        result.append((tag, value, content[start:offset]))
    return result


def _encode(tag: int, content: bytes) -> bytes:
    if len(content) < 0x80:
        return bytes([tag, len(content)]) + content
    size = len(content).to_bytes((len(content).bit_length() + 7) // 8, "big")
    return bytes([tag, 0x80 | len(size)]) + size + content


def _canonical_text(raw: bytes) -> bytes:
    out = bytearray()
    raw = raw.strip(_SPACE)
    index = 0
    while index < len(raw):
        byte = raw[index]
        if byte >= 0x80:
            out.append(byte)
            index += 1
        elif byte in _SPACE:
            out.append(0x20)
            while index < len(raw) and raw[index] in _SPACE:
                index += 1
        else:
            out.append(ord(chr(byte).lower()))
            index += 1
    return bytes(out)


def canonical_name(name: bytes) -> bytes:
    """The canonical encoding of a DER ``Name`` (a SEQUENCE of RDN SETs)."""
    tag, rdns, end = _read(name, 0)
    if tag != 0x30 or end != len(name):
        raise NotDer("not a DER Name")
    canonical = b""
    for rdn_tag, rdn, _ in _elements(rdns):
        if rdn_tag != 0x31 or not rdn:
            raise NotDer("not a relative distinguished name")
        attributes = []
        for attribute_tag, attribute, _ in _elements(rdn):
            parts = _elements(attribute)
            if attribute_tag != 0x30 or len(parts) != 2 or parts[0][0] != 0x06:
                raise NotDer("not an attribute")
            (_, _, oid), (value_tag, value, element) = parts
            if value_tag in _TEXT:
                text = value.decode(_TEXT[value_tag]).encode("utf-8")
                encoded_value = _encode(0x0C, _canonical_text(text))
            elif value_tag == _NUMERIC:  # not canonicalised: copied as it is
                encoded_value = element
            else:  # constructed, or a type OpenSSL would re-encode: not hashed here
                raise NotDer(f"attribute value of tag {value_tag:#x}")
            attributes.append(_encode(0x30, oid + encoded_value))
        canonical += _encode(0x31, b"".join(sorted(attributes)))  # DER sorts a SET OF
    return canonical


def subject_hash(name: bytes) -> str:
    """OpenSSL's ``X509_NAME_hash`` of a DER ``Name``, as ``c_rehash`` writes it (8 hex digits)."""
    digest = hashlib.sha1(canonical_name(name), usedforsecurity=False).digest()
    return f"{int.from_bytes(digest[:4], 'little'):08x}"


def subject(certificate: bytes) -> bytes:
    """The DER subject of a DER certificate (TBSCertificate's sixth field, after the version)."""
    _, certificate_content, _ = _read(certificate, 0)
    _, tbs, _ = _read(certificate_content, 0)
    fields = _elements(tbs)
    if fields[0][0] == 0xA0:  # [0] version
        fields = fields[1:]
    # serialNumber, signature, issuer, validity, subject
    return fields[4][2]


def pem_certificates(bundle: str) -> list[bytes]:
    return [base64.b64decode("".join(body.split())) for body in _PEM.findall(bundle)]


def generate(bundle: str | None = None) -> dict[str, str]:
    """File name → content of every file of the directory, from certifi's bundle (the installed one)."""
    if bundle is None:
        import certifi

        bundle = Path(certifi.where()).read_text(encoding="ascii")
    by_hash: dict[str, list[bytes]] = {}
    for certificate in pem_certificates(bundle):
        by_hash.setdefault(subject_hash(subject(certificate)), []).append(certificate)
    files = {}
    shared = []
    for name_hash, certificates in sorted(by_hash.items()):
        if len(certificates) == 1:
            files[f"{name_hash}.0"] = ssl.DER_cert_to_PEM_cert(certificates[0])
        else:
            shared += sorted(certificates, key=lambda c: hashlib.sha256(c).digest())
    if shared:
        files[SHARED] = "".join(ssl.DER_cert_to_PEM_cert(c) for c in shared)
    return files


def write(directory: Path = ROOTS) -> int:
    """Write the directory (and only it); returns how many certificates it holds."""
    files = generate()
    directory.mkdir(parents=True, exist_ok=True)
    for stale in directory.iterdir():
        if stale.name not in files:
            stale.unlink()
    for name, text in files.items():
        (directory / name).write_text(text, encoding="ascii")
    return sum(text.count("-----BEGIN CERTIFICATE-----") for text in files.values())


if __name__ == "__main__":
    print(f"{ROOTS.relative_to(ROOTS.parents[3])}: {write()} root certificates")
