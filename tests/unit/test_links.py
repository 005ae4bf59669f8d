"""Form links: signed external_ids, form URL, redirect allowlist, QR codes."""

from __future__ import annotations

import re
import struct
import xml.etree.ElementTree as ET
from urllib.parse import parse_qs, urlsplit

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from qfbridge.domain.errors import LinkError, ValidationError
from qfbridge.links import (
    DEFAULT_FORM_BASE_URL,
    BadSignature,
    InvalidFormUrl,
    InvalidTenant,
    KeyConfigurationError,
    LinkSigner,
    MalformedLink,
    RedirectNotAllowed,
    UnknownKey,
    build_form_url,
    qr_png,
    qr_svg,
    validate_redirect_uri,
)

SIRET = "21730132400018"
OTHER_SIRET = "21040107100019"
KEY_1 = bytes(range(32))
KEY_2 = bytes(range(100, 132))
ALPHABET = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_"


@pytest.fixture
def signer() -> LinkSigner:
    return LinkSigner({"k1": KEY_1}, active_kid="k1")


# --- signing -----------------------------------------------------------------------------------


def test_issued_external_id_is_short_url_safe_and_names_its_key(signer: LinkSigner) -> None:
    issued = signer.issue(SIRET)
    assert re.fullmatch(r"qfb1\.k1\.[A-Za-z0-9_-]{22}\.[A-Za-z0-9_-]{16}", issued.external_id)
    assert len(issued.external_id) <= 52
    assert issued.external_id.split(".")[2] == issued.link_id
    assert issued.kid == "k1"


def test_issued_ids_are_unique(signer: LinkSigner) -> None:
    assert len({signer.issue(SIRET).link_id for _ in range(500)}) == 500


def test_round_trip_gives_back_the_link_id(signer: LinkSigner) -> None:
    issued = signer.issue(SIRET)
    verified = signer.verify(issued.external_id, SIRET)
    assert verified.link_id == issued.link_id and verified.kid == "k1"


def test_tampering_any_character_fails_with_a_typed_error(signer: LinkSigner) -> None:
    external_id = signer.issue(SIRET).external_id
    for index, char in enumerate(external_id):
        replacement = "A" if char != "A" else "B"
        tampered = external_id[:index] + replacement + external_id[index + 1 :]
        with pytest.raises(LinkError) as caught:
            signer.verify(tampered, SIRET)
        assert caught.value.code in {"malformed", "unknown_key", "bad_signature"}


def test_tampering_the_nonce_or_mac_is_a_bad_signature(signer: LinkSigner) -> None:
    external_id = signer.issue(SIRET).external_id
    prefix, kid, link_id, mac = external_id.split(".")
    other_link = ("B" if link_id[0] != "B" else "C") + link_id[1:]
    other_mac = mac[:-1] + ("A" if mac[-1] != "A" else "B")
    for forged in (f"{prefix}.{kid}.{other_link}.{mac}", f"{prefix}.{kid}.{link_id}.{other_mac}"):
        with pytest.raises(BadSignature) as caught:
            signer.verify(forged, SIRET)
        assert caught.value.code == "bad_signature"


def test_an_id_issued_for_another_collectivite_does_not_verify(signer: LinkSigner) -> None:
    foreign = signer.issue(OTHER_SIRET).external_id
    with pytest.raises(BadSignature):
        signer.verify(foreign, SIRET)


def test_an_unknown_key_id_is_reported_as_such(signer: LinkSigner) -> None:
    other = LinkSigner({"k9": KEY_2}, active_kid="k9").issue(SIRET).external_id
    with pytest.raises(UnknownKey) as caught:
        signer.verify(other, SIRET)
    assert caught.value.code == "unknown_key"


def test_same_key_id_with_another_secret_fails_the_signature(signer: LinkSigner) -> None:
    impostor = LinkSigner({"k1": KEY_2}, active_kid="k1").issue(SIRET).external_id
    with pytest.raises(BadSignature):
        signer.verify(impostor, SIRET)


