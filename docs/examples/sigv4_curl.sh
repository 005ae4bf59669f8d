#!/usr/bin/env bash
# Call the editor API (qfbridge) using curl's SigV4 signing (curl >= 7.75).
#   QFBRIDGE_API_URL=https://abc123.execute-api.eu-west-3.amazonaws.com/prod \
#   AWS_ACCESS_KEY_ID=… AWS_SECRET_ACCESS_KEY=… [AWS_SESSION_TOKEN=…] AWS_REGION=eu-west-3 \
#   bash sigv4_curl.sh 21040107100019
set -euo pipefail
siret="$1"
sign=(--aws-sigv4 "aws:amz:${AWS_REGION}:execute-api" --user "${AWS_ACCESS_KEY_ID}:${AWS_SECRET_ACCESS_KEY}")
if [ -n "${AWS_SESSION_TOKEN:-}" ]; then  # temporary credentials (a role, SSO) carry a session token
  sign+=(-H "X-Amz-Security-Token: ${AWS_SESSION_TOKEN}")
fi

# Register the collectivité (201 created, 200 updated)
curl --fail-with-body --silent --show-error "${sign[@]}" \
  -X PUT "${QFBRIDGE_API_URL}/v1/tenants/${siret}" \
  -H 'Content-Type: application/json' -H 'X-Agent-Id: agent-42' \
  --data '{"name": "Commune de Digne-les-Bains", "cog": "04070", "redirect_hosts": ["portail.example.fr"]}'
echo

# Record a prolonged API Particulier token: a JSON merge patch keeps the other settings
curl --fail-with-body --silent --show-error "${sign[@]}" \
  -X PATCH "${QFBRIDGE_API_URL}/v1/tenants/${siret}" \
  -H 'Content-Type: application/merge-patch+json' \
  --data '{"token_expires_on": "2027-06-30"}'
echo

# The dossiers waiting for an agent
curl --fail-with-body --silent --show-error "${sign[@]}" \
  "${QFBRIDGE_API_URL}/v1/tenants/${siret}/dossiers?status=needs_review&limit=10"
echo
