"""The API's guards and access log: bearer-token mode (every route 401 without the token, unchanged without
the mode), CORS off unless configured, caps on the URL's size (422 with a message), and an access log that
records every request by its route template and never what the client typed (identifiers in the path or the
query)."""

from __future__ import annotations

import json

import pytest
from fastapi.testclient import TestClient

from flows.serving.api import create_app
from flows.serving.security import ApiSettings
from fusion.errors import FusionRxError
from tests.flows.test_queries import GEFITINIB, store  # noqa: F401 - the hand-built store fixture

TOKEN = "s3cret-token-0123456789"
EVERY_ROUTE = ["/", "/static/app.js", "/docs", "/openapi.json", "/api/targets", "/api/evidence-types",
               "/api/targets/G1", "/api/targets/G1/spatial.png", f"/api/compounds/similar?smiles={GEFITINIB}",
               "/api/compounds/depict.svg?smiles=CCO", "/api/experiments", "/no/such/route"]
PATIENT = "TCGA-AB-1234"        # a patient-like identifier sent in a path and in a query
NAME = "DOE^JANE"               # a DICOM-style patient name


@pytest.fixture(scope="module")
def token_client(store):  # noqa: F811
    return TestClient(create_app(store["root"], ApiSettings(token=TOKEN)))


@pytest.mark.parametrize("route", EVERY_ROUTE)
@pytest.mark.parametrize("auth", [None, "Bearer wrong-token", f"Basic {TOKEN}", f"Bearer {TOKEN}x", "Bearer "])
def test_token_mode_answers_401_without_the_token(token_client, route, auth):
    r = token_client.get(route, headers={"Authorization": auth} if auth else {})
    assert r.status_code == 401, (route, auth, r.status_code)
    assert r.headers["www-authenticate"].startswith("Bearer") and "bearer token" in r.json()["detail"]


def test_token_mode_serves_with_the_token(token_client):
    ok = {"Authorization": f"Bearer {TOKEN}"}
    r = token_client.get("/api/targets", params={"top": 2}, headers=ok)
    assert r.status_code == 200 and r.json()["rows"][0]["gene"] == "G1"
    assert token_client.get("/api/targets/NOPE", headers=ok).status_code == 404  # the API as usual behind it
    assert token_client.get("/", headers={"authorization": f"bearer {TOKEN}"}).status_code == 200  # scheme: any case
    schema = token_client.get("/openapi.json", headers=ok).json()
    assert schema["security"] == [{"bearer": []}]
    assert schema["components"]["securitySchemes"]["bearer"]["scheme"] == "bearer"


def test_without_a_token_nothing_changes(store, monkeypatch):  # noqa: F811
    monkeypatch.delenv("FUSIONRX_API_TOKEN", raising=False)
    c = TestClient(create_app(store["root"]))
    assert c.get("/api/targets", params={"top": 1}).json()["rows"][0]["gene"] == "G1"
    assert "security" not in c.get("/openapi.json").json()


def test_token_from_the_environment(store, monkeypatch):  # noqa: F811
    monkeypatch.setenv("FUSIONRX_API_TOKEN", TOKEN)
    c = TestClient(create_app(store["root"]))
    assert c.get("/api/targets").status_code == 401
    assert c.get("/api/targets", headers={"Authorization": f"Bearer {TOKEN}"}).status_code == 200
    monkeypatch.setenv("FUSIONRX_API_TOKEN", "  ")
    with pytest.raises(FusionRxError, match="FUSIONRX_API_TOKEN is set but empty"):
        create_app(store["root"])


def test_cors_is_off_unless_configured(store):  # noqa: F811
    preflight = {"Origin": "https://lab.example", "Access-Control-Request-Method": "GET"}
    off = TestClient(create_app(store["root"], ApiSettings()))
    r = off.get("/api/evidence-types", headers={"Origin": "https://lab.example"})
    assert r.status_code == 200 and "access-control-allow-origin" not in r.headers
    assert off.options("/api/targets", headers=preflight).status_code == 405
    on = TestClient(create_app(store["root"], ApiSettings(token=TOKEN, cors_origins=("https://lab.example",))))
    r = on.options("/api/targets", headers={**preflight, "Access-Control-Request-Headers": "authorization"})
    assert r.status_code == 200 and r.headers["access-control-allow-origin"] == "https://lab.example"  # no token
    r = on.get("/api/evidence-types", headers={"Origin": "https://lab.example", "Authorization": f"Bearer {TOKEN}"})
    assert r.status_code == 200 and r.headers["access-control-allow-origin"] == "https://lab.example"
    r = on.get("/api/evidence-types", headers={"Origin": "https://evil.example", "Authorization": f"Bearer {TOKEN}"})
    assert "access-control-allow-origin" not in r.headers
    assert on.options("/api/targets", headers={**preflight, "Origin": "https://evil.example"}).status_code == 400