def test_rotation_issues_with_the_new_key_and_still_verifies_the_old_one(signer: LinkSigner) -> None:
    # Given a link issued before the rotation
    old = signer.issue(SIRET)
    # When the new key becomes active (old one still known)
    rotated = LinkSigner({"k1": KEY_1, "k2": KEY_2}, active_kid="k2")
    new = rotated.issue(SIRET)
    # Then new links use k2 and both verify
    assert new.kid == "k2" and new.external_id.startswith("qfb1.k2.")
    assert rotated.verify(old.external_id, SIRET).kid == "k1"
    assert rotated.verify(new.external_id, SIRET).kid == "k2"
    # And once k1 is retired its links are unknown
    with pytest.raises(UnknownKey):
        LinkSigner({"k2": KEY_2}, active_kid="k2").verify(old.external_id, SIRET)


@pytest.mark.parametrize(
    "value",
    [
        "",
        "qfb1",
        "qfb2.k1.AAAAAAAAAAAAAAAAAAAAAA.AAAAAAAAAAAAAAAA",
        "qfb1.K1.AAAAAAAAAAAAAAAAAAAAAA.AAAAAAAAAAAAAAAA",  # upper-case kid
        "qfb1.k1.AAAAAAAAAAAAAAAAAAAAA.AAAAAAAAAAAAAAAA",  # short nonce
        "qfb1.k1.AAAAAAAAAAAAAAAAAAAAAA.AAAAAAAAAAAAAAA=",  # padding
        "qfb1.k1.AAAAAAAAAAAAAAAAAAAAAA.AAAAAAAAAAAAAAAA\n",
        " qfb1.k1.AAAAAAAAAAAAAAAAAAAAAA.AAAAAAAAAAAAAAAA",
        "qfb1.k1.AAAAAAAAAAAAAAAAAAAAA\u00c9.AAAAAAAAAAAAAAAA",
        "12345",  # a raw internal id
        "x" * 10_000,
    ],
)
def test_malformed_values_are_rejected_before_any_crypto(signer: LinkSigner, value: str) -> None:
    with pytest.raises(MalformedLink) as caught:
        signer.verify(value, SIRET)
    assert caught.value.code == "malformed"


def test_non_string_external_id_is_malformed(signer: LinkSigner) -> None:
    for value in (None, 42, b"qfb1", ["qfb1"]):
        with pytest.raises(MalformedLink):
            signer.verify(value, SIRET)


@settings(max_examples=500, derandomize=True, deadline=None)
@given(value=st.one_of(st.text(max_size=80), st.text(alphabet=ALPHABET + ".", max_size=60)))
def test_fuzzed_external_ids_only_ever_raise_link_errors(value: str) -> None:
    signer = LinkSigner({"k1": KEY_1, "a": KEY_2}, active_kid="k1")
    with pytest.raises(LinkError):
        signer.verify(value, SIRET)


@settings(max_examples=300, derandomize=True, deadline=None)
@given(
    kid=st.sampled_from(["k1", "a", "zz"]),
    link_id=st.text(alphabet=ALPHABET, min_size=22, max_size=22),
    mac=st.text(alphabet=ALPHABET, min_size=16, max_size=16),
)
def test_well_shaped_forgeries_fail_the_signature_or_the_key(kid: str, link_id: str, mac: str) -> None:
    signer = LinkSigner({"k1": KEY_1, "a": KEY_2}, active_kid="k1")
    with pytest.raises((BadSignature, UnknownKey)):
        signer.verify(f"qfb1.{kid}.{link_id}.{mac}", SIRET)


@pytest.mark.parametrize(
    ("keys", "active"),
    [
        ({}, "k1"),
        ({"k1": b"sekret-value"}, "k1"),
        ({"K1": KEY_1}, "K1"),
        ({"toolongkid": KEY_1}, "toolongkid"),
        ({"k1": KEY_1}, "k2"),
    ],
)
def test_unusable_key_configuration_is_refused(keys: dict[str, bytes], active: str) -> None:
    with pytest.raises(KeyConfigurationError) as caught:
        LinkSigner(keys, active_kid=active)
    assert caught.value.code == "key_config"
    assert "sekret" not in caught.value.message  # the secret never appears in a message


