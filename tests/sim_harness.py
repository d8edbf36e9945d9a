"""Test harness for the paper venue: run it in-process, listen with alpaca-py, check the spec.

* :func:`running_venue` starts a :class:`PaperVenue` on a free port in the test's
  event loop and stops it afterwards.
* :func:`trade_stream` runs an unmodified alpaca-py ``TradingStream`` in the same
  loop and records every trade update; :meth:`Recorder.wait_for` waits for the
  update a test expects, with a timeout (no sleeps).
* :func:`rest` calls the synchronous alpaca-py REST clients from a worker thread.
* :class:`SpecValidator` validates JSON bodies against trading-api.json.
"""

from __future__ import annotations

import copy
import json
import os
from contextlib import asynccontextmanager
from functools import partial
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

import anyio
import pytest
from alpaca.data.historical import StockHistoricalDataClient
from alpaca.data.models import Quote
from alpaca.data.requests import StockLatestQuoteRequest
from alpaca.trading.client import TradingClient
from alpaca.trading.models import (
    Asset,
    Clock,
    ClosePositionResponse,
    Order,
    Position,
    TradeAccount,
)
from alpaca.trading.requests import CancelOrderResponse
from alpaca.trading.stream import TradingStream
from jsonschema import Draft202012Validator  # type: ignore[import-untyped]  # no stubs in the dev dependencies
from referencing import Registry, Resource
from referencing.jsonschema import DRAFT202012

from sim import PaperVenue, SimConfig

if TYPE_CHECKING:
    from collections.abc import AsyncIterator, Callable
    from uuid import UUID

    from alpaca.trading.models import TradeUpdate
    from alpaca.trading.requests import (
        ClosePositionRequest,
        GetOrdersRequest,
        OrderRequest,
        ReplaceOrderRequest,
    )

T = TypeVar("T")

KEY_ID = "PKTESTKEY"
SECRET_KEY = "test-secret"
SPEC_URI = "urn:tradeguard:alpaca-trading-api"
WAIT_S = 10.0


def fast_config(**overrides: Any) -> SimConfig:
    """A venue config for tests: free port, quick ticks, no random partial fills."""
    settings: dict[str, Any] = {
        "clock": "always-open",  # tests run at any hour: hold the market open unless asked
        "port": 0,
        "tick_interval_s": 0.05,
        "fill_delay_s": 0.0,
        "partial_fill_probability": 0.0,
    }
    settings.update(overrides)
    return SimConfig(**settings)


@asynccontextmanager
async def running_venue(config: SimConfig | None = None) -> AsyncIterator[PaperVenue]:
    """A venue serving on a free port for the duration of the block."""
    venue = PaperVenue(config or fast_config())
    async with anyio.create_task_group() as tg:
        await tg.start(venue.run)
        try:
            yield venue
        finally:
            tg.cancel_scope.cancel()


async def rest(func: Callable[..., T], *args: Any, **kwargs: Any) -> T:
    """Run a blocking call (alpaca-py, requests) in a worker thread."""
    return await anyio.to_thread.run_sync(partial(func, *args, **kwargs))


def _narrow(value: object, kind: type[T]) -> T:
    assert isinstance(value, kind), value
    return value


def _narrow_list(value: object, kind: type[T]) -> list[T]:
    assert isinstance(value, list), value
    return [_narrow(item, kind) for item in value]