@pytest.mark.parametrize("path,params,words", [
    ("/api/targets", {"weights": "rna_expression:1," * 70}, "weights"),          # 1,190 chars > 1,000
    ("/api/targets", {"evidence_min": "x" * 1001}, "evidence_min"),
    ("/api/targets/" + "G" * 65, {}, "gene"),                                    # a gene symbol over 64 chars
    ("/api/compounds/similar", {"smiles": "C" * 2001}, "smiles"),
    ("/api/targets", {"top": 1001}, "top"),                                      # page size over MAX_PAGE
    ("/api/compounds/similar", {"smiles": "CCO", "top": 501}, "top"),
    ("/api/targets", {"weights": "x" * 900, "evidence_min": "y" * 900, "a": "z" * 3000}, "query string of"),
    ("/api/targets/" + "G" * 600, {}, "path of"),                               # over the 512-byte path cap
])
def test_size_caps_are_422_with_a_message(store, path, params, words):  # noqa: F811
    r = TestClient(create_app(store["root"], ApiSettings())).get(path, params=params)
    assert r.status_code == 422, r.text
    assert words in r.text


def _log_lines(path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines()]


def test_access_log_has_every_request_by_route_template_and_no_identifier(store, tmp_path):  # noqa: F811
    log = tmp_path / "logs" / "access.log"
    c = TestClient(create_app(store["root"], ApiSettings(access_log=log)))
    sent = [(f"/api/targets/{PATIENT}", {"note": NAME}, 404),
            (f"/api/targets/{PATIENT}/spatial.png", {}, 404),
            ("/api/targets", {"weights": f"{PATIENT}:1"}, 400),
            ("/api/compounds/similar", {"smiles": NAME}, 400),
            ("/api/targets/G1", {"patient": PATIENT}, 200),
            (f"/static/{PATIENT}.html", {}, 404),
            (f"/{PATIENT}", {"name": NAME}, 404),
            ("/api/targets", {"top": 10**6, "q": PATIENT}, 422)]
    for path, params, status in sent:
        assert c.get(path, params=params).status_code == status, path
    text = log.read_text()
    assert PATIENT not in text and NAME not in text and "DOE" not in text and "1234" not in text
    lines = _log_lines(log)
    assert [(x["method"], x["route"], x["status"]) for x in lines] == [
        ("GET", "/api/targets/{gene}", 404), ("GET", "/api/targets/{gene}/spatial.png", 404),
        ("GET", "/api/targets", 400), ("GET", "/api/compounds/similar", 400), ("GET", "/api/targets/{gene}", 200),
        ("GET", "/static/{name}", 404), ("GET", "<unmatched>", 404), ("GET", "/api/targets", 422)]
    assert all(set(x) == {"time", "method", "route", "status", "duration_ms"} for x in lines)
    assert all(x["time"].endswith("Z") and x["duration_ms"] > 0 for x in lines)


def test_access_log_records_the_guards_answers(store, tmp_path):  # noqa: F811
    log = tmp_path / "access.log"
    c = TestClient(create_app(store["root"], ApiSettings(token=TOKEN, access_log=log)))
    c.get(f"/api/targets/{PATIENT}")
    c.get("/api/targets", params={"q": PATIENT * 400}, headers={"Authorization": f"Bearer {TOKEN}"})
    c.post("/api/targets", headers={"Authorization": f"Bearer {TOKEN}"})
    assert [(x["route"], x["status"]) for x in _log_lines(log)] == [
        ("/api/targets/{gene}", 401), ("/api/targets", 422), ("/api/targets", 405)]
    assert PATIENT not in log.read_text() and TOKEN not in log.read_text()
