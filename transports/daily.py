"""Daily rooms for ``daily`` sessions: the REST calls around a session, and the bot's transport.

Each ``daily`` session gets a private room of its own when it is created, with two meeting
tokens: one for the learner's client, one (owner) for the bot; the room is deleted when the
session ends. A phone call through Daily's pinless dial-in gets a SIP-enabled room and only the
bot's token (:func:`create_dialin_room`; the call's flow: :mod:`api.routes_dialin`). The REST
calls go through Pipecat's :class:`~pipecat.transports.daily.utils.DailyRESTHelper` (Daily REST API,
https://docs.daily.co/reference/rest-api: ``POST /rooms``, ``POST /meeting-tokens``,
``DELETE /rooms/:name``) on an aiohttp session with a timeout. Every failure (an HTTP 4xx/5xx,
no answer in time, Daily unreachable, an answer that is not a room) becomes :class:`DailyError`.

The API key comes from the environment (``DAILY_API_KEY``) only; it travels in the
``Authorization`` header and nowhere else: not in the session process's spec, not in a message.
"""

from __future__ import annotations

import json
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any
from urllib.parse import urlparse

import aiohttp
from loguru import logger
from pipecat.transports.daily.utils import (
    DailyMeetingTokenParams,
    DailyMeetingTokenProperties,
    DailyRESTHelper,
    DailyRoomObject,
    DailyRoomParams,
    DailyRoomProperties,
    DailyRoomSipParams,
)

from config.settings import provider_key
from contracts.session_spec import SessionSpec

if TYPE_CHECKING:
    from pipecat.transports.daily.transport import DailyTransport

DAILY_KEY_ENV = "DAILY_API_KEY"
"""Environment variable holding the Daily API key (Daily dashboard → Developers)."""
REQUEST_TIMEOUT_S = 10.0
"""Longest wait for one Daily REST call, seconds (read at call time)."""
ROOM_LIFETIME_S = 4 * 3600
"""Seconds a session's room lives at most, its ``exp``: everyone is ejected then
(``eject_at_room_exp``). The session's end deletes the room well before; ``exp`` is the
backstop for a room the server could not delete (Daily treats expired rooms as deleted)."""
MAX_PARTICIPANTS = 2
"""The learner and the bot."""
ROOM_PREFIX = "vt-"
"""Room names are ``vt-<session id>`` (Daily allows ``[A-Za-z0-9_-]``, at most 128 characters),
so a room whose creation timed out can still be found and deleted."""
_DETAIL_CHARS = 300
_DISPLAY_NAME_CHARS = 64


class DailyError(RuntimeError):
    """A Daily REST call failed; the message says which and why, never holding the API key."""


@dataclass(frozen=True)
class DailyRoom:
    """A session's Daily room.

    Attributes:
        name: Room name (``vt-<session id>``).
        url: Room URL (``https://<domain>.daily.co/<name>``), which both participants join.
        client_token: Meeting token for the learner's client (not an owner).
        bot_token: Meeting token for the bot (``is_owner``).
        expires_at: The room's ``exp``, Unix time in seconds.
    """

    name: str
    url: str
    client_token: str
    bot_token: str
    expires_at: int


@dataclass(frozen=True)
class DialinRoom:
    """A phone call's Daily room (pinless dial-in, :func:`create_dialin_room`).

    Attributes:
        name: Room name (``vt-<session id>``).
        url: Room URL, which the bot joins.
        bot_token: Meeting token for the bot (``is_owner``).
        expires_at: The room's ``exp``, Unix time in seconds.
        sip_endpoint: The room's SIP address as Daily reports it (``config.sip_uri.endpoint``),
            or ``None`` if absent. Informational: the call update uses the address the bot's
            transport receives with ``dialin-ready``.
    """

    name: str
    url: str
    bot_token: str
    expires_at: int
    sip_endpoint: str | None


def daily_api_key() -> str | None:
    """The Daily API key from ``DAILY_API_KEY``, or ``None`` when unset or empty."""
    return provider_key(DAILY_KEY_ENV)


