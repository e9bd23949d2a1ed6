"""boto3 clients with the project's one retry policy (botocore standard mode) and timeouts."""

from __future__ import annotations

from typing import Any

import boto3
from botocore.config import Config

RETRY_CONFIG = Config(
    retries={"mode": "standard", "max_attempts": 5},
    connect_timeout=5,
    read_timeout=30,
    user_agent_appid="mwaa-control",
)


def client(service: str, *, region: str | None = None, session: boto3.session.Session | None = None) -> Any:
    return (session or boto3.session.Session()).client(service, region_name=region, config=RETRY_CONFIG)


def assumed_session(role_arn: str, *, region: str, session_name: str = "mwaa-control") -> boto3.session.Session:
    """A session with the credentials of a role in another account (shared-VPC participants)."""
    credentials = client("sts", region=region).assume_role(RoleArn=role_arn, RoleSessionName=session_name)[
        "Credentials"
    ]
    return boto3.session.Session(
        aws_access_key_id=credentials["AccessKeyId"],
        aws_secret_access_key=credentials["SecretAccessKey"],
        aws_session_token=credentials["SessionToken"],
        region_name=region,
    )
