"""IAM as deployed, evaluated locally: the policies of template.yaml and participant.yaml, rendered
with their intrinsic functions and conditions, and an evaluator of IAM's policy language (actions,
resources and principals with wildcards, policy variables, condition operators with set and
IfExists forms, explicit deny).

The local cloud uses it to refuse calls a function's own policies would refuse on AWS (so a
workflow test proves the template allows what the code calls), and the template tests use it to
prove what it refuses. Written by hand: moto's IAM enforcement ignores conditions and policy
variables, and no maintained Python library evaluates them (policyuniverse and parliament expand or
lint actions; neither decides a request).
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from functools import cache
from typing import Any

from localcloud.template import stack_id

NO_VALUE = object()
ContextValue = str | bool | int | Sequence[str]


@dataclass(frozen=True)
class Deployment:
    """What CloudFormation would know when it renders a template."""

    template: dict[str, Any]
    stack_name: str = "mwaa-control"
    account: str = "123456789012"
    region: str = "us-east-1"
    partition: str = "aws"
    parameters: Mapping[str, str] = field(default_factory=dict)
    physical: Mapping[str, str] = field(default_factory=dict)
    """Ref values of resources, where the caller knows them (the local cloud's table names)."""


class Renderer:
    """Resolves Ref, Fn::Sub, Fn::GetAtt, Fn::Join, Fn::Split, Fn::Select, Fn::If and conditions."""

    def __init__(self, deployment: Deployment) -> None:
        self.d = deployment
        self.resources: dict[str, Any] = deployment.template.get("Resources", {})

    # --- names CloudFormation would give --------------------------------------------------
    _NAME_PROPERTIES = ("TableName", "QueueName", "TopicName", "RoleName", "BucketName", "Name")

    def _name(self, logical_id: str) -> str:
        if logical_id in self.d.physical:
            return self.d.physical[logical_id]
        props = self.resources.get(logical_id, {}).get("Properties", {})
        for key in self._NAME_PROPERTIES:
            if key in props:
                return str(self.render(props[key]))
        return f"{self.d.stack_name}-{logical_id}"

    def _arn(self, service: str, resource: str, *, region: bool = True, account: bool = True) -> str:
        return (
            f"arn:{self.d.partition}:{service}:{self.d.region if region else ''}:"
            f"{self.d.account if account else ''}:{resource}"
        )

    def ref(self, name: str) -> Any:
        pseudo = {
            "AWS::StackName": self.d.stack_name,
            "AWS::AccountId": self.d.account,
            "AWS::Region": self.d.region,
            "AWS::Partition": self.d.partition,
            "AWS::URLSuffix": "amazonaws.com",
            "AWS::StackId": stack_id(self.d.partition, self.d.region, self.d.account, self.d.stack_name),
        }
        if name == "AWS::NoValue":
            return NO_VALUE
        if name in pseudo:
            return pseudo[name]
        parameters = self.d.template.get("Parameters", {})
        if name in parameters:
            spec = parameters[name]
            value = self.d.parameters.get(name, str(spec.get("Default", "")))
            if spec.get("Type") == "CommaDelimitedList":
                return [v.strip() for v in value.split(",")] if value else [""]
            return value
        kind = self.resources[name]["Type"]
        if kind == "AWS::SNS::Topic":
            return self._arn("sns", self._name(name))
        if kind == "AWS::SQS::Queue":
            return f"https://sqs.{self.d.region}.amazonaws.com/{self.d.account}/{self._name(name)}"
        if kind == "AWS::IAM::ManagedPolicy":
            return self._arn("iam", f"policy/{self._name(name)}", region=False)
        return self._name(name)

    def get_att(self, logical_id: str, attribute: str) -> str:
        kind = self.resources[logical_id]["Type"] if logical_id in self.resources else _generated(logical_id)
        name = self._name(logical_id)
        if attribute in ("QueueName", "TopicName"):
            return name
        arns = {
            "AWS::DynamoDB::Table": lambda: self._arn("dynamodb", f"table/{name}"),
            "AWS::SQS::Queue": lambda: self._arn("sqs", name),
            "AWS::KMS::Key": lambda: self._arn("kms", f"key/{logical_id}"),
            "AWS::S3::Bucket": lambda: self._arn("s3", name, region=False, account=False),
            "AWS::Serverless::Function": lambda: self._arn("lambda", f"function:{logical_id}"),
            "AWS::Events::Rule": lambda: self._arn("events", f"rule/{name}"),
            "AWS::IAM::Role": lambda: self._arn("iam", f"role{self._role_path(logical_id)}{name}", region=False),
            "AWS::Logs::LogGroup": lambda: self._arn("logs", f"log-group:{name}:*"),
        }
        if attribute != "Arn" or kind not in arns:
            raise ValueError(f"cannot render Fn::GetAtt {logical_id}.{attribute} ({kind})")
        return arns[kind]()

    def _role_path(self, logical_id: str) -> str:
        path = self.resources[logical_id].get("Properties", {}).get("Path", "/")
        return str(self.render(path))

    # --- conditions and intrinsics -------------------------------------------------------
    def condition(self, name: str) -> bool:
        return bool(self.render(self.d.template.get("Conditions", {})[name]))

    def render(self, value: Any) -> Any:
        if isinstance(value, list):
            return [r for r in (self.render(v) for v in value) if r is not NO_VALUE]
        if not isinstance(value, dict):
            return value
        if len(value) == 1:
            [(key, arg)] = value.items()
            handler = self._intrinsics().get(key)
            if handler is not None:
                return handler(arg)
        rendered = {k: self.render(v) for k, v in value.items()}
        return {k: v for k, v in rendered.items() if v is not NO_VALUE}

    def _intrinsics(self) -> dict[str, Any]:
        return {
            "Ref": lambda a: self.ref(str(a)),
            "Fn::Sub": self._sub,
            "Fn::GetAtt": lambda a: self.get_att(*(a if isinstance(a, list) else str(a).split(".", 1))),
            "Fn::Join": lambda a: str(a[0]).join(_flatten(self.render(a[1]))),
            "Fn::Split": lambda a: str(self.render(a[1])).split(str(a[0])),
            "Fn::Select": lambda a: self.render(a[1])[int(self.render(a[0]))],
            "Fn::If": lambda a: self.render(a[1] if self.condition(a[0]) else a[2]),
            "Fn::Equals": lambda a: _scalar(self.render(a[0])) == _scalar(self.render(a[1])),
            "Fn::Not": lambda a: not self.render(a[0]),
            "Fn::And": lambda a: all(self.render(v) for v in a),
            "Fn::Or": lambda a: any(self.render(v) for v in a),
            "Condition": lambda a: self.condition(str(a)),
        }

    def _sub(self, arg: Any) -> str:
        text, variables = (arg, {}) if isinstance(arg, str) else (arg[0], arg[1])
        values = {k: self.render(v) for k, v in variables.items()}

        def replace(match: re.Match[str]) -> str:
            name = match.group(1)
            if name.startswith("!"):
                return "${" + name[1:] + "}"  # ${!Literal} is written as ${Literal}
            if name in values:
                return _scalar(values[name])
            if "." in name:
                return self.get_att(*name.split(".", 1))
            return _scalar(self.ref(name))

        return re.sub(r"\$\{([^}]+)\}", replace, text)


def _generated(logical_id: str) -> str:
    """Resources SAM generates: a function's EventBridge rule is <Function><EventId>."""
    return "AWS::Events::Rule"


def _scalar(value: Any) -> str:
    if isinstance(value, list):
        return ",".join(str(v) for v in value)
    return str(value)


def _flatten(values: Any) -> list[str]:
    out: list[str] = []
    for value in values if isinstance(values, list) else [values]:
        out += [str(v) for v in value] if isinstance(value, list) else [str(value)]
    return out


# --- policies of a template's principals ----------------------------------------------------
def _statements_of(document: Any) -> list[dict[str, Any]]:
    statements = document.get("Statement", []) if isinstance(document, dict) else []
    return list(statements) if isinstance(statements, list) else [statements]


def _sam_policy_template(renderer: Renderer, name: str, args: dict[str, Any]) -> list[dict[str, Any]]:
    d = renderer.d
    if name == "LambdaInvokePolicy":
        function = renderer.render(args["FunctionName"])
        arn = f"arn:{d.partition}:lambda:{d.region}:{d.account}:function:{function}"
        return [{"Effect": "Allow", "Action": "lambda:InvokeFunction", "Resource": [arn, f"{arn}:*"]}]
    if name == "SNSPublishMessagePolicy":
        topic = renderer.render(args["TopicName"])
        return [
            {
                "Effect": "Allow",
                "Action": "sns:Publish",
                "Resource": f"arn:{d.partition}:sns:{d.region}:{d.account}:{topic}",
            }
        ]
    if name == "EventBridgePutEventsPolicy":
        bus = renderer.render(args["EventBusName"])
        return [
            {
                "Effect": "Allow",
                "Action": "events:PutEvents",
                "Resource": f"arn:{d.partition}:events:{d.region}:{d.account}:event-bus/{bus}",
            }
        ]
    raise ValueError(f"SAM policy template {name} is not known to the local IAM")


def principal_statements(deployment: Deployment, logical_id: str) -> list[dict[str, Any]]:
    """Every identity-policy statement of a function, state machine or role, rendered."""
    renderer = Renderer(deployment)
    resources = renderer.resources
    resource = resources[logical_id]
    props = resource.get("Properties", {})
    found: list[dict[str, Any]] = []
    if resource["Type"] == "AWS::IAM::Role":
        for policy in props.get("Policies", []):
            found += _statements_of(renderer.render(policy["PolicyDocument"]))
        for arn in props.get("ManagedPolicyArns", []):
            found += _managed(renderer, arn)
        return found
    if "Role" in props:
        role = props["Role"]
        target = role.get("Fn::GetAtt") if isinstance(role, dict) else None
        if target is None:
            raise ValueError(f"{logical_id}: the local IAM follows only Role: !GetAtt <Role>.Arn")
        role_id = target[0] if isinstance(target, list) else str(target).split(".")[0]
        return principal_statements(deployment, role_id)
    for policy in props.get("Policies", []):
        if isinstance(policy, str) or (isinstance(policy, dict) and "Ref" in policy):
            found += _managed(renderer, policy)
            continue
        chosen = renderer.render(policy) if isinstance(policy, dict) and "Fn::If" in policy else policy
        if chosen is NO_VALUE:
            continue
        if isinstance(chosen, dict) and "Statement" in chosen:
            found += _statements_of(renderer.render(chosen))
        elif isinstance(chosen, dict) and len(chosen) == 1:
            [(name, args)] = chosen.items()
            found += _sam_policy_template(renderer, name, args or {})
    return found


def _managed(renderer: Renderer, reference: Any) -> list[dict[str, Any]]:
    if isinstance(reference, dict) and "Ref" in reference and reference["Ref"] in renderer.resources:
        document = renderer.resources[reference["Ref"]]["Properties"]["PolicyDocument"]
        return _statements_of(renderer.render(document))
    return []  # an AWS-managed policy (logs, X-Ray): outside what this stack decides


def resource_policy(deployment: Deployment, logical_id: str, path: Sequence[str]) -> list[dict[str, Any]]:
    """A resource's own policy (key policy, queue policy, trust policy), rendered."""
    renderer = Renderer(deployment)
    node: Any = renderer.resources[logical_id]["Properties"]
    for key in path:
        node = node[key]
    return _statements_of(renderer.render(node))


# --- evaluation --------------------------------------------------------------------------------
@dataclass(frozen=True)
class Request:
    action: str
    resource: str = "*"
    context: Mapping[str, ContextValue] = field(default_factory=dict)
    principal: str | None = None
    """For resource policies: the calling principal's ARN, or a service name (events.amazonaws.com)."""


def is_allowed(statements: Iterable[Mapping[str, Any]], request: Request) -> bool:
    """IAM's decision for one policy set: an explicit deny wins, then an allow, else deny."""
    allowed = False
    for statement in statements:
        if not _applies(statement, request):
            continue
        if statement.get("Effect") == "Deny":
            return False
        allowed = True
    return allowed


def _as_list(value: Any) -> list[Any]:
    if value is None:
        return []
    return list(value) if isinstance(value, list | tuple) else [value]


@cache
def _pattern(text: str, ignore_case: bool) -> re.Pattern[str]:
    body = "".join(".*" if c == "*" else "." if c == "?" else re.escape(c) for c in text)
    return re.compile(f"^{body}$", re.IGNORECASE | re.DOTALL if ignore_case else re.DOTALL)


def _like(value: str, pattern: str, *, ignore_case: bool = False) -> bool:
    return bool(_pattern(pattern, ignore_case).match(value))


_VARIABLE = re.compile(r"\$\{([^}]+)\}")


def _substitute(text: str, context: Mapping[str, ContextValue]) -> str | None:
    """Policy variables (${aws:PrincipalTag/x}); None when one is missing (the element then matches nothing)."""
    missing = False

    def replace(match: re.Match[str]) -> str:
        nonlocal missing
        key = match.group(1)
        if key in ("*", "?", "$"):
            return key
        value = _lookup(context, key)
        if value is None or isinstance(value, list | tuple):
            missing = True
            return ""
        return str(value)

    result = _VARIABLE.sub(replace, text)
    return None if missing else result


def _lookup(context: Mapping[str, ContextValue], key: str) -> ContextValue | None:
    """Condition key names ignore case; the tag key after `aws:ResourceTag/` and the like does not
    (EC2 tag keys are case-sensitive)."""
    prefix, _, qualifier = key.partition("/")
    for name, value in context.items():
        name_prefix, _, name_qualifier = name.partition("/")
        if name_prefix.lower() == prefix.lower() and name_qualifier == qualifier:
            return value
    return None


def _arn_like(value: str, pattern: str) -> bool:
    """ARNs match segment by segment: a wildcard never spans the ':' between partition, service,
    region, account and resource (the resource part may hold ':' itself)."""
    values, patterns = value.split(":", 5), pattern.split(":", 5)
    if len(values) != 6 or len(patterns) != 6:
        return _like(value, pattern)
    return all(_like(v, p) for v, p in zip(values, patterns, strict=True))


def _applies(statement: Mapping[str, Any], request: Request) -> bool:
    actions = _as_list(statement.get("Action", statement.get("NotAction")))
    named = any(_like(request.action, str(a), ignore_case=True) for a in actions)
    if named != ("Action" in statement):
        return False
    if "Resource" in statement or "NotResource" in statement:
        patterns = statement.get("Resource", statement.get("NotResource"))
        if _matches_any(request.resource, patterns, request.context) != ("Resource" in statement):
            return False
    if request.principal is not None:
        if "Principal" in statement and not _principal_matches(statement["Principal"], request.principal):
            return False
        if "NotPrincipal" in statement and _principal_matches(statement["NotPrincipal"], request.principal):
            return False
    return all(
        _condition(operator, key, expected, request.context)
        for operator, block in (statement.get("Condition") or {}).items()
        for key, expected in block.items()
    )


def _matches_any(value: str, patterns: Any, context: Mapping[str, ContextValue]) -> bool:
    for pattern in _as_list(patterns):
        resolved = _substitute(str(pattern), context)
        if resolved is not None and (
            _arn_like(value, resolved) if value.startswith("arn:") else _like(value, resolved)
        ):
            return True
    return False


def _principal_matches(principal: Any, caller: str) -> bool:
    if principal == "*":
        return True
    for kind, values in (principal or {}).items():
        for raw in _as_list(values):
            value = str(raw)
            if value in ("*", caller):
                return True
            if kind == "AWS" and re.fullmatch(r"\d{12}", value) and f":{value}:" in caller:
                return True
            root = re.fullmatch(r"arn:[^:]+:iam::(\d{12}):root", value)
            if kind == "AWS" and root and caller.startswith("arn:") and caller.split(":")[4] == root.group(1):
                return True
    return False


_NEGATED = ("StringNotEquals", "StringNotEqualsIgnoreCase", "StringNotLike", "ArnNotEquals", "ArnNotLike")


def _condition(operator: str, key: str, expected: Any, context: Mapping[str, ContextValue]) -> bool:
    quantifier = ""
    if ":" in operator:
        quantifier, operator = operator.split(":", 1)
    if_exists = operator.endswith("IfExists")
    operator = operator.removesuffix("IfExists")
    actual = _lookup(context, key)
    wanted = [str(v).lower() if isinstance(v, bool) else str(v) for v in _as_list(expected)]
    if operator == "Null":
        return (actual is None) == (wanted[0].lower() == "true")
    if actual is None:
        if quantifier:
            # An absent (empty) set: every member matches vacuously, no member matches.
            return quantifier == "ForAllValues"
        return if_exists or operator in _NEGATED
    values = [str(v).lower() if isinstance(v, bool) else str(v) for v in _as_list(actual)]
    resolved = [w for w in (_substitute(w, context) for w in wanted) if w is not None]

    def one(value: str) -> bool:
        return _compare(operator, value, resolved)

    if quantifier == "ForAllValues":
        return all(one(v) for v in values)
    if quantifier == "ForAnyValue":
        return any(one(v) for v in values)
    if operator in _NEGATED:
        return all(one(v) for v in values)
    return any(one(v) for v in values)


def _compare(operator: str, value: str, wanted: list[str]) -> bool:
    match operator:
        case "StringEquals" | "ArnEquals" | "Bool":
            return value in wanted if operator != "Bool" else value.lower() in [w.lower() for w in wanted]
        case "StringEqualsIgnoreCase":
            return value.lower() in [w.lower() for w in wanted]
        case "StringLike":
            return any(_like(value, w) for w in wanted)
        case "ArnLike":
            return any(_arn_like(value, w) for w in wanted)
        case "StringNotEquals" | "ArnNotEquals":
            return value not in wanted
        case "StringNotEqualsIgnoreCase":
            return value.lower() not in [w.lower() for w in wanted]
        case "StringNotLike":
            return not any(_like(value, w) for w in wanted)
        case "ArnNotLike":
            return not any(_arn_like(value, w) for w in wanted)
        case "NumericEquals":
            return any(float(value) == float(w) for w in wanted)
        case "NumericLessThan":
            return any(float(value) < float(w) for w in wanted)
        case "NumericLessThanEquals":
            return any(float(value) <= float(w) for w in wanted)
        case "NumericGreaterThan":
            return any(float(value) > float(w) for w in wanted)
        case "NumericGreaterThanEquals":
            return any(float(value) >= float(w) for w in wanted)
    raise ValueError(f"condition operator {operator} is not known to the local IAM")


# --- enforcement in the local cloud ---------------------------------------------------------
class AccessDenied(Exception):
    """Raised inside botocore's parameter-build hook; converted to the service's error shape."""


@dataclass
class FunctionPermissions:
    """Checks calls made from inside a function's handler against that function's template policies.

    Calls made outside a handler (tests, the demo, Step Functions' aws-sdk tasks) are the operator's
    and stay allowed. Enforced: EC2 endpoint calls, DynamoDB item calls, STS AssumeRole, and (through
    the MWAA emulator's hook) airflow:* calls: what the functions use.
    """

    deployment: Deployment
    current_function: Any
    """A ContextVar[str | None] holding the logical id of the function whose handler is running."""
    ec2_lookup: Any = None
    """(account, region, endpoint_id) -> (service name, tags) of an endpoint, for resource conditions."""
    _statements: dict[str, list[dict[str, Any]]] = field(default_factory=dict)
    refusals: list[tuple[str, str, str]] = field(default_factory=list)

    def statements(self, function: str) -> list[dict[str, Any]]:
        if function not in self._statements:
            self._statements[function] = principal_statements(self.deployment, function)
        return self._statements[function]

    participant: Deployment | None = None
    """participant.yaml as deployed in the participant accounts: a function reaches another account's
    resources only through the reader role it assumed there, so such calls are judged by that role."""
    participant_role: str = "ReaderRole"

    def allows(self, action: str, resource: str, context: Mapping[str, ContextValue] | None = None) -> bool:
        function = self.current_function.get()
        if function is None:
            return True
        statements = self.statements(function)
        account = resource.split(":")[4] if resource.count(":") >= 5 else ""
        if (
            self.participant is not None
            and action.startswith("airflow:")
            and account not in ("", self.deployment.account)
        ):
            d = self.participant
            foreign = Deployment(d.template, d.stack_name, account, d.region, d.partition, d.parameters, d.physical)
            statements = principal_statements(foreign, self.participant_role)
        decision = is_allowed(statements, Request(action, resource, context or {}))
        if not decision:
            self.refusals.append((function, action, resource))
        return decision

    def _arn(self, service: str, resource: str, *, region: bool = True) -> str:
        d = self.deployment
        return f"arn:{d.partition}:{service}:{d.region if region else ''}:{d.account}:{resource}"

    def requests_for(
        self, service: str, operation: str, params: Mapping[str, Any]
    ) -> list[tuple[str, str, dict[str, Any]]]:
        """The (action, resource, context) triples IAM evaluates for one call (service authorisation reference)."""
        action = f"{service}:{operation}"
        if service == "ec2" and operation == "CreateVpcEndpoint":
            tags = {t["Key"]: t["Value"] for spec in params.get("TagSpecifications", []) for t in spec.get("Tags", [])}
            request_tags: dict[str, Any] = {f"aws:RequestTag/{k}": v for k, v in tags.items()}
            request_tags["aws:TagKeys"] = list(tags)
            endpoint = {**request_tags, "ec2:VpceServiceName": params.get("ServiceName", "")}
            found: list[tuple[str, str, dict[str, Any]]] = [
                (action, self._arn("ec2", f"vpc/{params.get('VpcId')}"), {})
            ]
            found += [(action, self._arn("ec2", f"subnet/{s}"), {}) for s in params.get("SubnetIds", [])]
            found += [(action, self._arn("ec2", f"security-group/{g}"), {}) for g in params.get("SecurityGroupIds", [])]
            found.append((action, self._arn("ec2", "vpc-endpoint/*"), endpoint))
            if tags:
                found.append(
                    (
                        "ec2:CreateTags",
                        self._arn("ec2", "vpc-endpoint/*"),
                        {**request_tags, "ec2:CreateAction": operation},
                    )
                )
            return found
        if service == "ec2" and operation in ("DeleteVpcEndpoints", "ModifyVpcEndpoint"):
            ids = params.get("VpcEndpointIds") or [params.get("VpcEndpointId")]
            found = []
            for endpoint_id in ids:
                service_name, tags = self.ec2_lookup(endpoint_id) if self.ec2_lookup else ("", {})
                context = {f"aws:ResourceTag/{k}": v for k, v in tags.items()}
                context["ec2:VpceServiceName"] = service_name
                found.append((action, self._arn("ec2", f"vpc-endpoint/{endpoint_id}"), context))
            return found
        if service == "ec2":
            return [(action, "*", {})]
        if service == "dynamodb" and "TableName" in params:
            key = params.get("Key") or params.get("Item") or {}
            leading = [str(v.get("S", "")) for k, v in key.items() if k == "pk"]
            return [(action, self._arn("dynamodb", f"table/{params['TableName']}"), {"dynamodb:LeadingKeys": leading})]
        if service == "sts" and operation == "AssumeRole":
            role = str(params.get("RoleArn", ""))
            account = role.split(":")[4] if role.count(":") >= 5 else ""
            return [(action, role, {"aws:ResourceAccount": account})]
        return []

    def check(self, service: str, operation: str, params: Mapping[str, Any]) -> None:
        for action, resource, context in self.requests_for(service, operation, params):
            if not self.allows(action, resource, context):
                raise AccessDenied(f"{self.current_function.get()} is not authorized to perform {action} on {resource}")
