"""The SQS side: the tagging queue that S3 notifications and tagging runs both feed."""

from __future__ import annotations

import json
import logging
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from botocore.exceptions import BotoCoreError, ClientError

from smarttags.adapters.clients import translate_aws_error

log = logging.getLogger(__name__)

SEND_BATCH = 10  # SQS's limit per SendMessageBatch


@dataclass(frozen=True)
class Received:
    """One received message: what the worker hands on, and the handle to delete or delay it by."""

    message_id: str
    receipt_handle: str
    body: str
    receive_count: int


class WorkQueue:
    def __init__(self, sqs_client: Any, queue_url: str) -> None:
        self._sqs = sqs_client
        self.url = queue_url

    @classmethod
    def by_name(cls, sqs_client: Any, name: str) -> WorkQueue:
        try:
            url = sqs_client.get_queue_url(QueueName=name)["QueueUrl"]
        except (ClientError, BotoCoreError) as exc:
            raise translate_aws_error(exc, "sqs") from exc
        return cls(sqs_client, str(url))

    def _call(self, operation: str, **kwargs: Any) -> Any:
        try:
            return getattr(self._sqs, operation)(QueueUrl=self.url, **kwargs)
        except (ClientError, BotoCoreError) as exc:
            raise translate_aws_error(exc, "sqs") from exc

    def send(self, bodies: Iterable[Mapping[str, Any]]) -> int:
        """Send JSON bodies in batches of ten; raise if SQS refuses any of them."""
        return self.send_raw(json.dumps(body) for body in bodies)

    def send_raw(self, bodies: Iterable[str]) -> int:
        """Send message bodies as they are (a redriven message keeps its exact body)."""
        sent = 0
        batch: list[dict[str, str]] = []

        def flush() -> None:
            nonlocal sent, batch
            if not batch:
                return
            response = self._call("send_message_batch", Entries=batch)
            if response.get("Failed"):
                first = response["Failed"][0]
                raise translate_aws_error(
                    ClientError(
                        {"Error": {"Code": first.get("Code", ""), "Message": first.get("Message", "")}},
                        "SendMessageBatch",
                    ),
                    "sqs",
                )
            sent += len(batch)
            batch = []

        for body in bodies:
            batch.append({"Id": str(len(batch)), "MessageBody": body})
            if len(batch) == SEND_BATCH:
                flush()
        flush()
        return sent

    def receive(
        self, *, max_messages: int = 10, wait_seconds: int = 10, visibility_seconds: int = 120
    ) -> list[Received]:
        response = self._call(
            "receive_message",
            MaxNumberOfMessages=max(1, min(10, max_messages)),
            WaitTimeSeconds=wait_seconds,
            VisibilityTimeout=visibility_seconds,
            AttributeNames=["ApproximateReceiveCount"],
        )
        return [
            Received(
                message_id=m["MessageId"],
                receipt_handle=m["ReceiptHandle"],
                body=m["Body"],
                receive_count=int(m.get("Attributes", {}).get("ApproximateReceiveCount", 1)),
            )
            for m in response.get("Messages", [])
        ]

    def delete(self, receipt_handles: Iterable[str]) -> None:
        entries = [{"Id": str(i), "ReceiptHandle": h} for i, h in enumerate(receipt_handles)]
        for start in range(0, len(entries), SEND_BATCH):
            self._call("delete_message_batch", Entries=entries[start : start + SEND_BATCH])

    def backoff(self, receipt_handle: str, seconds: int) -> None:
        """Make a failed message visible again after ``seconds`` instead of the full visibility timeout."""
        self._call("change_message_visibility", ReceiptHandle=receipt_handle, VisibilityTimeout=seconds)

    def extend(self, receipt_handles: Iterable[str], seconds: int) -> None:
        """Keep messages still being handled invisible for ``seconds`` more (a heartbeat)."""
        entries = [
            {"Id": str(i), "ReceiptHandle": h, "VisibilityTimeout": seconds} for i, h in enumerate(receipt_handles)
        ]
        for start in range(0, len(entries), SEND_BATCH):
            self._call("change_message_visibility_batch", Entries=entries[start : start + SEND_BATCH])

    def release(self, receipt_handles: Iterable[str]) -> None:
        """Make received messages visible again now (after looking at them without handling them)."""
        for handle in receipt_handles:
            self.backoff(handle, 0)

    def depth(self) -> dict[str, int]:
        attributes = self._call(
            "get_queue_attributes",
            AttributeNames=["ApproximateNumberOfMessages", "ApproximateNumberOfMessagesNotVisible"],
        )["Attributes"]
        return {
            "visible": int(attributes.get("ApproximateNumberOfMessages", 0)),
            "in_flight": int(attributes.get("ApproximateNumberOfMessagesNotVisible", 0)),
        }