@pytest.mark.parametrize("siret", ["", "2173013240001", "2173013240001X", "217301324000180"])
def test_signer_refuses_a_malformed_tenant_siret(signer: LinkSigner, siret: str) -> None:
    with pytest.raises(InvalidTenant):
        signer.issue(siret)
    with pytest.raises(InvalidTenant):
        signer.verify(signer.issue(SIRET).external_id, siret)


# --- form URL ----------------------------------------------------------------------------------


def test_form_url_carries_siret_external_id_and_encoded_redirect(signer: LinkSigner) -> None:
    external_id = signer.issue(SIRET).external_id
    redirect = "https://espace-famille.mairie.fr/retour?onglet=qf&x=a b&y=é#fin"
    url = build_form_url(DEFAULT_FORM_BASE_URL, SIRET, external_id, redirect)
    parts = urlsplit(url)
    assert (parts.scheme, parts.netloc, parts.path) == (
        "https",
        "quotient-familial.numerique.gouv.fr",
        f"/collectivites/{SIRET}",
    )
    assert parse_qs(parts.query) == {"external_id": [external_id], "redirect_uri": [redirect]}
    assert "#" not in url and " " not in url and "&x=" not in url


def test_form_url_without_parameters_is_the_public_page() -> None:
    assert build_form_url(DEFAULT_FORM_BASE_URL + "/", SIRET, None, None) == (
        f"https://quotient-familial.numerique.gouv.fr/collectivites/{SIRET}"
    )


def test_form_url_base_is_configurable_for_a_local_sandbox() -> None:
    url = build_form_url("http://127.0.0.1:8765/form", SIRET, "qfb1.k1.x.y", None)
    assert url == f"http://127.0.0.1:8765/form/collectivites/{SIRET}?external_id=qfb1.k1.x.y"


@pytest.mark.parametrize(
    "base",
    [
        "http://quotient-familial.numerique.gouv.fr",
        "ftp://x.fr",
        "https://u:p@x.fr",
        "https://x.fr?a=1",
        "nope",
    ],
)
def test_form_url_refuses_unsafe_bases(base: str) -> None:
    with pytest.raises(InvalidFormUrl):
        build_form_url(base, SIRET, None, None)


def test_form_url_refuses_a_bad_siret_and_checks_the_redirect_when_asked() -> None:
    with pytest.raises(InvalidFormUrl):
        build_form_url(DEFAULT_FORM_BASE_URL, "123", None, None)
    with pytest.raises(RedirectNotAllowed):
        build_form_url(
            DEFAULT_FORM_BASE_URL, SIRET, None, "https://evil.fr/", allowed_redirect_hosts=["mairie.fr"]
        )


# --- redirect allowlist ------------------------------------------------------------------------

ALLOWED = ["espace-famille.mairie.fr", "Portail.Ville-Exemple.FR"]


@pytest.mark.parametrize(
    ("uri", "normalised"),
    [
        ("https://espace-famille.mairie.fr/", "https://espace-famille.mairie.fr/"),
        ("https://espace-famille.mairie.fr", "https://espace-famille.mairie.fr"),
        ("HTTPS://ESPACE-FAMILLE.MAIRIE.FR/Retour?a=1#x", "https://espace-famille.mairie.fr/Retour?a=1#x"),
        ("https://portail.ville-exemple.fr/qf/retour", "https://portail.ville-exemple.fr/qf/retour"),
    ],
)
def test_redirect_on_a_registered_https_host_is_accepted(uri: str, normalised: str) -> None:
    assert validate_redirect_uri(uri, ALLOWED) == normalised


