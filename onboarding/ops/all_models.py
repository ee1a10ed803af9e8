"""Imports every package's tables, so string foreign keys (``"accounts.id"``) resolve whatever a
process imported first. Entry points (app, CLI, Alembic) import this module. It also imports
``vehicles.incar.revocation`` (no tables): its import subscribes the in-car grants to link and sign-out
events, which every process that ends links or sessions needs."""

from __future__ import annotations

import notifications.models
import onboarding.activation.models
import onboarding.api.models
import onboarding.identity.models
import vehicles.incar.models
import vehicles.incar.revocation
import vehicles.models

TABLE_MODULES = (
    notifications.models,
    onboarding.identity.models,
    onboarding.activation.models,
    onboarding.api.models,
    vehicles.models,
    vehicles.incar.models,
)
