"""Imports every package's tables, so string foreign keys (``"accounts.id"``) resolve whatever a
process imported first. Entry points (app, CLI, Alembic) import this module."""

from __future__ import annotations

import notifications.models
import onboarding.activation.models
import onboarding.api.models
import onboarding.identity.models
import vehicles.models

TABLE_MODULES = (
    notifications.models,
    onboarding.identity.models,
    onboarding.activation.models,
    onboarding.api.models,
    vehicles.models,
)
