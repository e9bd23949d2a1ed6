"""Which environments follow which schedule: one fleet document plus two tags per environment.

Why both, and who owns what:
- Schedules and holiday calendars live only in the fleet document (YAML or JSON, deployed with the
  stack). They are structured (periods, time zones, dates) and shared by many environments: a tag
  value (256 characters, no validation when written) cannot hold them, and one reviewed document
  changed through the stack's deployment is where a platform team wants them.
- The opt-in is only the tag `mwaa-control:pause-resume=enabled`, the same tag the pause guard
  checks and IAM requires on airflow:DeleteEnvironment: the document can never make the control
  plane delete an environment its owners did not mark, however it is edited.
- The assignment comes from the document's `environments` (central). The tag
  `mwaa-control:schedule=<name>` on the environment may confirm it (both must agree; a disagreement
  is refused, not resolved by precedence, because either side may be the stale one), and assigns a
  schedule by itself only when the document sets `allow_tag_assignment: true` (self-service for the
  teams that own environments). Off by default: otherwise anyone allowed to tag an environment could
  have it paused, that is deleted and recreated, on a schedule every day.
A paused environment does not exist in MWAA and has no tags to list: callers pass the tags kept in
its snapshot.

Invalid configuration never pauses anything: a document with any problem is refused as a whole
(`ScheduleConfigError`, every problem listed, each with its field path and the environments it
affects); a bad tag refuses only that environment (`FleetPlan.refused`).
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, TypeAdapter, ValidationError

from mwaa_control.errors import ControlPlaneError
from mwaa_control.pause.models import OPT_IN_TAG, OPT_IN_VALUE, EnvironmentName
from mwaa_control.schedules.model import HolidayCalendar, Schedule, ScheduleName

SCHEDULE_TAG = "mwaa-control:schedule"
DOCUMENT_KEYS = frozenset({"version", "schedules", "calendars", "environments", "allow_tag_assignment"})
_ENVIRONMENT_NAME: TypeAdapter[str] = TypeAdapter(EnvironmentName)
_SCHEDULE_NAME: TypeAdapter[str] = TypeAdapter(ScheduleName)


class _Frozen(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")


class ConfigProblem(_Frozen):
    field: str
    """Dotted path in the document (`schedules.office.timezone`) or `tags.<key>`."""
    message: str
    environment: str | None = None

    def __str__(self) -> str:
        where = f"environment {self.environment!r}, " if self.environment else ""
        return f"{where}{self.field}: {self.message}"


class ScheduleConfigError(ControlPlaneError):
    """The schedule configuration is refused; nothing it would schedule is paused or resumed."""

    def __init__(self, problems: list[ConfigProblem]) -> None:
        self.problems = tuple(problems)
        listed = "\n".join(f"- {p}" for p in self.problems)
        super().__init__(f"invalid schedule configuration ({len(self.problems)} problem(s)):\n{listed}")


class FleetDocument(_Frozen):
    version: Literal[1] = 1
    schedules: dict[str, Schedule]
    calendars: dict[str, HolidayCalendar]
    environments: dict[str, str]
    """Environment name -> schedule name."""
    allow_tag_assignment: bool = False
    """Whether an environment's own `mwaa-control:schedule` tag may assign it a schedule that the
    document does not list. Off by default: with it, anyone allowed to tag an environment could have
    it paused (deleted) on a schedule every day; off, a tag can only confirm the document."""

    def calendar_of(self, schedule: Schedule) -> HolidayCalendar | None:
        return None if schedule.calendar is None else self.calendars[schedule.calendar]


def _path(prefix: str, loc: tuple[int | str, ...]) -> str:
    return ".".join([prefix, *(str(part) for part in loc)]) if loc else prefix


def _problems(prefix: str, error: ValidationError, environment: str | None = None) -> list[ConfigProblem]:
    return [
        ConfigProblem(
            field=_path(prefix, tuple(e["loc"])),
            message=e["msg"].removeprefix("Value error, "),
            environment=environment,
        )
        for e in error.errors(include_url=False)
    ]


def _section(raw: Mapping[str, Any], key: str, problems: list[ConfigProblem]) -> dict[str, Any]:
    value = raw.get(key, {})
    if value is None:
        return {}
    if not isinstance(value, Mapping):
        problems.append(ConfigProblem(field=key, message="must be a mapping of names"))
        return {}
    return dict(value)


def _named(kind: str, name: Any, body: Any, problems: list[ConfigProblem]) -> dict[str, Any] | None:
    """A section entry's body with its key as its name, or None (problem recorded)."""
    field = f"{kind}.{name}"
    if not isinstance(body, Mapping):
        problems.append(ConfigProblem(field=field, message="must be a mapping"))
        return None
    if "name" in body and body["name"] != name:
        problems.append(ConfigProblem(field=f"{field}.name", message=f"differs from its key {name!r}"))
        return None
    return {**body, "name": name}


