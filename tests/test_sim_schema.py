"""Every JSON body the venue answers validates against Alpaca's trading-api.json."""

from __future__ import annotations

from typing import Any

import pytest
import requests
from sim_harness import (
    KEY_ID,
    SECRET_KEY,
    SpecValidator,
    fast_config,
    load_spec,
    rest,
    running_venue,
    trade_stream,
)

pytestmark = pytest.mark.anyio

HEADERS = {"APCA-API-KEY-ID": KEY_ID, "APCA-API-SECRET-KEY": SECRET_KEY}


class Walker:
    """Calls one route, checks the status and validates the body against the spec."""

    def __init__(self, base_url: str, spec: SpecValidator) -> None:
        self.base_url = base_url
        self.spec = spec
        self.session = requests.Session()
        self.checked: set[tuple[str, str, int]] = set()

    def call(
        self,
        method: str,
        path: str,
        spec_path: str,
        status: int,
        *,
        json: dict[str, Any] | None = None,
        params: dict[str, str] | None = None,
    ) -> Any:
        response = self.session.request(
            method, self.base_url + path, json=json, params=params, headers=HEADERS, timeout=5
        )
        assert response.status_code == status, (method, path, response.status_code, response.text)
        assert response.headers["X-RateLimit-Limit"]
        if status == 204:
            assert response.text == ""
            return None
        body = response.json()
        if status < 300 or status == 207:
            self.spec.validate_response(spec_path, method, status, body)
        elif status == 401:
            self.spec.validate_schema("ErrorResponse", body)
        else:
            self.spec.validate_schema("Error", body)
        self.checked.add((method, spec_path, status))
        return body


def _walk(walker: Walker) -> None:
    call = walker.call
    call("GET", "/v2/account", "/v2/account", 200)
    call("GET", "/v2/clock", "/v2/clock", 200)
    call("GET", "/v2/assets/AAPL", "/v2/assets/{symbol_or_asset_id}", 200)

    orders = "/v2/orders"
    bodies = [
        {"symbol": "AAPL", "qty": "5", "side": "buy", "type": "market", "time_in_force": "day"},
        {
            "symbol": "MSFT",
            "notional": "1234.5",
            "side": "buy",
            "type": "market",
            "time_in_force": "day",
        },
        {"symbol": "TSLA", "qty": "2", "side": "sell", "type": "market", "time_in_force": "day"},
        {
            "symbol": "AAPL",
            "qty": "1",
            "side": "buy",
            "type": "limit",
            "limit_price": "1.5",
            "time_in_force": "gtc",
            "client_order_id": "schema-limit",
        },
        {
            "symbol": "AAPL",
            "qty": "1",
            "side": "buy",
            "type": "stop",
            "stop_price": "999",
            "time_in_force": "day",
        },
        {
            "symbol": "AAPL",
            "qty": "1",
            "side": "buy",
            "type": "stop_limit",
            "stop_price": "999",
            "limit_price": "1000",
            "time_in_force": "day",
        },
        {"symbol": "AAPL", "qty": "0.5", "side": "buy", "type": "market", "time_in_force": "day"},
    ]
    created = [call("POST", orders, orders, 200, json=body) for body in bodies]
    limit_id = created[3]["id"]
    call("GET", orders, orders, 200, params={"status": "all", "direction": "asc"})
    call("GET", orders, orders, 200, params={"status": "closed"})
    call("GET", f"{orders}/{limit_id}", "/v2/orders/{order_id}", 200)
    call(
        "GET",
        "/v2/orders:by_client_order_id",
        "/v2/orders:by_client_order_id",
        200,
        params={"client_order_id": "schema-limit"},
    )
    replacement = call(
        "PATCH", f"{orders}/{limit_id}", "/v2/orders/{order_id}", 200, json={"limit_price": "2"}
    )
    call("DELETE", f"{orders}/{replacement['id']}", "/v2/orders/{order_id}", 204)
    # Errors carry {code, message}.
    call("DELETE", f"{orders}/{replacement['id']}", "/v2/orders/{order_id}", 422)
    call("GET", f"{orders}/00000000-0000-4000-8000-000000000000", "/v2/orders/{order_id}", 404)
    call("POST", orders, orders, 422, json={**bodies[3]})
    call("POST", orders, orders, 403, json={**bodies[0], "qty": "100000"})
    call("DELETE", orders, orders, 207)


