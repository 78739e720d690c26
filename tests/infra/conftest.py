"""pytest fixtures of the infrastructure tests; they live in gdfwd_infra.py (importable by name from tests)."""

from gdfwd_infra import moto_endpoint, new_account  # noqa: F401  (pytest collects fixtures by name)
