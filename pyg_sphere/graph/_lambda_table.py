"""Placeholder until scripts/make_lambda_table.py writes the table."""

FULL_SPHERE_LAMBDA_MAX = {}