@pytest.mark.parametrize(
    ("uri", "code"),
    [
        ("http://espace-famille.mairie.fr/", "redirect_scheme"),
        ("javascript:alert(1)", "redirect_scheme"),
        ("//espace-famille.mairie.fr/", "redirect_scheme"),
        ("https://evil.fr/", "redirect_not_allowed"),
        ("https://sub.espace-famille.mairie.fr/", "redirect_not_allowed"),
        ("https://mairie.fr/", "redirect_not_allowed"),
        ("https://espace-famille.mairie.fr.evil.fr/", "redirect_not_allowed"),
        ("https://espace-famille.mairie.fr@evil.fr/", "redirect_userinfo"),
        ("https://user:pw@espace-famille.mairie.fr/", "redirect_userinfo"),
        ("https://espace-famille.mairie.fr:443/", "redirect_port"),
        ("https://espace-famille.mairie.fr:8443/", "redirect_port"),
        ("https://espace-famille.mairie.fr\\@evil.fr/", "redirect_invalid"),
        ("https:\\\\evil.fr", "redirect_invalid"),
        ("https:/espace-famille.mairie.fr/", "redirect_invalid"),
        ("https:///evil.fr", "redirect_host_invalid"),
        ("https://espace-famille.mairie.fr//evil.fr", "redirect_invalid"),
        ("https://espace-famille.mairie.fr%2F@evil.fr", "redirect_userinfo"),
        ("https://evil.fr%2F.espace-famille.mairie.fr/", "redirect_host_invalid"),
        ("https://espace-famille.mairie.fr%00.evil.fr/", "redirect_host_invalid"),
        ("https://espace-famille.mairie.fr./", "redirect_host_invalid"),
        ("https://espace-famille.mаirie.fr/", "redirect_invalid"),  # Cyrillic "а"
        ("https://xn--espace-famille-mirie-xyz.fr/", "redirect_not_allowed"),
        ("https://[::1]/", "redirect_host_invalid"),
        ("https://espace-famille.mairie.fr /", "redirect_invalid"),
        ("https://espace-famille.mairie.fr/\r\nSet-Cookie:x", "redirect_invalid"),
        ("", "redirect_invalid"),
        ("https://espace-famille.mairie.fr/" + "a" * 3000, "redirect_invalid"),
    ],
)
def test_redirect_tricks_are_refused_with_a_code(uri: str, code: str) -> None:
    with pytest.raises(RedirectNotAllowed) as caught:
        validate_redirect_uri(uri, ALLOWED)
    assert caught.value.code == code
    assert "evil" not in caught.value.message  # the URI is never echoed


def test_an_allowlist_entry_that_is_not_a_host_name_is_refused() -> None:
    with pytest.raises(RedirectNotAllowed) as caught:
        validate_redirect_uri("https://espace-famille.mairie.fr/", ["https://espace-famille.mairie.fr"])
    assert caught.value.code == "redirect_host_invalid"


@settings(max_examples=300, derandomize=True, deadline=None)
@given(uri=st.text(max_size=120))
def test_fuzzed_redirects_are_either_on_an_allowed_host_or_refused(uri: str) -> None:
    try:
        accepted = validate_redirect_uri(uri, ALLOWED)
    except RedirectNotAllowed:
        return
    assert urlsplit(accepted).hostname in {"espace-famille.mairie.fr", "portail.ville-exemple.fr"}


# --- QR codes ----------------------------------------------------------------------------------

FORM_URL = (
    f"https://quotient-familial.numerique.gouv.fr/collectivites/{SIRET}"
    f"?external_id=qfb1.k1.{'A' * 22}.{'B' * 16}"
)


def test_png_qr_code_is_a_square_png_that_grows_with_the_scale() -> None:
    small, large = qr_png(FORM_URL, scale=2), qr_png(FORM_URL, scale=8)
    for image in (small, large):
        assert image[:8] == b"\x89PNG\r\n\x1a\n"
        width, height = struct.unpack(">II", image[16:24])
        assert width == height
    assert struct.unpack(">I", large[16:20])[0] == 4 * struct.unpack(">I", small[16:20])[0]


def test_svg_qr_code_is_well_formed_svg() -> None:
    root = ET.fromstring(qr_svg(FORM_URL))
    assert root.tag == "{http://www.w3.org/2000/svg}svg"
    assert int(root.attrib["width"]) == int(root.attrib["height"]) > 0


def test_qr_codes_of_different_urls_differ() -> None:
    assert qr_svg(FORM_URL) != qr_svg(FORM_URL.replace("AAAA", "AAAB"))


@pytest.mark.parametrize("content", ["", "x" * 3000])
def test_qr_code_refuses_empty_or_oversized_content(content: str) -> None:
    with pytest.raises(ValidationError):
        qr_png(content)


def test_qr_png_refuses_an_absurd_scale() -> None:
    with pytest.raises(ValidationError):
        qr_png(FORM_URL, scale=0)
