"""HubEE's case status table, stated once: which status an SI may post from which status.

HubEE's functional specification lists, for each status, the statuses it may be reached from, and
the hub answers 400 to any other transition. Clients commonly skip the intermediate intake
statuses forward (``HUBEE_NOTIFIED`` → ``SI_RECEIVED``); going back, repeating a final status, or
reaching a status from one it does not list is refused. ``SI_INTG_ERROR`` is never reachable
straight from ``HUBEE_NOTIFIED``. Only the form sets ``CLOSED``.

The form acts on ``SENT``, ``SI_RECEIVED``, ``IN_PROGRESS``, ``DONE`` and ``REFUSED`` only: it
acknowledges ``SI_INTG_ERROR`` and ``ADD_AWAITING`` but the usager never learns of them and the case
is never closed. So qfbridge never posts them: an unusable dossier goes ``SI_RECEIVED`` →
``REFUSED`` with a message asking the usager to submit again (see ``qfbridge.services.reconcile``).
"""

from __future__ import annotations

from qfbridge.hubee.models import CaseStatus

S = CaseStatus

ALLOWED_FROM: dict[str, frozenset[str]] = {
    S.SENT: frozenset({S.HUBEE_NOTIFIED}),
    S.SI_RECEIVED: frozenset({S.SENT}),
    S.IN_PROGRESS: frozenset({S.SI_RECEIVED}),
    S.ADD_AWAITING: frozenset({S.IN_PROGRESS}),
    S.DONE: frozenset({S.SI_RECEIVED, S.IN_PROGRESS, S.ADD_AWAITING}),
    S.REFUSED: frozenset({S.SI_RECEIVED, S.IN_PROGRESS, S.ADD_AWAITING}),
    S.SI_INTG_ERROR: frozenset({S.SI_RECEIVED, S.IN_PROGRESS, S.ADD_AWAITING, S.DONE}),
    S.CLOSED: frozenset({S.SI_RECEIVED, S.IN_PROGRESS, S.ADD_AWAITING, S.DONE, S.REFUSED}),
}
"""The documented table: status → the statuses it may be reached from."""

INTAKE_CHAIN: tuple[str, ...] = (S.HUBEE_NOTIFIED, S.SENT, S.SI_RECEIVED, S.IN_PROGRESS)
"""The intake statuses an SI may skip forward along (``HUBEE_NOTIFIED`` → ``SI_RECEIVED``)."""

SET_BY_SI = frozenset(ALLOWED_FROM) - {S.CLOSED}
FINAL = frozenset({S.DONE, S.REFUSED, S.CLOSED})
USAGER_VISIBLE = frozenset({S.SENT, S.SI_RECEIVED, S.IN_PROGRESS, S.DONE, S.REFUSED})
"""The statuses the form mirrors to the usager; the others never reach them."""


def transition_allowed(current: str | None, new: str) -> bool:
    """Whether HubEE accepts ``current`` → ``new`` from an SI (a repeated status is not a transition)."""
    current = current or S.HUBEE_NOTIFIED
    if new not in SET_BY_SI:
        return False
    if current in ALLOWED_FROM[new]:
        return True
    if new in INTAKE_CHAIN and current in INTAKE_CHAIN:
        return INTAKE_CHAIN.index(current) < INTAKE_CHAIN.index(new)
    return False


def path_to(current: str | None, target: str) -> list[str] | None:
    """The statuses to post, in order, to bring a case from ``current`` to ``target``.

    ``[]`` when the case already is at ``target``; ``None`` when the table allows no way there
    (e.g. the case is ``REFUSED`` and ``target`` is ``DONE``, or it was closed). Prefers the
    fewest posts: a direct transition, else through ``SI_RECEIVED`` (the status that says the
    dossier arrived).
    """
    current = current or S.HUBEE_NOTIFIED
    if current == target:
        return []
    if transition_allowed(current, target):
        return [target]
    via = S.SI_RECEIVED
    if current != via and transition_allowed(current, via) and transition_allowed(via, target):
        return [via, target]
    return None


def reached(current: str | None, target: str) -> bool:
    """Whether a case at ``current`` is at ``target`` or beyond it (nothing left to post for it)."""
    current = current or S.HUBEE_NOTIFIED
    if current == target:
        return True
    if current in FINAL:
        return True
    if target in INTAKE_CHAIN and current in INTAKE_CHAIN:
        return INTAKE_CHAIN.index(current) >= INTAKE_CHAIN.index(target)
    return target in INTAKE_CHAIN and current not in INTAKE_CHAIN