def session_room_name(session_id: str) -> str:
    """The name of ``session_id``'s room: ``vt-<session id>``."""
    return f"{ROOM_PREFIX}{session_id}"


@asynccontextmanager
async def _rest(api_url: str, api_key: str) -> AsyncIterator[DailyRESTHelper]:
    timeout = aiohttp.ClientTimeout(total=REQUEST_TIMEOUT_S)
    async with aiohttp.ClientSession(timeout=timeout) as http:
        yield DailyRESTHelper(daily_api_key=api_key, daily_api_url=api_url, aiohttp_session=http)


def _failure(what: str, e: Exception, api_key: str) -> DailyError:
    """A :class:`DailyError` for ``e`` raised while trying to ``what``; the key is masked."""
    if isinstance(e, TimeoutError):
        detail = f"no answer within {REQUEST_TIMEOUT_S:g} s"
    elif isinstance(e, aiohttp.ContentTypeError | json.JSONDecodeError):
        detail = "Daily's answer was not JSON"
    elif isinstance(e, aiohttp.ClientError):
        detail = f"connection to Daily failed ({type(e).__name__})"
    else:  # DailyRESTHelper raises plain Exception with Daily's status and error body
        detail = " ".join(str(e).split())
    detail = detail.replace(api_key, "***")[:_DETAIL_CHARS]
    return DailyError(f"could not {what}: {detail}")


async def create_session_room(
    session_id: str,
    *,
    api_url: str,
    api_key: str,
    bot_name: str,
    lifetime_s: float = ROOM_LIFETIME_S,
) -> DailyRoom:
    """Create ``session_id``'s private room and its two meeting tokens.

    The room (Daily room properties, https://docs.daily.co/reference/rest-api/rooms/config):
    ``privacy: private`` (joining needs a token), ``exp`` = now + ``lifetime_s``,
    ``eject_at_room_exp``, ``max_participants: 2``, ``start_video_off`` (a voice session); the
    prebuilt UI's other properties keep ``DailyRoomProperties``' defaults. Both tokens are bound
    to the room (``room_name``) and expire with it (``exp``, ``eject_at_token_exp``: a token's
    own eject setting overrides the room's); the bot's is ``is_owner``, named ``bot_name``.

    Args:
        session_id: The store's session id; names the room.
        api_url: Daily REST base (``settings.daily_api_url``, e.g. ``https://api.daily.co/v1``).
        api_key: Daily API key.
        bot_name: The bot's display name in the call.
        lifetime_s: Seconds until the room expires.

    Returns:
        The room with its URL and both tokens.

    Raises:
        DailyError: A call failed or timed out (``REQUEST_TIMEOUT_S`` each); a room created
            before the failure (or possibly created by a call that timed out) is deleted first,
            best effort.
    """
    expires_at = int(time.time() + lifetime_s)
    properties = DailyRoomProperties(
        exp=expires_at,
        eject_at_room_exp=True,
        max_participants=MAX_PARTICIPANTS,
        start_video_off=True,
    )
    room, (bot_token, client_token) = await _room_with_tokens(
        session_room_name(session_id),
        properties,
        api_url=api_url,
        api_key=api_key,
        tokens=[("the bot's", True, bot_name), ("the learner's", False, None)],
    )
    return DailyRoom(
        name=room.name,
        url=room.url,
        client_token=client_token,
        bot_token=bot_token,
        expires_at=expires_at,
    )


