"""The Alpaca adapter: every call ends as an outcome with the error's fields; Alpaca's JSON
in contract terms. No venue: alpaca-py's own error type, raised by the request itself."""

from __future__ import annotations

import json
from typing import Any

import pytest
import requests
from alpaca.common.exceptions import APIError

from actors.alpaca_adapter import (
    DUPLICATE_CODE,
    AlpacaAdapter,
    AlpacaEndpoints,
    BrokerRequest,
    account_status,
    classify,
    parse_order,
)
from actors.core.broker_outcome import BrokerCallError, Failed, Ok, Outcome, Refusal
from protocol.messages import OrderIntent

pytestmark = pytest.mark.anyio


def api_error(status: int | None, body: object) -> APIError:
    http_error = None
    if status is not None:
        response = requests.Response()
        response.status_code = status
        http_error = requests.HTTPError(response=response)
    text = body if isinstance(body, str) else json.dumps(body)
    return APIError(text, http_error)  # type: ignore[no-untyped-call]  # alpaca-py: unannotated


def raising(exc: Exception) -> BrokerRequest[None]:
    def send(_client: Any) -> None:
        raise exc

    return BrokerRequest(send, lambda _body: None)


@pytest.fixture
def adapter() -> AlpacaAdapter:
    unused = "http://127.0.0.1:9"  # nothing here is sent
    adapter = AlpacaAdapter(
        AlpacaEndpoints(unused, unused, unused, "key", "secret"),
        timeout_s=1.0,
        rate_limit_per_min=6000.0,
        threads=2,
    )
    adapter.connect()
    return adapter


@pytest.mark.parametrize(
    ("status", "code", "outcome"),
    [
        (404, None, Outcome.NOT_FOUND),
        (422, DUPLICATE_CODE, Outcome.DUPLICATE),
        (422, 40010000, Outcome.REJECTED),
        (403, 40310000, Outcome.REJECTED),
        (429, None, Outcome.UNKNOWN),
        (500, None, Outcome.UNKNOWN),
        (504, None, Outcome.UNKNOWN),
        (None, None, Outcome.REJECTED),
    ],
)
def test_an_answer_is_classified_by_status_and_code(
    status: int | None, code: int | None, outcome: Outcome
) -> None:
    assert classify(status, code) is outcome


async def test_a_duplicate_carries_the_status_the_code_and_the_message(
    adapter: AlpacaAdapter,
) -> None:
    exc = api_error(422, {"code": DUPLICATE_CODE, "message": "client_order_id must be unique"})
    result = await adapter.perform(raising(exc))
    assert isinstance(result, Failed)
    assert result.outcome is Outcome.DUPLICATE
    assert result.error is not None
    assert (result.error.http_status, result.error.code) == (422, DUPLICATE_CODE)
    assert result.detail == "client_order_id must be unique"


async def test_a_server_error_is_unknown_and_says_its_status(adapter: AlpacaAdapter) -> None:
    result = await adapter.perform(raising(api_error(503, {"code": 1, "message": "busy"})))
    assert isinstance(result, Failed)
    assert result.outcome is Outcome.UNKNOWN
    assert result.http_status == 503
    assert result.detail == "HTTP 503: busy"


async def test_an_answer_that_is_not_alpacas_json_keeps_its_text(adapter: AlpacaAdapter) -> None:
    result = await adapter.perform(raising(api_error(400, "<html>bad gateway</html>")))
    assert isinstance(result, Failed)
    assert result.outcome is Outcome.REJECTED
    assert result.error is not None
    assert result.error.code is None
    assert result.detail == "<html>bad gateway</html>"


async def test_no_answer_is_unknown_with_the_transport_error(adapter: AlpacaAdapter) -> None:
    result = await adapter.perform(raising(requests.ConnectTimeout("timed out")))
    assert isinstance(result, Failed)
    assert result.outcome is Outcome.UNKNOWN
    assert result.error is not None
    assert result.error.transport == "ConnectTimeout"
    assert result.http_status is None
    assert result.detail == "ConnectTimeout: timed out"
    assert isinstance(result.error, BrokerCallError)