def _parse_calendars(raw: Mapping[str, Any], problems: list[ConfigProblem]) -> dict[str, HolidayCalendar]:
    calendars: dict[str, HolidayCalendar] = {}
    for name, body in raw.items():
        named = _named("calendars", name, body, problems)
        if named is not None:
            try:
                calendars[name] = HolidayCalendar.model_validate(named)
            except ValidationError as error:
                problems.extend(_problems(f"calendars.{name}", error))
    return calendars


def _parse_schedules(
    raw: Mapping[str, Any],
    raw_calendars: Mapping[str, Any],
    calendars: Mapping[str, HolidayCalendar],
    problems: list[ConfigProblem],
) -> dict[str, Schedule]:
    schedules: dict[str, Schedule] = {}
    for name, body in raw.items():
        named = _named("schedules", name, body, problems)
        if named is None:
            continue
        try:
            schedule = Schedule.model_validate(named)
        except ValidationError as error:
            problems.extend(_problems(f"schedules.{name}", error))
            continue
        if schedule.calendar is not None and schedule.calendar not in calendars:
            missing = "is invalid" if schedule.calendar in raw_calendars else "does not exist"
            problems.append(
                ConfigProblem(field=f"schedules.{name}.calendar", message=f"calendar {schedule.calendar!r} {missing}")
            )
            continue
        schedules[name] = schedule
    return schedules


def _parse_environments(
    raw: Mapping[str, Any],
    raw_schedules: Mapping[str, Any],
    schedules: Mapping[str, Schedule],
    problems: list[ConfigProblem],
) -> dict[str, str]:
    environments: dict[str, str] = {}
    for environment, body in raw.items():
        field = f"environments.{environment}"
        try:
            _ENVIRONMENT_NAME.validate_python(environment)
        except ValidationError:
            problems.append(
                ConfigProblem(field=field, message="is not an MWAA environment name", environment=environment)
            )
            continue
        assigned = body.get("schedule") if isinstance(body, Mapping) else body
        if isinstance(body, Mapping) and set(body) - {"schedule"}:
            extra = ", ".join(sorted(str(k) for k in set(body) - {"schedule"}))
            problems.append(ConfigProblem(field=field, message=f"unknown keys: {extra}", environment=environment))
        if not isinstance(assigned, str):
            message = "must name a schedule"
        elif assigned in schedules:
            environments[environment] = assigned
            continue
        elif assigned in raw_schedules:
            message = f"schedule {assigned!r} is invalid (see schedules.{assigned})"
        else:
            message = f"no schedule named {assigned!r}"
        problems.append(ConfigProblem(field=f"{field}.schedule", message=message, environment=environment))
    return environments


def parse_fleet_document(raw: Mapping[str, Any]) -> FleetDocument:
    """Validate a whole fleet document; every problem is reported at once.

    ```yaml
    version: 1
    calendars:
      de-holidays: {holidays: [{date: 2026-12-25, action: stay-paused, name: Christmas}]}
    schedules:
      office-berlin:
        timezone: Europe/Berlin
        calendar: de-holidays
        ready_by: {percentile: 90}
        periods: [{days: [mon, tue, wed, thu, fri], start: "07:00", stop: "19:00"}]
    environments:
      analytics-dev: office-berlin          # or {schedule: office-berlin}
    ```
    """
    problems: list[ConfigProblem] = []
    for key in sorted(set(raw) - DOCUMENT_KEYS):
        problems.append(
            ConfigProblem(field=str(key), message=f"unknown key (expected {', '.join(sorted(DOCUMENT_KEYS))})")
        )
    if raw.get("version", 1) != 1:
        problems.append(
            ConfigProblem(field="version", message=f"unsupported version {raw.get('version')!r} (expected 1)")
        )
    raw_calendars = _section(raw, "calendars", problems)
    calendars = _parse_calendars(raw_calendars, problems)
    raw_schedules = _section(raw, "schedules", problems)
    schedules = _parse_schedules(raw_schedules, raw_calendars, calendars, problems)
    environments = _parse_environments(_section(raw, "environments", problems), raw_schedules, schedules, problems)
    allow_tags = raw.get("allow_tag_assignment", False)
    if not isinstance(allow_tags, bool):
        problems.append(ConfigProblem(field="allow_tag_assignment", message=f"{allow_tags!r} is not true or false"))
    if problems:
        raise ScheduleConfigError(problems)
    return FleetDocument(
        schedules=schedules, calendars=calendars, environments=environments, allow_tag_assignment=allow_tags is True
    )


def load_fleet_document(text: str, syntax: Literal["json", "yaml"] = "json") -> FleetDocument:
    """Parse and validate a fleet document's text. YAML needs PyYAML (a deployment dependency
    only where YAML documents are read; JSON is YAML's subset the Lambda functions read)."""
    if syntax == "yaml":
        import yaml  # noqa: PLC0415 - optional: only where YAML documents are read

        try:
            raw = yaml.safe_load(text)
        except yaml.YAMLError as error:
            raise ScheduleConfigError(
                [ConfigProblem(field="(document)", message=f"not valid YAML: {error}")]
            ) from error
    else:
        try:
            raw = json.loads(text)
        except ValueError as error:
            raise ScheduleConfigError(
                [ConfigProblem(field="(document)", message=f"not valid JSON: {error}")]
            ) from error
    if not isinstance(raw, Mapping):
        raise ScheduleConfigError([ConfigProblem(field="(document)", message="must be a mapping at the top level")])
    return parse_fleet_document(raw)


