"""Matching: the latency of one dossier's identity matching against a directory of 100,000 families.

What is timed per dossier is what reconcile does: ``FamilyRepository.candidates_on`` (the blocking
Queries on the usager's birth date and, for a two-parent household, the conjoint's — one Query each —,
through boto3's resource layer, on moto) then ``decide``. The dossiers are those of families of the
directory (their parent filling the form) and of strangers.

The directory is generated in full (100,000 seeded households) and its blocking index computed, but
moto cannot hold it: its Query walks every item of the table and computes the size of every item
of the partition before applying the key condition (measured: ~1 ms per item, i.e. minutes per
Query at 265,000 blocking entries), where DynamoDB seeks the sort key. So each sampled dossier's
Queries run against a partition holding exactly the families the 100,000-family directory has
with a parent born on one of its keys, written with ``FamilyRepository.upsert_many`` into a table
of the families table's schema created for that dossier and dropped after it (moto's walk stays
short): the same items come back as from the full directory. The load rate of ``upsert_many`` is measured on a chunk
of 1,000 families of the directory.

Floor: the same Queries made with boto3's low-level client (no deserialisation into families, no
scoring), on the same partition — the read itself. The ratio (p50 over p50) is what qfbridge's own
work adds to the read.
"""

from __future__ import annotations

import json
import random
import statistics
import time
from collections import defaultdict
from typing import Any

import boto3

from bench.aws_calls import RequestCounter, attributed_to
from qfbridge.domain.dossier import parse_formulaire_qf_json
from qfbridge.domain.identity import Family
from qfbridge.reconcile.matching import DossierIdentity, blocking_keys_for_dossier, decide
from qfbridge.store.families import FamilyRepository, family_pk
from qfbridge_local.population import Household, households
from qfbridge_local.runtime import LocalRuntime, RuntimeOptions

DIRECTORY = 100_000
SAMPLES = 200
STRANGER_SHARE = 0.1
LOAD_CHUNKS = 1
CHUNK = 1_000
LIMIT = 2.0
MATCHER = "matching"


def _percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    index = min(len(ordered) - 1, max(0, round(q * (len(ordered) - 1))))
    return ordered[index]


def _identity(household: Household) -> DossierIdentity:
    parsed = parse_formulaire_qf_json(json.dumps(household.formulaire()).encode())
    return DossierIdentity.from_parts(parsed.pivot_identity, parsed.allocataires, parsed.enfants)


def _create_table(client: Any, schema: dict[str, Any], name: str) -> str:
    """A table with the families table's keys and index (moto creates it at once)."""
    client.create_table(
        TableName=name,
        KeySchema=schema["KeySchema"],
        AttributeDefinitions=schema["AttributeDefinitions"],
        BillingMode="PAY_PER_REQUEST",
        GlobalSecondaryIndexes=[
            {"IndexName": gsi["IndexName"], "KeySchema": gsi["KeySchema"], "Projection": gsi["Projection"]}
            for gsi in schema.get("GlobalSecondaryIndexes", [])
        ],
    )
    return name


