"""The counter poster: a printable A4 page with the collectivité's form URL and its QR code.

It carries the *public* form URL (no external_id): a usager who scans it at the counter is
reconciled on identity. Self-contained HTML (inline SVG, inline CSS, no script, no external
resource) so that it prints the same anywhere; the tenant's name is HTML-escaped.
"""

from __future__ import annotations

import html
from typing import Any

from aws_lambda_powertools.event_handler import Response
from aws_lambda_powertools.event_handler.api_gateway import Router

from qfbridge.api.dependencies import editor
from qfbridge.api.problems import errors
from qfbridge.api.schemas import SiretPath
from qfbridge.links.qr import qr_svg

router = Router()

_TEMPLATE = """<!DOCTYPE html>
<html lang="fr">
<head>
<meta charset="utf-8">
<title>Quotient familial — {name}</title>
<style>
  @page {{ size: A4 portrait; margin: 15mm; }}
  html, body {{ margin: 0; padding: 0; }}
  body {{ font-family: "Marianne", Arial, Helvetica, sans-serif; color: #161616; }}
  .page {{ width: 180mm; min-height: 262mm; margin: 0 auto; display: flex; flex-direction: column;
           align-items: center; text-align: center; }}
  h1 {{ font-size: 26pt; margin: 8mm 0 2mm; color: #000091; }}
  .collectivite {{ font-size: 16pt; margin: 0 0 8mm; }}
  .qr svg {{ width: 95mm; height: 95mm; }}
  ol {{ text-align: left; font-size: 14pt; line-height: 1.5; margin: 8mm 0; padding-left: 8mm; }}
  .url {{ font-family: "Courier New", monospace; font-size: 11pt; word-break: break-all; margin-top: 2mm; }}
  .note {{ font-size: 11pt; color: #3a3a3a; margin-top: auto; }}
</style>
</head>
<body>
<main class="page">
  <h1>Votre quotient familial en quelques clics</h1>
  <p class="collectivite">{name}</p>
  <div class="qr" role="img" aria-label="QR code du formulaire quotient familial">{qr}</div>
  <p class="url">{url}</p>
  <ol>
    <li>Scannez ce QR code avec l'appareil photo de votre téléphone.</li>
    <li>Connectez-vous avec FranceConnect.</li>
    <li>Vérifiez le quotient familial transmis par la CAF ou la MSA, puis confirmez.</li>
    <li>Conservez la référence du dossier affichée à la fin : elle permet au guichet de retrouver
        votre demande.</li>
  </ol>
  <p class="note">Votre quotient familial sera enregistré sur votre compte famille et mis à jour chaque mois,
    sans nouvelle démarche. Sans téléphone ? Le guichet peut vous aider à remplir le formulaire.</p>
</main>
</body>
</html>
"""


def poster_html(name: str, url: str) -> str:
    svg = qr_svg(url, scale=10, border=2).decode("utf-8")
    svg = svg[svg.index("<svg") :]  # inline: drop the XML declaration
    return _TEMPLATE.format(name=html.escape(name), url=html.escape(url), qr=svg)


@router.get(
    "/tenants/<siret>/poster",
    summary="Printable A4 poster for the counter (HTML)",
    tags=["tenants"],
    responses={200: {"description": "The poster", "content": {"text/html": {"schema": {"type": "string"}}}}}
    | errors(400, 404),
)
def get_poster(siret: SiretPath) -> Response[Any]:
    tenant, url = editor().tenant_form_url(siret)
    return Response(200, "text/html; charset=utf-8", poster_html(tenant.name, url))