class ManagedEnvironment(_Frozen):
    environment: str
    schedule: Schedule
    calendar: HolidayCalendar | None
    assigned_by: Literal["document", "tag", "both"]


class FleetPlan(_Frozen):
    managed: tuple[ManagedEnvironment, ...] = ()
    refused: tuple[ConfigProblem, ...] = ()
    """Environments with a configuration problem: left alone (never paused or resumed)."""
    not_opted_in: tuple[str, ...] = ()
    """Assigned a schedule but without the opt-in tag: left alone, on purpose."""
    unscheduled: tuple[str, ...] = ()
    """Opted in to pause/resume but on no schedule: paused and resumed only on request."""
    absent: tuple[str, ...] = ()
    """Named in the document but neither running nor paused by us (a typo, or deleted)."""


def managed_environment(
    document: FleetDocument, environment: str, tags: Mapping[str, str]
) -> ManagedEnvironment | None:
    """The schedule one environment follows, None when it is not managed by a schedule.

    Raises ScheduleConfigError naming the environment and the field when its tags are invalid."""
    opt_in = tags.get(OPT_IN_TAG)
    tagged = tags.get(SCHEDULE_TAG)
    listed = document.environments.get(environment)
    problems: list[ConfigProblem] = []
    if opt_in is not None and opt_in != OPT_IN_VALUE:
        problems.append(
            ConfigProblem(
                field=f"tags.{OPT_IN_TAG}",
                message=f"is {opt_in!r}; only {OPT_IN_VALUE!r} opts in (the pause guard and IAM check this value)",
                environment=environment,
            )
        )
    if tagged is not None:
        try:
            _SCHEDULE_NAME.validate_python(tagged)
        except ValidationError:
            problems.append(
                ConfigProblem(
                    field=f"tags.{SCHEDULE_TAG}", message=f"{tagged!r} is not a schedule name", environment=environment
                )
            )
        else:
            if tagged not in document.schedules:
                problems.append(
                    ConfigProblem(
                        field=f"tags.{SCHEDULE_TAG}",
                        message=f"no schedule named {tagged!r} in the fleet document",
                        environment=environment,
                    )
                )
            elif listed is None and opt_in == OPT_IN_VALUE and not document.allow_tag_assignment:
                problems.append(
                    ConfigProblem(
                        field=f"tags.{SCHEDULE_TAG}",
                        message=f"names {tagged!r} but the fleet document does not list this environment, and "
                        "assignment by tag alone is off (allow_tag_assignment): list it under environments",
                        environment=environment,
                    )
                )
            elif listed is not None and listed != tagged:
                problems.append(
                    ConfigProblem(
                        field=f"tags.{SCHEDULE_TAG}",
                        message=f"names {tagged!r} but the fleet document assigns {listed!r} "
                        f"(environments.{environment}.schedule): make them agree",
                        environment=environment,
                    )
                )
    if problems:
        raise ScheduleConfigError(problems)
    name = tagged or listed
    if name is None or opt_in != OPT_IN_VALUE:
        return None
    schedule = document.schedules[name]
    assigned_by: Literal["document", "tag", "both"] = "both" if tagged and listed else "tag" if tagged else "document"
    return ManagedEnvironment(
        environment=environment, schedule=schedule, calendar=document.calendar_of(schedule), assigned_by=assigned_by
    )


def plan_fleet(document: FleetDocument, environment_tags: Mapping[str, Mapping[str, str]]) -> FleetPlan:
    """Every known environment (live ones and paused ones, with their snapshots' tags) sorted into
    managed, refused, not opted in, unscheduled; plus document entries that match none of them."""
    managed: list[ManagedEnvironment] = []
    refused: list[ConfigProblem] = []
    not_opted_in: list[str] = []
    unscheduled: list[str] = []
    for environment in sorted(environment_tags):
        tags = environment_tags[environment]
        try:
            entry = managed_environment(document, environment, tags)
        except ScheduleConfigError as error:
            refused.extend(error.problems)
            continue
        if entry is not None:
            managed.append(entry)
        elif tags.get(SCHEDULE_TAG) or environment in document.environments:
            not_opted_in.append(environment)
        elif tags.get(OPT_IN_TAG) == OPT_IN_VALUE:
            unscheduled.append(environment)
    absent = sorted(set(document.environments) - set(environment_tags))
    return FleetPlan(
        managed=tuple(managed),
        refused=tuple(refused),
        not_opted_in=tuple(not_opted_in),
        unscheduled=tuple(unscheduled),
        absent=tuple(absent),
    )
