"""The API attacked from its own OpenAPI schema (schemathesis, property-based): thousands of generated
requests, valid and invalid, over every documented route of an app over a small real store, and every answer
checked: no 5xx, the status code and the content type documented for the route, the body valid against the
documented schema."""

from __future__ import annotations

from collections import Counter, defaultdict

import pytest
import schemathesis
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from schemathesis import GenerationMode
from schemathesis.checks import not_a_server_error
from schemathesis.specs.openapi.checks import (content_type_conformance, response_schema_conformance,
                                               status_code_conformance)

from flows.serving.api import create_app
from flows.serving.security import ApiSettings
from tests.flows.test_api import client, store  # noqa: F401 - the hand-built store (with a spatial sample)

pytestmark = pytest.mark.slow  # property-based requests against the served API

CHECKS = [not_a_server_error, status_code_conformance, content_type_conformance, response_schema_conformance]
# every documented GET and its examples per generation mode, by cost (CPU per request on 2 cores: a target's
# explanation or picture ~40 ms, a ranking page or a drawing ~10 ms): 2 x 1,030 requests, ~40 CPU-seconds
EXAMPLES = {"/": 1, "/api/evidence-types": 1, "/api/experiments": 1,  # no parameters: one request says it all
            "/api/targets": 350, "/api/compounds/similar": 250, "/api/compounds/depict.svg": 250,
            "/api/targets/{gene}": 120, "/api/targets/{gene}/spatial.png": 60,
            # the hand-built store has no run's outputs: no patients (each one is a 404; tests/flows/test_patient_*)
            "/api/patients": 1, "/api/patients/{patient_id}": 20, "/api/patients/{patient_id}/report": 20,
            "/api/patients/{patient_id}/figures/{name}.png": 20}
ROUTES = list(EXAMPLES)
PATIENT_ROUTES = [r for r in ROUTES if r.startswith("/api/patients/")]
KNOWN_GENES = ["G1", "g2", "G3", "G4"]  # the store's ranked genes: generated paths hit real targets too
SEEN: dict[str, Counter] = defaultdict(Counter)


@pytest.fixture(scope="module")
def api_schema(client, store):  # noqa: F811 - `client` puts the spatial sample into the store
    schema = schemathesis.openapi.from_asgi("/openapi.json", create_app(store["root"], ApiSettings()))

    @schema.hook
    def flatmap_path_parameters(context, path_parameters):  # noqa: ARG001 - the hook's signature
        if "gene" not in (path_parameters or {}):
            return st.just(path_parameters)
        return st.one_of(st.just(path_parameters),
                         st.sampled_from(KNOWN_GENES).map(lambda g: {**path_parameters, "gene": g}))

    return schema


def test_the_schema_documents_exactly_these_routes(api_schema):
    ops = [op.ok() for op in api_schema.get_all_operations()]
    assert sorted(f"{o.method.upper()} {o.path}" for o in ops) == sorted(f"GET {r}" for r in ROUTES)


WITH_PARAMETERS = [r for r in ROUTES if EXAMPLES[r] > 1]


@pytest.mark.parametrize("route,mode", [(r, GenerationMode.POSITIVE) for r in ROUTES]
                         + [(r, GenerationMode.NEGATIVE) for r in WITH_PARAMETERS], ids=str)
def test_every_answer_is_documented_and_no_5xx(api_schema, route, mode):
    operation = api_schema[route]["GET"]

    @given(case=operation.as_strategy(generation_mode=mode))
    @settings(max_examples=EXAMPLES[route], deadline=None, database=None, derandomize=True,
              suppress_health_check=list(HealthCheck))
    def attack(case):
        response = case.call()
        SEEN[route][response.status_code] += 1
        case.validate_response(response, checks=CHECKS)

    attack()


def test_the_schema_run_covered_every_route_with_thousands_of_requests():
    """Runs after the schema run: thousands of requests in all, every route answered 200 at least once."""
    if not SEEN:
        pytest.skip("the schema-driven run did not run in this session (selected out)")
    total = sum(sum(c.values()) for c in SEEN.values())
    print(f"\nschema run: {total} requests; per route: " + "; ".join(f"{k}: {dict(v)}" for k, v in sorted(SEEN.items())))
    assert total >= 2000, total
    assert all(s < 500 for c in SEEN.values() for s in c)
    assert len(SEEN) == len(ROUTES) and all(c[200] > 0 for r, c in SEEN.items() if r not in PATIENT_ROUTES), dict(SEEN)
    assert all(set(SEEN[r]) <= {404, 422} for r in PATIENT_ROUTES), {r: dict(SEEN[r]) for r in PATIENT_ROUTES}