class Broker:
    """Unmodified alpaca-py clients pointed at the venue, called from worker threads.

    alpaca-py annotates every result as ``Model | RawData``; these methods narrow
    the result to the model so tests stay typed.

    Args:
        base_url: The venue's base URL.
        key_id: API key id.
        secret_key: API secret key.
        retry_wait_s: Wait between alpaca-py's 429/504 retries (its default is 3 s).
    """

    def __init__(
        self,
        base_url: str,
        key_id: str = KEY_ID,
        secret_key: str = SECRET_KEY,
        retry_wait_s: int | None = None,
    ) -> None:
        """Create the trading and data clients."""
        self.trading = TradingClient(key_id, secret_key, url_override=base_url)
        if retry_wait_s is not None:
            self.trading._retry_wait = retry_wait_s
        self.data = StockHistoricalDataClient(key_id, secret_key, url_override=base_url)

    async def account(self) -> TradeAccount:
        """``get_account``."""
        return _narrow(await rest(self.trading.get_account), TradeAccount)

    async def clock(self) -> Clock:
        """``get_clock``."""
        return _narrow(await rest(self.trading.get_clock), Clock)

    async def asset(self, symbol: str) -> Asset:
        """``get_asset``."""
        return _narrow(await rest(self.trading.get_asset, symbol), Asset)

    async def submit(self, request: OrderRequest) -> Order:
        """``submit_order``."""
        return _narrow(await rest(self.trading.submit_order, request), Order)

    async def order(self, order_id: UUID | str) -> Order:
        """``get_order_by_id``."""
        return _narrow(await rest(self.trading.get_order_by_id, order_id), Order)

    async def order_by_client_id(self, client_order_id: str) -> Order:
        """``get_order_by_client_id``."""
        return _narrow(await rest(self.trading.get_order_by_client_id, client_order_id), Order)

    async def orders(self, query: GetOrdersRequest | None = None) -> list[Order]:
        """``get_orders``."""
        return _narrow_list(await rest(self.trading.get_orders, query), Order)

    async def replace(self, order_id: UUID | str, request: ReplaceOrderRequest) -> Order:
        """``replace_order_by_id``."""
        return _narrow(await rest(self.trading.replace_order_by_id, order_id, request), Order)

    async def cancel(self, order_id: UUID | str) -> None:
        """``cancel_order_by_id``."""
        await rest(self.trading.cancel_order_by_id, order_id)

    async def cancel_all(self) -> list[CancelOrderResponse]:
        """``cancel_orders``."""
        return _narrow_list(await rest(self.trading.cancel_orders), CancelOrderResponse)

    async def positions(self) -> list[Position]:
        """``get_all_positions``."""
        return _narrow_list(await rest(self.trading.get_all_positions), Position)

    async def position(self, symbol: str) -> Position:
        """``get_open_position``."""
        return _narrow(await rest(self.trading.get_open_position, symbol), Position)

    async def close_position(
        self, symbol: str, request: ClosePositionRequest | None = None
    ) -> Order:
        """``close_position``."""
        return _narrow(await rest(self.trading.close_position, symbol, request), Order)

    async def close_all(self, *, cancel_orders: bool) -> list[ClosePositionResponse]:
        """``close_all_positions``."""
        closed = await rest(self.trading.close_all_positions, cancel_orders=cancel_orders)
        return _narrow_list(closed, ClosePositionResponse)

    async def latest_quotes(self, symbols: str | list[str]) -> dict[str, Quote]:
        """``StockHistoricalDataClient.get_stock_latest_quote``."""
        request = StockLatestQuoteRequest(symbol_or_symbols=symbols)
        quotes = await rest(self.data.get_stock_latest_quote, request)
        assert isinstance(quotes, dict)
        return {str(symbol): _narrow(quote, Quote) for symbol, quote in quotes.items()}


class Recorder:
    """Collects alpaca-py ``TradeUpdate`` objects as the stream hands them over."""

    def __init__(self) -> None:
        """Start empty."""
        self.updates: list[TradeUpdate] = []
        self._changed = anyio.Event()

    async def handler(self, update: TradeUpdate) -> None:
        """The coroutine given to ``TradingStream.subscribe_trade_updates``."""
        self.updates.append(update)
        changed, self._changed = self._changed, anyio.Event()
        changed.set()

    async def wait_for(
        self, predicate: Callable[[TradeUpdate], bool], within_s: float = WAIT_S
    ) -> TradeUpdate:
        """The first recorded update matching ``predicate`` (waits for it)."""
        seen = 0
        with anyio.fail_after(within_s):
            while True:
                changed = self._changed
                for update in self.updates[seen:]:
                    if predicate(update):
                        return update
                seen = len(self.updates)
                await changed.wait()

    async def wait_event(
        self, order_id: object, event: str, within_s: float = WAIT_S
    ) -> TradeUpdate:
        """The update ``event`` of the order with ``order_id``."""
        return await self.wait_for(
            lambda u: str(u.order.id) == str(order_id) and event_name(u) == event, within_s
        )

    def events_of(self, order_id: object) -> list[str]:
        """Event names recorded for one order, in arrival order."""
        return [event_name(u) for u in self.updates if str(u.order.id) == str(order_id)]


def event_name(update: TradeUpdate) -> str:
    """The event of an update as a plain string (alpaca-py gives an enum)."""
    event = update.event
    return str(getattr(event, "value", event))


