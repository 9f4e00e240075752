"""Moving large payloads of protobuf messages into a payload store and back.

Every ``google.protobuf.StringValue`` inside a message (at any depth, in repeated fields and map
values too) is a payload: inputs, outputs, results, event data, custom status, entity state. The
helpers change the message in place.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator

from google.protobuf import message as pb_message
from google.protobuf import wrappers_pb2

from durabletask.payload.store import PayloadStore, PayloadTooLargeError

logger = logging.getLogger("durabletask-payloads")


def payload_fields(message: pb_message.Message) -> Iterator[wrappers_pb2.StringValue]:
    """Every set ``StringValue`` inside ``message``, depth first."""
    pending: list[pb_message.Message] = [message]
    while pending:
        current = pending.pop()
        for descriptor, value in current.ListFields():
            if descriptor.message_type is None:
                continue
            if descriptor.message_type.GetOptions().map_entry:
                values = list(value.values())
            elif descriptor.is_repeated:
                values = list(value)
            else:
                values = [value]
            for item in values:
                if isinstance(item, wrappers_pb2.StringValue):
                    yield item
                elif isinstance(item, pb_message.Message):
                    pending.append(item)


def _to_store(field: wrappers_pb2.StringValue, store: PayloadStore) -> bytes | None:
    """The bytes to store for ``field``, or None when it stays inline."""
    text = field.value
    if not text or store.is_known_token(text):
        return None
    data = text.encode("utf-8")
    options = store.options
    if len(data) <= options.threshold_bytes:
        return None
    if len(data) > options.max_stored_payload_bytes:
        raise PayloadTooLargeError(len(data), options.max_stored_payload_bytes)
    return data


def externalize_payloads(
    msg: pb_message.Message, store: PayloadStore, *, instance_id: str | None = None
) -> None:
    """Replace each payload of ``msg`` longer than the store's threshold by the token of its stored copy."""
    for field in payload_fields(msg):
        data = _to_store(field, store)
        if data is not None:
            field.value = store.upload(data, instance_id=instance_id)
            logger.debug("stored a payload of %d bytes as %s", len(data), field.value)


def deexternalize_payloads(msg: pb_message.Message, store: PayloadStore) -> None:
    """Replace each token of ``store`` found in ``msg`` by the payload it names."""
    for field in payload_fields(msg):
        if field.value and store.is_known_token(field.value):
            field.value = store.download(field.value).decode("utf-8")


async def externalize_payloads_async(
    msg: pb_message.Message, store: PayloadStore, *, instance_id: str | None = None
) -> None:
    """:func:`externalize_payloads` with the store's asynchronous upload."""
    for field in payload_fields(msg):
        data = _to_store(field, store)
        if data is not None:
            field.value = await store.upload_async(data, instance_id=instance_id)
            logger.debug("stored a payload of %d bytes as %s", len(data), field.value)


async def deexternalize_payloads_async(msg: pb_message.Message, store: PayloadStore) -> None:
    """:func:`deexternalize_payloads` with the store's asynchronous download."""
    for field in payload_fields(msg):
        if field.value and store.is_known_token(field.value):
            field.value = (await store.download_async(field.value)).decode("utf-8")
