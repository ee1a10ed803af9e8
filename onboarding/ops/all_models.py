"""Imports every package's tables, so string foreign keys (``"accounts.id"``) resolve whatever a
process imported first. Entry points (app, CLI, Alembic) import this module. It also imports
``vehicles.incar.revocation``, ``vehicles.charging.contracts`` and ``vehicles.charging.ocpi_push``: their
imports subscribe the in-car grants and the charging contracts to link ends and sign-outs, and the OCPI
push to card changes (and register its outbox channel), which every process that ends links, sessions or
cards needs."""

from __future__ import annotations

import notifications.models
import onboarding.activation.models
import onboarding.api.models
import onboarding.identity.models
import onboarding.portal.models
import vehicles.charging.contracts
import vehicles.charging.models
import vehicles.charging.ocpi_push
import vehicles.incar.models
import vehicles.incar.revocation
import vehicles.models

TABLE_MODULES = (
    notifications.models,
    onboarding.identity.models,
    onboarding.activation.models,
    onboarding.api.models,
    onboarding.portal.models,
    vehicles.models,
    vehicles.incar.models,
    vehicles.charging.models,
)