async def create_dialin_room(
    session_id: str,
    *,
    api_url: str,
    api_key: str,
    bot_name: str,
    caller_name: str,
    lifetime_s: float = ROOM_LIFETIME_S,
) -> DialinRoom:
    """Create a phone call's room: SIP dial-in enabled, one SIP endpoint, the bot's token.

    Same room as :func:`create_session_room` (private, ``exp``, 2 participants: the bot and
    the caller's SIP leg) plus the ``sip`` property
    (https://docs.daily.co/guides/products/dial-in-dial-out/sip): ``sip_mode: "dial-in"``,
    ``num_endpoints: 1``, audio only, ``display_name`` = ``caller_name``. Daily answers with
    the read-only ``config.sip_uri.endpoint``. No learner token: the caller arrives over SIP
    once the bot's transport has sent ``pinlessCallUpdate``.

    The room stays ``private`` like every voxtutor room (Pipecat's runner creates public dial-in
    rooms with random names instead); the SIP leg is Daily's own participant of the room.

    Args:
        session_id: The store's session id; names the room (``vt-<session id>``).
        api_url: Daily REST base (``settings.daily_api_url``).
        api_key: Daily API key.
        bot_name: The bot's display name in the call.
        caller_name: The SIP participant's display name (the caller's number, or a label).
        lifetime_s: Seconds until the room expires.

    Raises:
        DailyError: As :func:`create_session_room`; nothing is left behind.
    """
    expires_at = int(time.time() + lifetime_s)
    properties = DailyRoomProperties(
        exp=expires_at,
        eject_at_room_exp=True,
        max_participants=MAX_PARTICIPANTS,
        start_video_off=True,
        sip=DailyRoomSipParams(
            display_name=caller_name[:_DISPLAY_NAME_CHARS],
            video=False,
            sip_mode="dial-in",
            num_endpoints=1,
        ),
    )
    room, (bot_token,) = await _room_with_tokens(
        session_room_name(session_id),
        properties,
        api_url=api_url,
        api_key=api_key,
        tokens=[("the bot's", True, bot_name)],
    )
    endpoint = (room.config.sip_uri or {}).get("endpoint")
    return DialinRoom(
        name=room.name,
        url=room.url,
        bot_token=bot_token,
        expires_at=expires_at,
        sip_endpoint=endpoint if isinstance(endpoint, str) else None,
    )


async def _room_with_tokens(
    name: str,
    properties: DailyRoomProperties,
    *,
    api_url: str,
    api_key: str,
    tokens: list[tuple[str, bool, str | None]],
) -> tuple[DailyRoomObject, list[str]]:
    """Create the private room ``name``, then one meeting token per ``(whose, owner, name)``.

    Tokens are bound to the room and expire with it. On any failure the room is deleted
    (best effort) and :class:`DailyError` names the step (``could not create the bot's Daily
    meeting token: …``).
    """
    expires_at = int(properties.exp or time.time() + ROOM_LIFETIME_S)
    step = "create the Daily room"
    async with _rest(api_url, api_key) as rest:
        try:
            room = await rest.create_room(
                DailyRoomParams(name=name, privacy="private", properties=properties)
            )
            issued = []
            for whose, owner, user_name in tokens:
                step = f"create {whose} Daily meeting token"
                issued.append(
                    await _token(rest, room.url, expires_at, owner=owner, user_name=user_name)
                )
        except Exception as e:
            error = _failure(step, e, api_key)
            try:
                await rest.delete_room_by_name(name)
            except Exception as cleanup:
                why = _failure(f"delete the Daily room {name}", cleanup, api_key)
                logger.warning(f"after a failed start: {why}")
            raise error from None
    return room, issued


async def _token(
    rest: DailyRESTHelper,
    room_url: str,
    expires_at: int,
    *,
    owner: bool,
    user_name: str | None = None,
) -> str:
    params = DailyMeetingTokenParams(properties=DailyMeetingTokenProperties(user_name=user_name))
    return await rest.get_token(
        room_url,
        expiry_time=expires_at - time.time(),
        eject_at_token_exp=True,
        owner=owner,
        params=params,
    )


async def delete_room(name: str, *, api_url: str, api_key: str) -> None:
    """Delete the room ``name`` (a room already gone counts as deleted: Daily answers 404).

    Raises:
        DailyError: Daily answered another error, or no answer within ``REQUEST_TIMEOUT_S``.
    """
    async with _rest(api_url, api_key) as rest:
        try:
            await rest.delete_room_by_name(name)
        except Exception as e:
            raise _failure(f"delete the Daily room {name}", e, api_key) from None


