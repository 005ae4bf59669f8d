"""Pydantic models and pure rules of the domain (no AWS, no HTTP)."""
