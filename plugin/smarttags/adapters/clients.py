"""Every client SmartTags talks through, built from :class:`~smarttags.settings.Settings` in one place.

Also the two translators from botocore / opensearch-py exceptions into our error tree (``errors.py``),
which classify by exception type, HTTP status and AWS error *code*, never by message text; and
:func:`ensure_bucket_and_queue`, which wires bucket -> SQS queue -> dead-letter queue as AWS does.

Secrets (passwords, secret keys) are passed to the clients and never logged or put into messages.
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit

import boto3
import opensearchpy
from botocore.config import Config
from botocore.exceptions import (
    BotoCoreError,
    ClientError,
    HTTPClientError,
    NoCredentialsError,
    NoRegionError,
    PartialCredentialsError,
)
from botocore.exceptions import ConnectionError as BotoConnectionError
from opensearchpy import exceptions as os_exc

from smarttags import errors
from smarttags.settings import Settings

if TYPE_CHECKING:
    from mypy_boto3_s3 import S3Client
    from mypy_boto3_sqs import SQSClient

logger = logging.getLogger(__name__)

LOOPBACK_HOSTS = frozenset({"127.0.0.1", "localhost", "::1"})
# Credentials for a loopback endpoint (moto) when settings name none: moto accepts any key, and a dev
# machine must not need (or leak) real AWS credentials to talk to it.
_LOCAL_KEY_ID = "smarttags-local"
_LOCAL_SECRET = "smarttags-local-secret"  # not a secret: only moto on 127.0.0.1 sees it

# AWS error codes meaning "we reached the service and it refused who we are".
_CREDENTIAL_CODES = frozenset(
    {
        "InvalidAccessKeyId",
        "SignatureDoesNotMatch",
        "ExpiredToken",
        "ExpiredTokenException",
        "AccessDenied",
        "AccessDeniedException",
        "UnrecognizedClientException",
        "InvalidClientTokenId",
        "InvalidSecurity",
        "InvalidToken",
        "MissingAuthenticationToken",
        "AuthFailure",
        "403",  # HEAD requests carry no body, only the status as code
    }
)
_NOT_FOUND_CODES = frozenset(
    {
        "NoSuchBucket",
        "NoSuchKey",
        "NotFound",
        "404",
        "AWS.SimpleQueueService.NonExistentQueue",
        "QueueDoesNotExist",
    }
)
# Throttling and server-side trouble: worth a later retry.
_UNAVAILABLE_CODES = frozenset(
    {
        "SlowDown",
        "ServiceUnavailable",
        "InternalError",
        "RequestTimeout",
        "Throttling",
        "ThrottlingException",
        "RequestThrottled",
        "RequestLimitExceeded",
        "500",
        "502",
        "503",
        "504",
    }
)


def is_loopback_url(url: str | None) -> bool:
    """True for http(s) URLs on this machine: services the embedded stack may start and stop."""
    if not url:
        return False
    return (urlsplit(url).hostname or "") in LOOPBACK_HOSTS


# --- AWS ---------------------------------------------------------------------------------------------


def aws_session(settings: Settings) -> boto3.session.Session:
    """A boto3 session: static keys only if the settings name them, else boto3's provider chain.

    The provider chain (environment, profile, container or instance role) refreshes its credentials by
    itself; nothing here freezes them.
    """
    aws = settings.aws
    if aws.access_key_id is not None and aws.secret_access_key is not None:
        return boto3.session.Session(
            aws_access_key_id=aws.access_key_id.get_secret_value(),
            aws_secret_access_key=aws.secret_access_key.get_secret_value(),
            region_name=aws.region,
        )
    if is_loopback_url(aws.endpoint_url):
        return boto3.session.Session(
            aws_access_key_id=_LOCAL_KEY_ID, aws_secret_access_key=_LOCAL_SECRET, region_name=aws.region
        )
    return boto3.session.Session(region_name=aws.region)


def _client_config(settings: Settings, **extra: Any) -> Config:
    # read_timeout stays above SQS's longest long poll (20 s).
    return Config(
        region_name=settings.aws.region,
        connect_timeout=5,
        read_timeout=60,
        retries={"max_attempts": settings.aws.max_attempts, "mode": "standard"},
        **extra,
    )


def s3_client(settings: Settings, session: boto3.session.Session | None = None) -> S3Client:
    session = session or aws_session(settings)
    # Path-style for local endpoints: bucket.127.0.0.1 does not resolve.
    extra = {"s3": {"addressing_style": "path"}} if is_loopback_url(settings.aws.endpoint_url) else {}
    return session.client("s3", endpoint_url=settings.aws.endpoint_url, config=_client_config(settings, **extra))


def sqs_client(settings: Settings, session: boto3.session.Session | None = None) -> SQSClient:
    session = session or aws_session(settings)
    return session.client("sqs", endpoint_url=settings.aws.endpoint_url, config=_client_config(settings))


def aws_error_code(exc: BaseException) -> str | None:
    """The AWS error code of a ClientError (e.g. ``NoSuchKey``), else None."""
    if isinstance(exc, ClientError):
        return str(exc.response.get("Error", {}).get("Code", "")) or None
    return None


def translate_aws_error(exc: BaseException, service: str) -> errors.SmartTagsError:
    """Map a botocore exception to our error tree. ``service`` names it in the message ("s3", "sqs")."""
    if isinstance(exc, errors.SmartTagsError):
        return exc
    if isinstance(exc, BotoConnectionError | HTTPClientError):
        # EndpointConnectionError, ConnectTimeoutError, SSLError, proxy errors (ConnectionError);
        # ReadTimeoutError, ConnectionClosedError (HTTPClientError).
        return errors.ServiceUnavailable(service, f"cannot reach the endpoint ({type(exc).__name__})")
    if isinstance(exc, NoCredentialsError | PartialCredentialsError):
        return errors.CredentialsRejected(service, "no usable AWS credentials found by the provider chain")
    if isinstance(exc, NoRegionError):
        return errors.ConfigError("SMARTTAGS_AWS__REGION", "no AWS region configured")
    if isinstance(exc, ClientError):
        code = aws_error_code(exc) or "Unknown"
        status = exc.response.get("ResponseMetadata", {}).get("HTTPStatusCode")
        operation = exc.operation_name
        if code in _CREDENTIAL_CODES:
            # Only the code: some credential errors echo request details we don't want in logs.
            return errors.CredentialsRejected(service, f"{operation} refused: {code}")
        if code in _NOT_FOUND_CODES:
            return errors.NotFound(f"{service}: {operation}: {code}")
        if code in _UNAVAILABLE_CODES or (isinstance(status, int) and status >= 500):
            return errors.ServiceUnavailable(service, f"{operation} failed: {code} (HTTP {status})")
        message = exc.response.get("Error", {}).get("Message", "")
        return errors.ServiceError(service, f"{operation} failed: {code} {message}".rstrip())
    if isinstance(exc, BotoCoreError):
        return errors.ServiceError(service, type(exc).__name__)
    return errors.ServiceError(service, f"unexpected {type(exc).__name__}")


# --- OpenSearch --------------------------------------------------------------------------------------


def opensearch_client(settings: Settings, session: boto3.session.Session | None = None) -> opensearchpy.OpenSearch:
    """An OpenSearch client for ``settings.opensearch``: no auth, basic auth or AWS SigV4."""
    cfg = settings.opensearch
    kwargs: dict[str, Any] = {
        "hosts": [cfg.url],
        "timeout": cfg.timeout_seconds,
        "max_retries": 2,
        "retry_on_timeout": True,
        "verify_certs": cfg.verify_certs,
        "ssl_show_warn": cfg.verify_certs,
        # Worker threads, decode threads and the admin's request threads share one client.
        "pool_maxsize": 16,
    }
    if cfg.auth == "basic":
        assert cfg.username is not None and cfg.password is not None  # settings validated this
        kwargs["http_auth"] = (cfg.username, cfg.password.get_secret_value())
    elif cfg.auth == "sigv4":
        assert cfg.region is not None  # settings validated this
        session = session or aws_session(settings)
        credentials = session.get_credentials()
        if credentials is None:
            raise errors.CredentialsRejected("opensearch", "no AWS credentials found for SigV4 signing")
        # The signer asks these (refreshable) credentials for a frozen copy on every request.
        kwargs["http_auth"] = opensearchpy.AWSV4SignerAuth(credentials, cfg.region, cfg.service)
        kwargs["connection_class"] = opensearchpy.RequestsHttpConnection
    logger.debug("OpenSearch client for %s (auth=%s)", cfg.url, cfg.auth)
    return opensearchpy.OpenSearch(**kwargs)


def translate_opensearch_error(exc: BaseException) -> errors.SmartTagsError:
    """Map an opensearch-py exception to our error tree, by exception class and HTTP status."""
    if isinstance(exc, errors.SmartTagsError):
        return exc
    service = "opensearch"
    if isinstance(exc, os_exc.ConnectionError):  # also ConnectionTimeout and SSLError
        return errors.ServiceUnavailable(service, f"cannot reach the cluster ({type(exc).__name__})")
    if isinstance(exc, os_exc.AuthenticationException | os_exc.AuthorizationException):
        return errors.CredentialsRejected(service, f"HTTP {exc.status_code}: credentials refused")
    if isinstance(exc, os_exc.ConflictError):
        return errors.ConflictError(service, f"version conflict: {exc.error}")
    if isinstance(exc, os_exc.NotFoundError):
        return errors.NotFound(f"{service}: {exc.error}")
    if isinstance(exc, os_exc.RequestError):
        return errors.RequestError(f"{service} refused the request: {exc.error}")
    if isinstance(exc, os_exc.TransportError):
        status = exc.status_code
        if isinstance(status, int) and (status == 429 or status >= 500):
            return errors.ServiceUnavailable(service, f"HTTP {status}: {exc.error}")
        return errors.ServiceError(service, f"HTTP {status}: {exc.error}")
    return errors.ServiceError(service, f"unexpected {type(exc).__name__}")


# --- Bucket -> queue wiring --------------------------------------------------------------------------

NOTIFICATION_ID = "smarttags-tagging"
NOTIFIED_EVENTS = ("s3:ObjectCreated:*", "s3:ObjectRemoved:*")


@dataclass(frozen=True)
class QueueWiring:
    bucket: str
    queue_url: str
    queue_arn: str
    dead_letter_queue_url: str
    dead_letter_queue_arn: str


def ensure_bucket_and_queue(settings: Settings) -> QueueWiring:
    """Create, idempotently, the bucket, the tagging queue, its DLQ and the S3 -> SQS notification, and
    the bucket of SmartTags' own files (``aws.own_bucket``), which has no notification: our thumbnails and
    models never reach the queue.

    As on AWS: the queue redrives to the DLQ after ``max_receive_count`` receives, the queue policy lets
    only this bucket's S3 notifications send to it, and the bucket notifies ObjectCreated/ObjectRemoved.
    Other notification configurations already on the bucket are kept. Note that S3 sends an
    ``s3:TestEvent`` message to the queue when the notification is (re)configured.
    """
    aws = settings.aws
    session = aws_session(settings)
    s3 = s3_client(settings, session)
    sqs = sqs_client(settings, session)
    try:
        _ensure_bucket(s3, aws.bucket, aws.region)
        _ensure_bucket(s3, aws.own_bucket, aws.region)
        dlq_url = sqs.create_queue(QueueName=aws.dead_letter_queue_name)["QueueUrl"]
        dlq_arn = _queue_arn(sqs, dlq_url)
        queue_url = sqs.create_queue(QueueName=aws.queue_name)["QueueUrl"]
        queue_arn = _queue_arn(sqs, queue_url)
        bucket_arn = f"arn:aws:s3:::{aws.bucket}"
        policy = {
            "Version": "2012-10-17",
            "Statement": [
                {
                    "Sid": "AllowBucketNotifications",
                    "Effect": "Allow",
                    "Principal": {"Service": "s3.amazonaws.com"},
                    "Action": "sqs:SendMessage",
                    "Resource": queue_arn,
                    "Condition": {"ArnLike": {"aws:SourceArn": bucket_arn}},
                }
            ],
        }
        redrive = {"deadLetterTargetArn": dlq_arn, "maxReceiveCount": str(aws.max_receive_count)}
        sqs.set_queue_attributes(
            QueueUrl=queue_url,
            Attributes={"Policy": json.dumps(policy), "RedrivePolicy": json.dumps(redrive)},
        )
        _ensure_notification(s3, aws.bucket, queue_arn)
    except (ClientError, BotoCoreError) as exc:
        raise translate_aws_error(exc, "s3/sqs") from exc
    logger.info("bucket %s notifies queue %s (DLQ %s)", aws.bucket, aws.queue_name, aws.dead_letter_queue_name)
    return QueueWiring(aws.bucket, queue_url, queue_arn, dlq_url, dlq_arn)


def _ensure_bucket(s3: S3Client, bucket: str, region: str) -> None:
    try:
        if region == "us-east-1":  # the one region that refuses an explicit LocationConstraint
            s3.create_bucket(Bucket=bucket)
        else:
            s3.create_bucket(Bucket=bucket, CreateBucketConfiguration={"LocationConstraint": region})  # type: ignore[typeddict-item]
    except ClientError as exc:
        if aws_error_code(exc) != "BucketAlreadyOwnedByYou":
            raise


def _queue_arn(sqs: SQSClient, queue_url: str) -> str:
    attributes = sqs.get_queue_attributes(QueueUrl=queue_url, AttributeNames=["QueueArn"])["Attributes"]
    return attributes["QueueArn"]


def _ensure_notification(s3: S3Client, bucket: str, queue_arn: str) -> None:
    current = s3.get_bucket_notification_configuration(Bucket=bucket)
    ours = {"Id": NOTIFICATION_ID, "QueueArn": queue_arn, "Events": list(NOTIFIED_EVENTS)}
    existing = current.get("QueueConfigurations", [])
    for entry in existing:
        same_events = sorted(entry.get("Events", [])) == sorted(NOTIFIED_EVENTS)
        if entry.get("Id") == NOTIFICATION_ID and entry.get("QueueArn") == queue_arn and same_events:
            return  # already wired: a second put would only send another s3:TestEvent
    others = [q for q in existing if q.get("Id") != NOTIFICATION_ID]
    config: dict[str, Any] = {"QueueConfigurations": [*others, ours]}
    for key in ("TopicConfigurations", "LambdaFunctionConfigurations", "EventBridgeConfiguration"):
        if key in current:
            config[key] = current[key]  # type: ignore[literal-required]
    s3.put_bucket_notification_configuration(Bucket=bucket, NotificationConfiguration=config)  # type: ignore[arg-type]
