"""Powertools Logger, Metrics and Tracer, created once per process (cold start) and shared.

Service name and namespace come from the standard Powertools environment variables set in the
template's Globals. Log lines carry technical identifiers only (SIRET, case id, reference,
user id) — never identities, QF values, secrets or tokens.
"""

from __future__ import annotations

from aws_lambda_powertools import Logger, Metrics, Tracer

logger = Logger()
metrics = Metrics()
tracer = Tracer()
