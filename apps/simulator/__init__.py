"""Fulcrum's upstream simulator: a deterministic construction company served as HubSpot, QuickBooks Online
and Procore APIs on one port.  Standard library only; run with ``python -m apps.simulator``."""

from .faults import FaultPlan, FaultRule
from .generator import generate_company
from .planted import PLANTED, expected_matches
from .records import PROCORE_COMPANY_ID, REALM_ID, Company
from .server import SimulatorServer
from .state import DEFAULT_TOKENS

TOKENS = DEFAULT_TOKENS

__all__ = [
    "DEFAULT_TOKENS",
    "PLANTED",
    "PROCORE_COMPANY_ID",
    "REALM_ID",
    "TOKENS",
    "Company",
    "FaultPlan",
    "FaultRule",
    "SimulatorServer",
    "expected_matches",
    "generate_company",
]
