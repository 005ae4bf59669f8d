"""Matching: identity matching of one dossier against a directory of 100,000 families, with the
household's blocking, and the labelled set's precision and automatic-link rate.

What is timed per dossier is what reconcile does: ``qfbridge.matching.match`` reading through
``FamilyRepository.candidates_on`` — one BatchGetItem for every distinct birth date of the
dossier's household (the usager's, the other allocataire's, the children's), and, for a dossier
that is not linked, one more on the usager's name keys — on moto, then ``decide``. The dossiers are those of families of the directory (one of their parents filling
the form), of a new partner of a single parent of the directory (the usager absent, the household
known: the conjoint and the children), and of strangers.

The directory is generated in full (100,000 seeded households) and its blocking index computed, but
moto cannot hold it: its Query walks every item of the table and computes the size of every item
of the partition before applying the key condition (measured: ~1 ms per item, i.e. minutes per
Query at hundreds of thousands of blocking entries), where DynamoDB seeks the sort key. So each
sampled dossier's reads run against a partition holding exactly the blocking index's items the
100,000-family directory has under the dossier's birth dates and name keys, as
``FamilyRepository.upsert_many`` writes them (a test checks the shape), in a table of the families
table's schema created for that dossier and dropped after it (moto's walk stays short): the same
items come back as from the full directory. The load rate
of ``upsert_many`` itself is measured on a chunk of 1,000 families of the directory.

Floor: the same BatchGetItems made with boto3's low-level client (no deserialisation, no
scoring), on the same partition — the read itself. The ratio (p50 over p50) is what qfbridge's own
work adds to the read.

Birth-date skew, as registers have it: a parent born abroad whose day of birth is unknown is
registered on 1 January of the year. ``JAN_FIRST_SHARE`` of the directory's foreign-born parents
get that date, so each 1 January of 1965–2000 carries ~200–360 parents. Client-side time: the
match's time less the time its requests spent in botocore's HTTP send (the emulator's own time —
moto's, where DynamoDB would answer in a few milliseconds): deserialising the candidates and
deciding. Budgets: its p95 ≤ ``CLIENT_P95_LIMIT_MS`` and DynamoDB requests per match (mean)
≤ ``REQUESTS_PER_MATCH_LIMIT``.

The labelled set (``tests/data/matching_cases.py``, every case against its own directory, in
memory): precision of the automatic links (must be 1.0), and the automatic-link rate — the share of
the dossiers labelled ``linked`` that are linked to the right family.
"""

from __future__ import annotations

import dataclasses
import importlib.util
import json
import random
import statistics
import sys
import time
from collections import defaultdict
from collections.abc import Sequence
from pathlib import Path
from types import ModuleType
from typing import Any
from unittest import mock

import boto3

from bench.aws_calls import RequestCounter, attributed_to
from qfbridge.domain.dossier import parse_formulaire_qf_json
from qfbridge.domain.identity import Family
from qfbridge.matching.scoring import (
    NAME_KEY_LIMIT,
    Candidate,
    DossierIdentity,
    blocking_keys_for_dossier,
    blocking_keys_for_family,
    encode_candidate,
    match,
    name_keys_for_dossier,
)
from qfbridge.store.families import FamilyRepository, bucket_of, bucket_sks, family_pk
from qfbridge_local.population import Household, formulaire_for, households
from qfbridge_local.runtime import LocalRuntime, RuntimeOptions

DIRECTORY = 100_000
SAMPLES = 200
STRANGER_SHARE = 0.1
NEW_PARTNER_SHARE = 0.1
LOAD_CHUNKS = 1
CHUNK = 1_000
LIMIT = 2.0
MATCHER = "matching"
JAN_FIRST_SHARE = 0.6
CLIENT_P95_LIMIT_MS = 25.0
REQUESTS_PER_MATCH_LIMIT = 2.0


