"""The processing lease fences an attempt's writes: an attempt that outlived its lease — another
delivery took the case after it expired — writes nothing more (``LeaseLost``), and cannot give up
the lease the other delivery now holds."""

from __future__ import annotations

import datetime as dt
from typing import Any

import pytest

from qfbridge.store.dossiers import DossierRepository, LeaseLost, Step

T0 = dt.datetime(2026, 12, 7, 9, 0, tzinfo=dt.UTC)
LEASE_S = 30


def _two_holders(repo: DossierRepository) -> tuple[Any, Any]:
    first = repo.start("case-fence", "21750001600019", "n-1", T0, LEASE_S)
    later = T0 + dt.timedelta(seconds=LEASE_S + 1)  # the first one's lease has expired
    second = repo.start("case-fence", "21750001600019", "n-2", later, LEASE_S)
    return first, second


def test_a_write_under_a_lease_another_delivery_took_over_is_refused_and_changes_nothing(
    local_runtime: Any,
) -> None:
    repo = DossierRepository(local_runtime.environment["DOSSIERS_TABLE"])
    first, second = _two_holders(repo)
    with pytest.raises(LeaseLost):
        repo.write(first, [Step.VERIFIED], T0, lease=first.lease_until)
    stored = repo.get("case-fence")
    assert stored is not None and not stored.done(Step.VERIFIED)
    assert stored.lease_until == second.lease_until
    # the holder's own write goes through
    written = repo.write(second, [Step.VERIFIED], T0, lease=second.lease_until, release=True)
    assert written.done(Step.VERIFIED) and written.lease_until is None


def test_a_stale_attempt_cannot_give_up_the_lease_another_delivery_holds(local_runtime: Any) -> None:
    repo = DossierRepository(local_runtime.environment["DOSSIERS_TABLE"])
    first, second = _two_holders(repo)
    repo.release("case-fence", lease=first.lease_until)
    stored = repo.get("case-fence")
    assert stored is not None and stored.lease_until == second.lease_until
    repo.release("case-fence", lease=second.lease_until)
    stored = repo.get("case-fence")
    assert stored is not None and stored.lease_until is None
