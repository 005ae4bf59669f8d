"""The operator's answer to a status HubEE refused: post it again, once, after a look.

When HubEE answers 4xx to a status post, reconcile records the refusal on the dossier
(``status_refused``), raises the ``HubeeStatusRefused`` alarm and posts nothing more for that case.
Once the cause is understood (docs/operations.md, "HubEE refused a status"), the operator clears the
refusal and queues a ``status_retry`` message: reconcile re-reads the case and posts the statuses
HubEE's table allows towards the dossier's outcome (DONE when linked, REFUSED when rejected,
SI_RECEIVED while in review). A second refusal is recorded again: nothing loops.
"""

from __future__ import annotations

from qfbridge.clock import Clock, utc_now
from qfbridge.domain.errors import ConflictError
from qfbridge.messages import StatusRetryMessage
from qfbridge.services.ports import DossierQueue
from qfbridge.store.dossiers import DossierRecord, DossierRepository


def retry_refused_status(
    dossiers: DossierRepository,
    queue: DossierQueue,
    tenant_siret: str,
    reference: str,
    actor: str,
    clock: Clock = utc_now,
) -> DossierRecord:
    """Clear the dossier's recorded refusal and queue one ``status_retry`` (``NotFoundError``, ``ConflictError``)."""
    record = dossiers.require_for_tenant(tenant_siret, reference)
    cleared = dossiers.clear_status_refusal(record.case_id, clock(), actor)
    if cleared is None:
        raise ConflictError("HubEE refused no status of this dossier.", code="no_status_refused")
    queue.send(StatusRetryMessage(case_id=record.case_id, credential_holder=record.tenant_siret))
    return cleared