@asynccontextmanager
async def trade_stream(
    venue: PaperVenue, key_id: str = KEY_ID, secret_key: str = SECRET_KEY
) -> AsyncIterator[tuple[Recorder, TradingStream]]:
    """An alpaca-py TradingStream listening to the venue, in this event loop.

    On exit the stream is asked to stop and its connection is cut, so its
    ``_run_forever`` returns instead of waiting out its 5 s receive timeout.
    """
    stream = TradingStream(key_id, secret_key, url_override=venue.stream_url)
    # Reconnect quickly after injected drops (alpaca-py's default backoff starts at 1 s).
    stream._reconnect_min_backoff = 0.05
    stream._reconnect_max_backoff = 0.2
    recorder = Recorder()
    stream.subscribe_trade_updates(recorder.handler)
    finished = anyio.Event()

    async def run() -> None:
        try:
            await stream._run_forever()  # type: ignore[no-untyped-call]  # unannotated in alpaca-py
        finally:
            finished.set()

    async with anyio.create_task_group() as tg:
        tg.start_soon(run)
        with anyio.fail_after(WAIT_S):
            await venue.streams.wait_for_listener(key_id)
        try:
            yield recorder, stream
        finally:
            with anyio.CancelScope(shield=True):
                await stream.stop_ws()
                with anyio.move_on_after(WAIT_S) as scope:
                    while not finished.is_set():
                        venue.drop_streams()
                        with anyio.move_on_after(0.5):
                            await finished.wait()
                if scope.cancelled_caught:
                    tg.cancel_scope.cancel()
                await stream.close()


# ---------------------------------------------------------------- the spec


def spec_path() -> Path:
    """Where trading-api.json is: ``$TRADEGUARD_ALPACA_SPEC`` or ``../shared/alpaca``."""
    env = os.environ.get("TRADEGUARD_ALPACA_SPEC")
    if env:
        return Path(env)
    return Path(__file__).resolve().parents[2] / "shared/alpaca/trading-api.json"


def _openapi_to_json_schema(node: Any) -> Any:
    """Translate OpenAPI 3.0 ``nullable`` into JSON Schema, recursively."""
    if isinstance(node, list):
        return [_openapi_to_json_schema(item) for item in node]
    if not isinstance(node, dict):
        return node
    out = {key: _openapi_to_json_schema(value) for key, value in node.items()}
    if out.pop("nullable", False) is True:
        if "type" in out and "$ref" not in out:
            types = out["type"] if isinstance(out["type"], list) else [out["type"]]
            out["type"] = [*types, "null"]
            if "enum" in out:
                out["enum"] = [*out["enum"], None]
        else:
            return {"anyOf": [out, {"type": "null"}]}
    return out


class SpecValidator:
    """Validates bodies against the response schemas of trading-api.json."""

    def __init__(self, path: Path) -> None:
        """Load and translate the spec."""
        raw = json.loads(path.read_text(encoding="utf-8"))
        self.spec = _openapi_to_json_schema(copy.deepcopy(raw))
        resource = Resource.from_contents(self.spec, default_specification=DRAFT202012)
        self._registry: Registry[Any] = Registry().with_resource(SPEC_URI, resource)

    def _validator(self, pointer: str) -> Draft202012Validator:
        return Draft202012Validator(
            {"$ref": f"{SPEC_URI}#{pointer}"},
            registry=self._registry,
            format_checker=Draft202012Validator.FORMAT_CHECKER,
        )

    def response_pointer(self, path: str, method: str, status: int) -> str:
        """JSON pointer of the response schema of ``method path`` answering ``status``."""
        operation = self.spec["paths"][path][method.lower()]
        response = operation["responses"][str(status)]
        assert "application/json" in response.get("content", {}), (path, method, status)
        escaped = path.replace("~", "~0").replace("/", "~1")
        return (
            f"/paths/{escaped}/{method.lower()}/responses/{status}/content/application~1json/schema"
        )

    def validate_response(self, path: str, method: str, status: int, body: Any) -> None:
        """Raise ``jsonschema.ValidationError`` unless ``body`` fits the spec."""
        self._validator(self.response_pointer(path, method, status)).validate(body)

    def validate_schema(self, name: str, body: Any) -> None:
        """Validate against ``#/components/schemas/<name>``."""
        self._validator(f"/components/schemas/{name}").validate(body)


def load_spec() -> SpecValidator:
    """The spec validator, or skip the test when the spec file is absent."""
    path = spec_path()
    if not path.is_file():
        pytest.skip(f"Alpaca spec not found at {path} (set TRADEGUARD_ALPACA_SPEC)")
    return SpecValidator(path)
