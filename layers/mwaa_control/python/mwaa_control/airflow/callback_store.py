"""Callback adapters: the DynamoDB table where task tokens wait for their DAG run, and Step
Functions' SendTask* API the DAG reports through. Both run in the trigger Lambda and on MWAA
workers (with the environment's execution role), so they import only boto3.

Errors name the operation and AWS's error code, never AWS's message: a message may quote the
request, and the request carries the task token.
"""

from __future__ import annotations

from typing import Any

from botocore.exceptions import ClientError

from mwaa_control.adapters.clients import client
from mwaa_control.airflow.callback import CallbackRecord, CallbackRejected, CallbackStoreFailed


def _code(error: ClientError) -> str:
    return str(error.response.get("Error", {}).get("Code", "Unknown"))


class DynamoDbCallbackStore:
    """Records {pk: S, task_token: S, expires_at: N} in the control plane's table (TTL on expires_at)."""

    def __init__(self, dynamodb: Any, table: str) -> None:
        self._dynamodb = dynamodb
        self._table = table

    @property
    def table(self) -> str:
        return self._table

    def put(self, key: str, record: CallbackRecord) -> None:
        try:
            self._dynamodb.put_item(
                TableName=self._table,
                Item={
                    "pk": {"S": key},
                    "task_token": {"S": record.task_token},
                    "expires_at": {"N": str(record.expires_at)},
                },
                # A retried trigger stores the same token again (and refreshes the expiry); a
                # different token under the same id would hijack the callback, so it is refused.
                ConditionExpression="attribute_not_exists(pk) OR task_token = :token",
                ExpressionAttributeValues={":token": {"S": record.task_token}},
            )
        except ClientError as error:
            if _code(error) == "ConditionalCheckFailedException":
                raise CallbackStoreFailed(
                    f"{key} in {self._table} holds a different task token; refusing to replace it"
                ) from None
            raise CallbackStoreFailed(f"DynamoDB PutItem on {self._table} failed: {_code(error)}") from None

    def get(self, key: str) -> CallbackRecord | None:
        try:
            item = self._dynamodb.get_item(TableName=self._table, Key={"pk": {"S": key}}, ConsistentRead=True).get(
                "Item"
            )
        except ClientError as error:
            raise CallbackStoreFailed(f"DynamoDB GetItem on {self._table} failed: {_code(error)}") from None
        if not item:
            return None
        try:
            return CallbackRecord(task_token=item["task_token"]["S"], expires_at=int(item["expires_at"]["N"]))
        except (KeyError, ValueError):
            raise CallbackStoreFailed(f"{key} in {self._table} is not a callback record") from None

    def delete(self, key: str) -> None:
        try:
            self._dynamodb.delete_item(TableName=self._table, Key={"pk": {"S": key}})
        except ClientError as error:
            raise CallbackStoreFailed(f"DynamoDB DeleteItem on {self._table} failed: {_code(error)}") from None


class StepFunctionsTaskReporter:
    def __init__(self, stepfunctions: Any) -> None:
        self._sfn = stepfunctions

    def send_success(self, task_token: str, output: str) -> None:
        self._send("SendTaskSuccess", self._sfn.send_task_success, taskToken=task_token, output=output)

    def send_failure(self, task_token: str, error: str, cause: str) -> None:
        self._send("SendTaskFailure", self._sfn.send_task_failure, taskToken=task_token, error=error, cause=cause)

    def send_heartbeat(self, task_token: str) -> None:
        self._send("SendTaskHeartbeat", self._sfn.send_task_heartbeat, taskToken=task_token)

    @staticmethod
    def _send(operation: str, call: Any, **request: str) -> None:
        try:
            call(**request)
        except ClientError as error:
            # TaskTimedOut, InvalidToken, TaskDoesNotExist: the step is gone. Throttling was
            # already retried by botocore's standard mode.
            raise CallbackRejected(f"Step Functions refused {operation}: {_code(error)}") from None


def callback_store(table: str, *, region: str) -> DynamoDbCallbackStore:
    return DynamoDbCallbackStore(client("dynamodb", region=region), table)


def step_functions_reporter(*, region: str) -> StepFunctionsTaskReporter:
    return StepFunctionsTaskReporter(client("stepfunctions", region=region))
