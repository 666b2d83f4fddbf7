"""The PostgreSQL server and per-test databases come from tests/conftest.py."""