async def release_session_room(spec: SessionSpec, *, api_url: str) -> bool:
    """Delete the room of a ``daily`` session that ended or failed to start; never raises.

    Best effort: a failure is logged (the room then expires at its ``exp``).

    Args:
        spec: The session's spec; sessions without ``daily_room_url`` have nothing to delete.
        api_url: Daily REST base (``settings.daily_api_url``).

    Returns:
        Whether a room was deleted (or was already gone).
    """
    if spec.transport != "daily" or not spec.daily_room_url:
        return False
    log = logger.bind(session_id=spec.session_id)
    name = urlparse(spec.daily_room_url).path.strip("/")
    api_key = daily_api_key()
    if api_key is None:
        log.warning(f"Daily room {name} not deleted: {DAILY_KEY_ENV} is no longer set")
        return False
    try:
        await delete_room(name, api_url=api_url, api_key=api_key)
    except DailyError as e:
        log.warning(f"Daily room not deleted ({e}); it expires on its own")
        return False
    log.info(f"Daily room {name} deleted")
    return True


def daily_bot_transport(spec: SessionSpec, bot_name: str, api_url: str) -> DailyTransport:
    """The bot's side of a ``daily`` session: a ``DailyTransport`` for the spec's room.

    It joins ``spec.daily_room_url`` with the bot's meeting token when the pipeline starts
    (not here). Pipecat's ``DailyTransport`` also fires ``on_client_connected`` /
    ``on_client_disconnected`` when a participant joins / leaves (the learner's client, or a
    phone caller's SIP leg), so the session's usual handlers greet and end the session.

    A phone call's spec (``daily_call_id`` and ``daily_call_domain`` set, see
    :mod:`api.routes_dialin`) adds Pipecat's ``DailyDialinSettings``: once Daily reports the
    room's SIP endpoint ready (``dialin-ready``), the transport itself POSTs ``{callId,
    callDomain, sipUri}`` to ``{api_url}/dialin/pinlessCallUpdate`` with the API key from
    ``DAILY_API_KEY`` (this process's environment, never the spec), and Daily moves the held
    call into the room.

    Args:
        spec: A ``daily`` session's spec (``daily_room_url`` and ``daily_token`` set).
        bot_name: The bot's display name in the call.
        api_url: Daily REST base (``settings.daily_api_url``).

    Raises:
        ValueError: The spec has no room URL or token, or is a phone call's while
            ``DAILY_API_KEY`` is unset.
    """
    from pipecat.transports.daily.transport import (
        DailyDialinSettings,
        DailyParams,
        DailyTransport,
    )

    if not spec.daily_room_url or not spec.daily_token:
        raise ValueError("a daily session needs daily_room_url and daily_token in its spec")
    params = DailyParams(audio_in_enabled=True, audio_out_enabled=True, api_url=api_url)
    if spec.daily_call_id and spec.daily_call_domain:
        api_key = daily_api_key()
        if api_key is None:
            raise ValueError(f"a dial-in session needs {DAILY_KEY_ENV} to update the call")
        params.api_key = api_key
        params.dialin_settings = DailyDialinSettings(
            call_id=spec.daily_call_id, call_domain=spec.daily_call_domain
        )
    return DailyTransport(spec.daily_room_url, spec.daily_token, bot_name, params)


def end_on_dialin_failure(transport: DailyTransport, end: Callable[[str], Awaitable[None]]) -> None:
    """Await ``end(reason)`` once if a dial-in call cannot reach the bot's room.

    Pipecat reports a refused or failed ``pinlessCallUpdate`` only as a transport error (an
    ``on_error`` whose text names ``dialin-ready``), and Daily's own dial-in failures as
    ``on_dialin_error``; either way the caller never arrives, and without this the session
    would hold its slot until the idle timeout (300 s).
    """
    ended = False

    async def _end(reason: str) -> None:
        nonlocal ended
        if not ended:
            ended = True
            await end(reason)

    @transport.event_handler("on_error")
    async def _error(_t: Any, error: Any) -> None:
        if "dialin-ready" in str(error):
            await _end(f"dial-in failed: {error}")

    @transport.event_handler("on_dialin_error")
    async def _dialin_error(_t: Any, data: Any) -> None:
        await _end(f"dial-in failed: {data}")
