"""The refresh campaign's floor, measured in the same run: what a bare paced client achieves.

One thread per tenant sends its tenant's calls to an API Particulier sandbox (same class, each token
granted its tenant's budget, as in the campaign) at exactly that budget — each call ``1 / budget``
after the previous one was sent (a late call is never caught up: a burst would exceed the budget),
and, after each call, as many AWS requests as the campaign's functions made per API Particulier
call (``aws_per_call``), each the emulator's cheapest — a DynamoDB ``GetItem`` on a one-item table
of a moto process — as the intake's floor does: a pacer alone needs almost no CPU, and a load that
starves the campaign's handlers would not slow it. Its rate is measured as the campaign's: calls
between its first and last arrival at the sandbox. On an idle machine it is the summed budget; on a
loaded one it is less, as the campaign's is: the ratio campaign ÷ floor is what qfbridge's refresh
path costs, not what the load costs (dividing by the summed budget measured both).
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


def _dynamodb(endpoint: str) -> Any:
    import boto3

    return boto3.client(
        "dynamodb",
        endpoint_url=endpoint,
        region_name="eu-west-3",
        aws_access_key_id="bench",
        aws_secret_access_key="bench",
    )


def run(
    budgets: Sequence[float], calls: Sequence[int], seed: int = 7, aws_per_call: int = 0
) -> dict[str, Any]:
    from bench.moto_process import ExternalMoto

    moto = ExternalMoto().start() if aws_per_call else None
    try:
        if moto is not None:
            client = _dynamodb(moto.endpoint)
            client.create_table(
                TableName="floor",
                KeySchema=[{"AttributeName": "pk", "KeyType": "HASH"}],
                AttributeDefinitions=[{"AttributeName": "pk", "AttributeType": "S"}],
                BillingMode="PAY_PER_REQUEST",
            )
            client.put_item(TableName="floor", Item={"pk": {"S": "one"}})
        result = _run(budgets, calls, seed, aws_per_call, moto.endpoint if moto else None)
    finally:
        if moto is not None:
            moto.stop()
    result["aws_requests_per_call"] = aws_per_call
    return result


def _run(
    budgets: Sequence[float], calls: Sequence[int], seed: int, aws_per_call: int, endpoint: str | None
) -> dict[str, Any]:
    towns = collectivites(len(budgets), seed=seed)
    with ApiParticulierSandbox(seed=seed, load_fixtures=False) as sandbox:
        tokens = [f"floor-token-{i}" for i in range(len(budgets))]
        for token, town, budget in zip(tokens, towns, budgets, strict=True):
            sandbox.add_token(token, {town.siret}, rate_limit_per_second=math.ceil(budget))
        url = sandbox.url + QF_IDENTITE_PATH
        sandbox.reset_stats()
        start = time.perf_counter() + 0.2

        def tenant(token: str, siret: str, budget: float, count: int) -> None:
            dynamodb = _dynamodb(endpoint) if endpoint else None
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
                    if dynamodb is not None:
                        for _ in range(aws_per_call):
                            dynamodb.get_item(TableName="floor", Key={"pk": {"S": "one"}})

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
        "what": "a bare client per tenant pacing its calls at exactly its budget, same sandbox,"
        " with the campaign's AWS requests per call as GetItem on a moto process",
        "achieved_rps": [round(a, 3) for a in achieved],
        "summed_achieved_rps": round(sum(achieved), 3),
        "throttled_429": throttled,
    }
