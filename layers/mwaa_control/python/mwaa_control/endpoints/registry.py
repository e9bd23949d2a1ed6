"""The registry of the endpoints this deployment created, in the state (lease) table.

One item per endpoint, ``pk = "endpoint#<vpce-id>"``, written right after CreateVpcEndpoint and
deleted once EC2 accepted the endpoint's deletion. The items carry no ``expires_at``: the table's
TTL, which collects expired leases, must never forget an endpoint we created.

Intents (``pk = "endpoint#intent#<client token>"``) are written BEFORE CreateVpcEndpoint and
deleted once the endpoint is registered: an endpoint whose registration failed is still vouched
for by its intent. They share the ``endpoint#`` prefix so the functions' IAM condition on
dynamodb:LeadingKeys covers them; endpoint ids (vpce-...) never start with ``intent#``.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from typing import Any

from botocore.exceptions import ClientError

from mwaa_control.models import EndpointIntent, EndpointRecord

_PREFIX = "endpoint#"
_INTENT_PREFIX = "endpoint#intent#"


class DynamoDbEndpointRegistry:
    def __init__(self, dynamodb: Any, table_name: str) -> None:
        self._dynamodb = dynamodb
        self._table = table_name

    def register(self, record: EndpointRecord) -> None:
        item = {
            "pk": {"S": _PREFIX + record.endpoint_id},
            "environment_arn": {"S": record.environment_arn},
            "service_name": {"S": record.service_name},
            "vpc_id": {"S": record.vpc_id},
            "created_at": {"S": record.created_at.isoformat()},
        }
        if record.role:
            item["role"] = {"S": record.role}
        # Unconditional: an idempotent re-create (same ClientToken) returns the same endpoint, whose
        # record is then written again with the same content.
        self._dynamodb.put_item(TableName=self._table, Item=item)

    def _fields(self, pk: str) -> dict[str, Any] | None:
        """The fields records and intents share, read consistently, or None when there is no item."""
        item = self._dynamodb.get_item(TableName=self._table, Key={"pk": {"S": pk}}, ConsistentRead=True).get("Item")
        if not item:
            return None
        return {
            "environment_arn": item["environment_arn"]["S"],
            "service_name": item["service_name"]["S"],
            "vpc_id": item["vpc_id"]["S"],
            "role": item.get("role", {}).get("S"),
            "created_at": datetime.fromisoformat(item["created_at"]["S"]),
        }

    def lookup(self, endpoint_ids: Sequence[str]) -> dict[str, EndpointRecord]:
        found: dict[str, EndpointRecord] = {}
        for endpoint_id in dict.fromkeys(endpoint_ids):
            if endpoint_id.startswith("intent#"):
                continue  # never an endpoint id; it would name an intent's item
            fields = self._fields(_PREFIX + endpoint_id)
            if fields is not None:
                found[endpoint_id] = EndpointRecord(endpoint_id=endpoint_id, **fields)
        return found

    def forget(self, endpoint_ids: Sequence[str]) -> None:
        for endpoint_id in endpoint_ids:
            self._dynamodb.delete_item(TableName=self._table, Key={"pk": {"S": _PREFIX + endpoint_id}})

    def record_intent(self, intent: EndpointIntent) -> None:
        item = {
            "pk": {"S": _INTENT_PREFIX + intent.client_token},
            "environment_arn": {"S": intent.environment_arn},
            "service_name": {"S": intent.service_name},
            "vpc_id": {"S": intent.vpc_id},
            "created_at": {"S": intent.created_at.isoformat()},
        }
        if intent.role:
            item["role"] = {"S": intent.role}
        # Without expires_at, like the records. The first intent stays: a retry (same token) must not
        # move created_at past the endpoint the first attempt created, or it would no longer vouch.
        try:
            self._dynamodb.put_item(TableName=self._table, Item=item, ConditionExpression="attribute_not_exists(pk)")
        except ClientError as error:
            if error.response.get("Error", {}).get("Code") != "ConditionalCheckFailedException":
                raise

    def lookup_intents(self, client_tokens: Sequence[str]) -> dict[str, EndpointIntent]:
        found: dict[str, EndpointIntent] = {}
        for token in dict.fromkeys(client_tokens):
            fields = self._fields(_INTENT_PREFIX + token)
            if fields is not None:
                found[token] = EndpointIntent(client_token=token, **fields)
        return found

    def forget_intents(self, client_tokens: Sequence[str]) -> None:
        for token in client_tokens:
            self._dynamodb.delete_item(TableName=self._table, Key={"pk": {"S": _INTENT_PREFIX + token}})