def run(
    counter: RequestCounter, *, directory: int = DIRECTORY, samples: int = SAMPLES, seed: int = 17
) -> dict[str, Any]:
    started = time.perf_counter()
    population = households(directory, seed=seed, id_prefix="fam")
    generation_s = time.perf_counter() - started
    by_date: dict[str, list[Family]] = defaultdict(list)
    for household in population:
        for date in {p.date_naissance.isoformat() for p in household.family.parents}:
            by_date[date].append(household.family)
    entries = sum(len(v) for v in by_date.values())

    rng = random.Random(seed)
    strangers = households(samples, seed=seed + 1, id_prefix="stranger")
    picked = [
        strangers[i] if rng.random() < STRANGER_SHARE else population[rng.randrange(directory)]
        for i in range(samples)
    ]
    dossiers = [_identity(h) for h in picked]

    with LocalRuntime.start(RuntimeOptions(serve_api=False)) as rt:
        # A plain client: the resource's ``meta.client`` transforms parameters (Python ↔ DynamoDB JSON).
        low_level = boto3.client("dynamodb")
        described: Any = low_level.describe_table(TableName=rt.environment["FAMILIES_TABLE"])
        schema: dict[str, Any] = described["Table"]
        total_ms: list[float] = []
        decide_ms: list[float] = []
        floor_ms: list[float] = []
        candidates: list[int] = []
        reads: list[int] = []
        keys_per_dossier: list[int] = []
        outcomes: dict[str, int] = defaultdict(int)
        siret = "21750000000001"
        for identity in dossiers:
            # One name for every dossier's table: the repository's boto3 Table stays warm, as in reconcile.
            table_name = _create_table(low_level, schema, "bench-matching")
            repo = FamilyRepository(table_name)
            keys = sorted(blocking_keys_for_dossier(identity))
            families = list({f.user_id: f for key in keys for f in by_date.get(key, [])}.values())
            if families:
                repo.upsert_many(siret, families)
            counter.reset()
            with attributed_to(MATCHER):
                t0 = time.perf_counter()
                found = repo.candidates_on(siret, keys)
                t1 = time.perf_counter()
                decision = decide(identity, found)
                t2 = time.perf_counter()
            reads.append(counter.tally.count(function=MATCHER, service="dynamodb"))
            keys_per_dossier.append(len(keys))
            t3 = time.perf_counter()
            for key in keys:
                low_level.query(
                    TableName=table_name,
                    KeyConditionExpression="pk = :pk AND begins_with(sk, :prefix)",
                    ExpressionAttributeValues={
                        ":pk": {"S": family_pk(siret)},
                        ":prefix": {"S": f"B#{key}#"},
                    },
                )
            floor_ms.append((time.perf_counter() - t3) * 1000)
            total_ms.append((t2 - t0) * 1000)
            decide_ms.append((t2 - t1) * 1000)
            candidates.append(len(found))
            outcomes[decision.outcome] += 1
            low_level.delete_table(TableName=table_name)

        # The load rate of the real bulk path, on chunks of 1,000 families of the directory.
        repo = FamilyRepository(_create_table(low_level, schema, "bench-matching-load"))
        load_times = []
        for chunk in range(LOAD_CHUNKS):
            families_chunk = [h.family for h in population[chunk * CHUNK : (chunk + 1) * CHUNK]]
            t0 = time.perf_counter()
            repo.upsert_many(siret, families_chunk)
            load_times.append(time.perf_counter() - t0)
        load_rate = CHUNK * LOAD_CHUNKS / sum(load_times)

    p50, p95 = _percentile(total_ms, 0.5), _percentile(total_ms, 0.95)
    floor_p50 = _percentile(floor_ms, 0.5)
    return {
        "directory_families": directory,
        "blocking_entries": entries,
        "distinct_birth_dates": len(by_date),
        "generation_seconds": round(generation_s, 2),
        "upsert_many_families_per_second": round(load_rate, 1),
        "upsert_many_seconds_for_directory": round(directory / load_rate, 1),
        "samples": samples,
        "outcomes": dict(outcomes),
        "candidates_per_dossier": {"mean": round(statistics.fmean(candidates), 2), "max": max(candidates)},
        "ms": {
            "p50": round(p50, 2),
            "p95": round(p95, 2),
            "decide_p50": round(_percentile(decide_ms, 0.5), 3),
            "decide_p95": round(_percentile(decide_ms, 0.95), 3),
        },
        "floor": {
            "what": "the same Queries, low-level client, no deserialisation nor scoring",
            "ms_p50": round(floor_p50, 2),
            "ms_p95": round(_percentile(floor_ms, 0.95), 2),
        },
        "ratio_to_floor": round(p50 / floor_p50, 3),
        "dynamodb_requests_per_match": {"max": max(reads), "mean": round(statistics.fmean(reads), 3)},
        "blocking_keys_per_dossier": {
            "max": max(keys_per_dossier),
            "mean": round(statistics.fmean(keys_per_dossier), 3),
        },
        "dynamodb_requests_per_blocking_key": {
            "max": max(r / k for r, k in zip(reads, keys_per_dossier, strict=True)),
        },
        "limit": LIMIT,
    }