def _with_birth_date_skew(population: list[Household], seed: int) -> tuple[list[Household], int]:
    """``JAN_FIRST_SHARE`` of the foreign-born parents registered on 1 January of their year."""
    rng = random.Random(seed)
    skewed: list[Household] = []
    moved = 0
    for household in population:
        parents = []
        for parent in household.family.parents:
            if (parent.code_pays_naissance or "99100") != "99100" and rng.random() < JAN_FIRST_SHARE:
                parent = parent.model_copy(
                    update={"date_naissance": parent.date_naissance.replace(month=1, day=1)}
                )
                moved += 1
            parents.append(parent)
        family = household.family.model_copy(update={"parents": parents})
        skewed.append(dataclasses.replace(household, family=family))
    return skewed, moved


class _SendClock:
    """Time spent in botocore's HTTP send (the emulator answering), while installed: wall-clock
    ``seconds`` and the calling thread's CPU time ``cpu_seconds`` (moto answers in this thread)."""

    def __init__(self) -> None:
        self.seconds = 0.0
        self.cpu_seconds = 0.0
        self._patch: Any = None

    def __enter__(self) -> _SendClock:
        from botocore.endpoint import Endpoint

        original = vars(Endpoint)["_send"]
        clock = self

        def timed(endpoint: Any, request: Any) -> Any:
            started, started_cpu = time.perf_counter(), time.thread_time()
            try:
                return original(endpoint, request)
            finally:
                clock.seconds += time.perf_counter() - started
                clock.cpu_seconds += time.thread_time() - started_cpu

        self._patch = mock.patch.object(Endpoint, "_send", timed)
        self._patch.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._patch.stop()


CASES_PATH = Path(__file__).resolve().parents[1] / "tests" / "data" / "matching_cases.py"


def _percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    index = min(len(ordered) - 1, max(0, round(q * (len(ordered) - 1))))
    return ordered[index]


def _identity_of(formulaire: dict[str, Any]) -> DossierIdentity:
    parsed = parse_formulaire_qf_json(json.dumps(formulaire).encode())
    return DossierIdentity.from_parts(parsed.pivot_identity, parsed.allocataires, parsed.enfants)


def _new_partner_dossier(household: Household, stranger: Household) -> dict[str, Any]:
    """The dossier of a new partner (absent from the directory) of the household's single parent."""
    newcomer = stranger.family.parents[0]
    family = Family(
        user_id=household.family.user_id,
        parents=[newcomer, household.family.parents[0]],
        enfants=household.family.enfants,
    )
    return formulaire_for(family, household.qf, parent=0)


def blocking_entry(key: str, family: Family) -> tuple[str, str]:
    """A blocking entry as ``FamilyRepository.upsert_many`` writes it: its item's sort key, its value
    (under the attribute ``f:<user_id>``)."""
    return bucket_of(key, family.user_id), encode_candidate(family)


def _seed(table: Any, siret: str, keys: Sequence[str], by_key: dict[str, list[Family]]) -> None:
    """The blocking index's items under ``keys``: one per key (and shard), one attribute per family."""
    items: dict[str, dict[str, Any]] = {}
    for key in keys:
        for family in by_key.get(key, []):
            sk, value = blocking_entry(key, family)
            item = items.setdefault(sk, {"pk": family_pk(siret), "sk": sk, "ids": set()})
            item[f"f:{family.user_id}"] = value
            item["ids"].add(family.user_id)
    with table.batch_writer() as batch:
        for item in items.values():
            batch.put_item(Item=item)


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


def _load_cases() -> ModuleType:
    spec = importlib.util.spec_from_file_location("qfbridge_matching_cases", CASES_PATH)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module


def labelled_set() -> dict[str, Any]:
    """Precision and automatic-link rate on the labelled cases."""
    module = _load_cases()
    cases = module.build_cases()
    right = wrong = expected_links = household_links = reviews = reviews_with_candidates = 0
    agreements = 0
    started = time.perf_counter()
    for case in cases:
        decision = module.run_case(case)
        expected_links += case.expected == "linked"
        if decision.outcome == "linked":
            if case.expected == "linked" and decision.user_id == case.expected_user_id:
                right += 1
                household_links += decision.rule == "household"
            else:
                wrong += 1
        if decision.outcome == "needs_review":
            reviews += 1
            reviews_with_candidates += bool(decision.candidates)
        agreements += decision.outcome == case.expected and decision.user_id == case.expected_user_id
    return {
        "cases": len(cases),
        "expected_links": expected_links,
        "linked_right": right,
        "linked_wrong": wrong,
        "precision": round(right / (right + wrong), 4) if right + wrong else 1.0,
        "auto_link_rate": round(right / expected_links, 4),
        "linked_by_household_rule": household_links,
        "outcome_agreement": round(agreements / len(cases), 4),
        "reviews_showing_a_family": f"{reviews_with_candidates}/{reviews}",
        "seconds": round(time.perf_counter() - started, 2),
    }


