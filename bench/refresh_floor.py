"""The refresh campaign's floor, measured in the same run: what a bare paced client achieves.

One thread per tenant sends its tenant's calls to an API Particulier sandbox (same class, each token
granted its tenant's budget, as in the campaign) at exactly that budget — each call ``1 / budget``
after the previous one was sent (a late call is never caught up: a burst would exceed the budget),
nothing else done between calls (no queue, no DynamoDB, no pacing table) —
and its rate is measured as the campaign's: calls between its first and last arrival at the
sandbox. On an idle machine it is the summed budget; on a loaded one threads wake late and it is
less, as the campaign's is: the ratio campaign ÷ floor is what qfbridge's refresh path costs, not
what the load costs (dividing by the summed budget measured both).
"""

from __future__ import annotations

import math
import threading
import time
from collections.abc import Sequence
from typing import Any

import httpx

from qfbridge.api_particulier.client import QF_IDENTITE_PATH
from qfbridge_local.population import collectivites
from qfbridge_local.sandboxes.api_particulier import ApiParticulierSandbox


def run(budgets: Sequence[float], calls: Sequence[int], seed: int = 7) -> dict[str, Any]:
    towns = collectivites(len(budgets), seed=seed)
    with ApiParticulierSandbox(seed=seed, load_fixtures=False) as sandbox:
        tokens = [f"floor-token-{i}" for i in range(len(budgets))]
        for token, town, budget in zip(tokens, towns, budgets, strict=True):
            sandbox.add_token(token, {town.siret}, rate_limit_per_second=math.ceil(budget))
        url = sandbox.url + QF_IDENTITE_PATH
        sandbox.reset_stats()
        start = time.perf_counter() + 0.2

        def tenant(token: str, siret: str, budget: float, count: int) -> None:
            with httpx.Client(timeout=10) as http:
                due = start
                for _ in range(count):
                    delay = due - time.perf_counter()
                    if delay > 0:
                        time.sleep(delay)
                    due = time.perf_counter() + 1 / budget
                    http.get(
                        url,
                        params={
                            "recipient": siret,
                            "nomNaissance": "FLOOR",
                            "prenoms[]": "A",
                            "sexeEtatCivil": "F",
                        },
                        headers={"Authorization": f"Bearer {token}", "Accept": "application/json"},
                    )

        threads = [
            threading.Thread(target=tenant, args=(token, town.siret, budget, count))
            for token, town, budget, count in zip(tokens, towns, budgets, calls, strict=True)
        ]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        achieved = []
        for token in tokens:
            times = sandbox.arrival_times(token)
            span = times[-1] - times[0] if len(times) > 1 else 0.0
            achieved.append((len(times) - 1) / span if span > 0 else 0.0)
        throttled = sandbox.stats().throttled
    return {
        "what": "a bare client per tenant pacing its calls at exactly its budget, same sandbox",
        "achieved_rps": [round(a, 3) for a in achieved],
        "summed_achieved_rps": round(sum(achieved), 3),
        "throttled_429": throttled,
    }
