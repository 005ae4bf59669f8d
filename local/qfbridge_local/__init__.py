"""Laptop runtime for qfbridge (never imported by Lambda code)."""