def run(
    counter: RequestCounter, *, directory: int = DIRECTORY, samples: int = SAMPLES, seed: int = 17
) -> dict[str, Any]:
    labelled = labelled_set()
    started = time.perf_counter()
    population, jan_first_parents = _with_birth_date_skew(
        households(directory, seed=seed, id_prefix="fam"), seed
    )
    generation_s = time.perf_counter() - started
    by_key: dict[str, list[Family]] = defaultdict(list)
    for household in population:  # user ids ascending: each list is in sort-key order
        for key in blocking_keys_for_family(household.family):
            by_key[key].append(household.family)
    date_keys = [k for k in by_key if not k.startswith("name:")]
    entries = sum(len(v) for v in by_key.values())
    date_entries = sum(len(by_key[k]) for k in date_keys)

    rng = random.Random(seed)
    strangers = households(samples, seed=seed + 1, id_prefix="stranger")
    singles = [h for h in population if len(h.family.parents) == 1]
    dossiers: list[tuple[str, str | None, DossierIdentity]] = []
    for i in range(samples):
        draw = rng.random()
        if draw < STRANGER_SHARE:
            dossiers.append(("stranger", None, _identity_of(strangers[i].formulaire())))
        elif draw < STRANGER_SHARE + NEW_PARTNER_SHARE:
            household = singles[rng.randrange(len(singles))]
            formulaire = _new_partner_dossier(household, strangers[i])
            dossiers.append(("new_partner", household.family.user_id, _identity_of(formulaire)))
        else:
            household = population[rng.randrange(directory)]
            parent = rng.randrange(len(household.family.parents))
            formulaire = household.formulaire(parent=parent)
            dossiers.append(("member", household.family.user_id, _identity_of(formulaire)))

    with LocalRuntime.start(RuntimeOptions(serve_api=False)) as rt:
        # A plain client: qfbridge's (store.tables.dynamodb) transforms parameters (Python ↔ DynamoDB JSON).
        low_level = boto3.client("dynamodb")
        described: Any = low_level.describe_table(TableName=rt.environment["FAMILIES_TABLE"])
        schema: dict[str, Any] = described["Table"]
        total_ms: list[float] = []
        client_ms: list[float] = []
        client_cpu_ms: list[float] = []
        floor_ms: list[float] = []
        candidates: list[int] = []
        reads: list[int] = []
        date_reads: list[int] = []
        name_reads: list[int] = []
        keys_per_dossier: list[int] = []
        outcomes: dict[str, dict[str, int]] = defaultdict(lambda: defaultdict(int))
        wrong_links = 0
        siret = "21750000000001"
        for kind, expected, identity in dossiers:
            # One name for every dossier's table: the repository's boto3 Table stays warm, as in reconcile.
            table_name = _create_table(low_level, schema, "bench-matching")
            repo = FamilyRepository(table_name)
            keys = sorted(blocking_keys_for_dossier(identity))
            names = sorted(name_keys_for_dossier(identity))
            _seed(repo._table, siret, [*keys, *names], by_key)
            read_keys: list[tuple[Sequence[str], int | None]] = []
            found_counts: list[int] = []

            def read(
                wanted: Sequence[str],
                limit: int | None,
                repo: FamilyRepository = repo,
                read_keys: list[tuple[Sequence[str], int | None]] = read_keys,
                found_counts: list[int] = found_counts,
            ) -> list[Candidate]:
                read_keys.append((list(wanted), limit))
                found = repo.candidates_on(siret, wanted, limit=limit)
                found_counts.append(len(found))
                return found

            counter.reset()
            with attributed_to(MATCHER), _SendClock() as sent:
                t0, c0 = time.perf_counter(), time.thread_time()
                decision = match(identity, read)
                t1, c1 = time.perf_counter(), time.thread_time()
            client_ms.append((t1 - t0 - sent.seconds) * 1000)
            client_cpu_ms.append((c1 - c0 - sent.cpu_seconds) * 1000)
            requests = counter.tally.count(function=MATCHER, service="dynamodb")
            # The second read (the name keys), when there is one, is one request.
            named = sum(1 for _, limit in read_keys if limit is not None)
            reads.append(requests)
            name_reads.append(named)
            date_reads.append(requests - named)
            keys_per_dossier.append(len(keys))
            t2 = time.perf_counter()
            for wanted, _limit in read_keys:
                sks = [sk for key in sorted(set(wanted)) for sk in bucket_sks(key)]
                low_level.batch_get_item(
                    RequestItems={
                        table_name: {"Keys": [{"pk": {"S": family_pk(siret)}, "sk": {"S": sk}} for sk in sks]}
                    }
                )
            floor_ms.append((time.perf_counter() - t2) * 1000)
            total_ms.append((t1 - t0) * 1000)
            candidates.append(sum(found_counts))
            outcomes[kind][decision.outcome] += 1
            if decision.outcome == "linked":
                if decision.user_id == expected:
                    outcomes[kind]["linked_right"] += 1
                else:
                    wrong_links += 1
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
        "labelled_set": labelled,
        "directory_families": directory,
        "blocking_entries": entries,
        "birth_date_entries": date_entries,
        "distinct_birth_dates": len(date_keys),
        "generation_seconds": round(generation_s, 2),
        "upsert_many_families_per_second": round(load_rate, 1),
        "upsert_many_seconds_for_directory": round(directory / load_rate, 1),
        "samples": samples,
        "outcomes": {kind: dict(counts) for kind, counts in outcomes.items()},
        "wrong_links": wrong_links,
        "families_read_per_dossier": {"mean": round(statistics.fmean(candidates), 2), "max": max(candidates)},
        "ms": {"p50": round(p50, 2), "p95": round(p95, 2)},
        "client_cpu_ms": {
            "what": "the match's CPU time less its HTTP sends' (the emulator's): deserialising the "
            "candidates and deciding — the budget",
            "p50": round(_percentile(client_cpu_ms, 0.5), 2),
            "p95": round(_percentile(client_cpu_ms, 0.95), 2),
        },
        "client_ms": {
            "what": "the match's wall-clock time less its HTTP sends': the same work, plus the time the "
            "process waited for a core (a loaded machine)",
            "p50": round(_percentile(client_ms, 0.5), 2),
            "p95": round(_percentile(client_ms, 0.95), 2),
        },
        "client_p95_limit_ms": CLIENT_P95_LIMIT_MS,
        "requests_per_match_limit": REQUESTS_PER_MATCH_LIMIT,
        "birth_date_skew": {
            "jan_first_share_of_foreign_born": JAN_FIRST_SHARE,
            "parents_on_1_january": jan_first_parents,
            "most_families_under_one_1_january": max(
                (len(v) for k, v in by_key.items() if k.endswith("-01-01") and not k.startswith("name:")),
                default=0,
            ),
        },
        "floor": {
            "what": "the same BatchGetItems, low-level client, no deserialisation nor scoring",
            "ms_p50": round(floor_p50, 2),
            "ms_p95": round(_percentile(floor_ms, 0.95), 2),
        },
        "ratio_to_floor": round(p50 / floor_p50, 3),
        "dynamodb_requests_per_match": {"max": max(reads), "mean": round(statistics.fmean(reads), 3)},
        "blocking_keys_per_dossier": {
            "max": max(keys_per_dossier),
            "mean": round(statistics.fmean(keys_per_dossier), 3),
        },
        "household_read_requests": {
            "what": "requests of the read on the household's birth dates (one BatchGetItem)",
            "max": max(date_reads),
            "mean": round(statistics.fmean(date_reads), 3),
        },
        "name_key_requests_per_match": {
            "max": max(name_reads),
            "mean": round(statistics.fmean(name_reads), 3),
            "limit_per_key": NAME_KEY_LIMIT,
        },
        "limit": LIMIT,
    }