def _walk_positions(walker: Walker) -> None:
    call = walker.call
    positions = call("GET", "/v2/positions", "/v2/positions", 200)
    assert {p["side"] for p in positions} == {"long", "short"}
    for position in positions:
        call(
            "GET", f"/v2/positions/{position['symbol']}", "/v2/positions/{symbol_or_asset_id}", 200
        )
    call(
        "DELETE",
        "/v2/positions/AAPL",
        "/v2/positions/{symbol_or_asset_id}",
        200,
        params={"percentage": "50"},
    )
    call("DELETE", "/v2/positions", "/v2/positions", 207, params={"cancel_orders": "true"})
    call("GET", "/v2/account", "/v2/account", 200)


def _walk_account_endpoints(walker: Walker) -> None:
    call = walker.call
    call("GET", "/v2/assets", "/v2/assets", 200)
    call("GET", "/v2/calendar", "/v2/calendar", 200, params={"start": "2026-12-20"})
    call("GET", "/v2/account/configurations", "/v2/account/configurations", 200)
    call(
        "PATCH",
        "/v2/account/configurations",
        "/v2/account/configurations",
        200,
        json={"no_shorting": False},
    )
    call("GET", "/v2/account/activities", "/v2/account/activities", 200)
    call(
        "GET",
        "/v2/account/activities/FILL",
        "/v2/account/activities/{activity_type}",
        200,
    )
    call("GET", "/v2/account/portfolio/history", "/v2/account/portfolio/history", 200)
    bracket = {
        "symbol": "MSFT",
        "qty": "2",
        "side": "buy",
        "type": "limit",
        "limit_price": "300",
        "time_in_force": "gtc",
        "order_class": "bracket",
        "take_profit": {"limit_price": "500"},
        "stop_loss": {"stop_price": "250"},
    }
    created = call("POST", "/v2/orders", "/v2/orders", 200, json=bracket)
    assert len(created["legs"]) == 2
    call("GET", "/v2/orders", "/v2/orders", 200, params={"nested": "true"})
    trailing = {
        "symbol": "MSFT",
        "qty": "1",
        "side": "buy",
        "type": "trailing_stop",
        "trail_percent": "3",
        "time_in_force": "day",
    }
    call("POST", "/v2/orders", "/v2/orders", 200, json=trailing)


async def test_every_response_body_validates_against_the_spec() -> None:
    spec = load_spec()
    config = fast_config(shorting_enabled=True, partial_fill_probability=0.5)
    async with running_venue(config) as venue, trade_stream(venue) as (recorder, _):
        walker = Walker(venue.base_url, spec)
        await rest(_walk, walker)
        venue.match()
        venue.tick(3)
        await rest(_walk_positions, walker)
        await rest(_walk_account_endpoints, walker)
        unauthorized = await rest(
            requests.get, f"{venue.base_url}/v2/account", headers={}, timeout=5
        )
        assert unauthorized.status_code == 401
        spec.validate_schema("ErrorResponse", unauthorized.json())

        assert len(walker.checked) == 24
        # The order inside every stream event is an Order entity too.
        await recorder.wait_for(lambda u: u.event == "canceled")
        raw_orders = [event.order for event in venue.events]
        assert {event.event for event in venue.events} >= {
            "pending_new",
            "new",
            "fill",
            "canceled",
            "replaced",
        }
        for order in raw_orders:
            spec.validate_schema("Order", order)
        for event in venue.events:
            assert event.to_json()["order"] == event.order