async def test_a_refusal_right_before_sending_sends_nothing(adapter: AlpacaAdapter) -> None:
    sent: list[str] = []
    request = BrokerRequest(lambda _c: sent.append("sent"), lambda _body: None)
    for refusal in (Refusal(Outcome.BLOCKED, "kill switch"), Refusal(Outcome.EXPIRED)):

        def refuse(said: Refusal = refusal) -> Refusal:
            return said

        result = await adapter.perform(request, precheck=refuse)
        assert isinstance(result, Failed)
        assert (result.outcome, result.detail, result.error) == (
            refusal.outcome,
            refusal.reason,
            None,
        )
    assert sent == []
    result = await adapter.perform(request, precheck=lambda: None)
    assert result == Ok(None)
    assert sent == ["sent"]


async def test_an_answer_is_parsed(adapter: AlpacaAdapter) -> None:
    request = BrokerRequest(lambda _c: {"client_order_id": "s1-a", "status": "new"}, parse_order)
    result = await adapter.perform(request)
    assert isinstance(result, Ok)
    assert (result.value.client_order_id, result.value.status) == ("s1-a", "accepted")


def test_a_bracket_order_is_sent_with_its_exits() -> None:
    intent = OrderIntent(
        intent_id="i1",
        symbol="AAPL",
        side="buy",
        qty=2.0,
        order_type="limit",
        limit_price=100.0,
        order_class="bracket",
        take_profit=110.0,
        stop_loss=90.0,
    )

    class Recorder:
        sent: Any = None

        def submit_order(self, order: Any) -> dict[str, Any]:
            self.sent = order
            return {"client_order_id": "s1-i1", "status": "accepted", "id": "p1"}

    recorder = Recorder()
    request = AlpacaAdapter.submit("s1-i1", intent)
    order = request.parse(request.send(recorder))  # type: ignore[arg-type]  # a recorder, not a client
    assert order.broker_order_id == "p1"
    sent = recorder.sent
    assert (sent.client_order_id, sent.qty, sent.limit_price) == ("s1-i1", 2.0, 100.0)
    assert (sent.order_class.value, sent.take_profit.limit_price, sent.stop_loss.stop_price) == (
        "bracket",
        110.0,
        90.0,
    )


def test_alpacas_statuses_in_contract_terms() -> None:
    assert parse_order({"client_order_id": "a", "status": "pending_new"}).status == "accepted"
    assert parse_order({"client_order_id": "a", "status": "canceled"}).status == "cancelled"
    assert parse_order({"client_order_id": "a", "status": "replaced"}).status == "cancelled"
    odd = parse_order({"client_order_id": "a", "status": "brand_new"})
    assert (odd.status, odd.detail) == ("accepted", "alpaca status brand_new")


def test_an_order_object_with_fills_time_and_legs() -> None:
    order = parse_order(
        {
            "client_order_id": "s1-i1",
            "id": "p1",
            "status": "partially_filled",
            "filled_qty": "1.5",
            "filled_avg_price": "101.25",
            "created_at": "2026-01-05T15:00:00.123456Z",
            "order_class": "bracket",
            "legs": [
                {"id": "l1", "client_order_id": "u1", "status": "held"},
                {"id": "", "client_order_id": "u2"},
                "not an order",
            ],
        }
    )
    assert (order.filled_qty, order.filled_avg_price, order.bracket) == (1.5, 101.25, True)
    assert order.created_at is not None
    assert order.created_at.microsecond == 123456
    assert order.legs is not None
    assert [leg.broker_order_id for leg in order.legs] == ["l1"]
    # No legs in the object (a look-up may leave them out) is not the same as none valid.
    assert parse_order({"client_order_id": "a", "legs": []}).legs is None
    assert parse_order({"client_order_id": "a", "legs": [{"id": "x"}]}).legs == ()
    assert parse_order({"client_order_id": "a", "filled_qty": "nan"}).filled_qty == 0.0


def test_the_account_positions_and_clock_as_one_status() -> None:
    status = account_status(
        {"equity": "10000.5", "cash": "2500"},
        [
            {"symbol": "AAPL", "qty": "3", "side": "long", "market_value": "600"},
            {"symbol": "TSLA", "qty": "2", "side": "short", "market_value": "-400"},
        ],
        {"is_open": True, "next_close": "2026-01-05T16:00:00-05:00"},
    )
    assert (status.connected, status.equity, status.cash) == (True, 10000.5, 2500.0)
    assert status.positions == {"AAPL": (3.0, 600.0), "TSLA": (-2.0, -400.0)}
    assert (status.market_open, status.session) == (True, "2026-01-05")
    bare = account_status({"equity": "1"})
    assert (bare.positions, bare.market_open, bare.session) == (None, None, None)
