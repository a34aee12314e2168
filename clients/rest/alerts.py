"""Alert-triggered captures: Azure Monitor (common alert schema, and the older schema) and
Prometheus Alertmanager webhooks, mapped by configured rules to a capture template.

Rules file (JSON), given to `fleetcap gateway --alert-rules FILE`:

    {"rules": [{
        "name": "net-out-high",
        "source": "azure-monitor",            # or "alertmanager", or "any" (default)
        "match": {"alertRule": "Network Out High"},  # Azure: essentials fields; Alertmanager: labels
        "targetLabel": "vm",                  # Alertmanager: label with a VM name or ARM id (default "vm")
        "scaleSetLabel": "vmss", "instanceLabel": "instance",  # Alertmanager: or a scale-set instance
        "captureName": "alert-{rule}-{target}",   # default; {rule} {target} are filled in
        "maxCaptures": 100,                   # the quota check: captures that may exist (default 100)
        "properties": {"storageLocation": {"storageId": "local"}, "timeLimitInSeconds": 30,
                       "filters": [{"protocol": "TCP"}]}   # ARM properties without the target
    }, {
        "name": "latency", "match": {"alertname": "HighLatency"},
        "action": "trigger",                  # freeze a flight recorder instead of creating a capture
        "captureName": "rec-web",             # the recorder (created with standbyInSeconds)
        "afterInSeconds": 30                  # seconds recorded after the trigger (default 0)
    }]}

Each firing alert follows Azure's documented alert flow: look up the capture of the same name;
delete it when it has finished, check the quota, create the new one. Two decisions beyond it:
a capture of that name that is still running is kept (the re-fire belongs to the incident it is
already recording, and deleting a running capture can lose its file in Azure), and the local
file name carries the UTC time so a re-created capture never collides with the old file.
Firing the same alert N times therefore leaves exactly one capture per (rule, target).
Resolved alerts create nothing.
"""

from __future__ import annotations

import dataclasses
import datetime
import json
import re
from collections.abc import Callable, Mapping
from typing import Any

from google.protobuf import json_format

from fleetcap.clients import sdk
from fleetcap.core.naming import parse_compute_id
from fleetcap.core.vocabulary import Status, TargetType
from fleetcap.v1 import captures_pb2 as pb

_NAME_CHARS = re.compile(r"[^A-Za-z0-9_.-]+")


class RuleError(ValueError):
    """A rules file that cannot be used; the message names the rule and the field."""


@dataclasses.dataclass(frozen=True)
class Rule:
    name: str
    source: str = "any"
    match: Mapping[str, str] = dataclasses.field(default_factory=dict)
    target_label: str = "vm"
    scale_set_label: str = ""
    instance_label: str = ""
    capture_name: str = "alert-{rule}-{target}"
    max_captures: int = 100
    properties: Mapping[str, Any] = dataclasses.field(default_factory=dict)
    action: str = "create"  # or "trigger": freeze the flight recorder named by captureName
    after_s: int = 0  # trigger: seconds recorded after the trigger

    @classmethod
    def from_dict(cls, i: int, d: Any) -> Rule:
        where = f"rules[{i}]"
        if not isinstance(d, dict) or not isinstance(d.get("name"), str) or not d["name"]:
            raise RuleError(f"{where}.name: required, a non-empty string")
        known = {
            "name",
            "source",
            "match",
            "targetLabel",
            "scaleSetLabel",
            "instanceLabel",
            "captureName",
            "maxCaptures",
            "properties",
            "action",
            "afterInSeconds",
        }
        for k in d:
            if k not in known:
                raise RuleError(f"{where}.{k}: unknown field (known: {', '.join(sorted(known))})")
        if d.get("source", "any") not in ("any", "azure-monitor", "alertmanager"):
            raise RuleError(f"{where}.source: must be any, azure-monitor or alertmanager")
        if not isinstance(d.get("match", {}), dict):
            raise RuleError(f"{where}.match: must be an object of field or label values")
        props = d.get("properties", {})
        if not isinstance(props, dict) or "target" in props or "targetType" in props:
            raise RuleError(f"{where}.properties: an object of capture properties; the target comes from the alert")
        try:
            json_format.ParseDict(props, pb.PacketCaptureParameters())
        except json_format.ParseError as e:
            raise RuleError(f"{where}.properties: {str(e).splitlines()[0]}") from None
        action, after = d.get("action", "create"), d.get("afterInSeconds", 0)
        if action not in ("create", "trigger"):
            raise RuleError(f"{where}.action: must be create or trigger")
        if action == "trigger":
            if not isinstance(d.get("captureName"), str) or "{target}" in d["captureName"] or props:
                raise RuleError(f"{where}.captureName: a trigger rule names its flight recorder (no {{target}}, no properties)")
            if not isinstance(after, int) or isinstance(after, bool) or not 0 <= after <= 18000:
                raise RuleError(f"{where}.afterInSeconds: must be a whole number from 0 to 18000")
        elif "afterInSeconds" in d:
            raise RuleError(f"{where}.afterInSeconds: only with action trigger")
        max_captures = d.get("maxCaptures", 100)
        if not isinstance(max_captures, int) or max_captures < 1:
            raise RuleError(f"{where}.maxCaptures: must be a positive integer")
        return cls(
            name=d["name"],
            source=d.get("source", "any"),
            match={str(k): str(v) for k, v in d.get("match", {}).items()},
            target_label=d.get("targetLabel", "vm"),
            scale_set_label=d.get("scaleSetLabel", ""),
            instance_label=d.get("instanceLabel", ""),
            capture_name=d.get("captureName", "alert-{rule}-{target}"),
            max_captures=max_captures,
            properties=props,
            action=action,
            after_s=after,
        )


class AlertRules:
    def __init__(self, rules: list[Rule]):
        self.rules = rules

    @classmethod
    def parse(cls, doc: Any) -> AlertRules:
        if not isinstance(doc, dict) or not isinstance(doc.get("rules"), list):
            raise RuleError('rules: the file must be {"rules": [...]}')
        rules = [Rule.from_dict(i, r) for i, r in enumerate(doc["rules"])]
        names = [r.name for r in rules]
        for n in names:
            if names.count(n) > 1:
                raise RuleError(f"rules: the name '{n}' is used twice")
        return cls(rules)

    @classmethod
    def load(cls, path: str) -> AlertRules:
        with open(path) as f:
            try:
                return cls.parse(json.load(f))
            except json.JSONDecodeError as e:
                raise RuleError(f"{path}: not valid JSON ({e})") from None

    def matching(self, source: str, fields: Mapping[str, Any]) -> list[Rule]:
        return [r for r in self.rules if r.source in ("any", source) and all(str(fields.get(k, "")) == v for k, v in r.match.items())]


@dataclasses.dataclass
class Result:
    alert: str
    action: str  # created | kept-running | triggered | ignored | no-rule | quota-exceeded | failed
    rule: str = ""
    capture: str = ""
    message: str = ""

    def as_dict(self) -> dict[str, str]:
        return {k: v for k, v in dataclasses.asdict(self).items() if v}


@dataclasses.dataclass(frozen=True)
class Target:
    """What an alert points at: a VM, or one scale-set instance."""

    target: str  # VM or scale-set ARM id (canonical, from the agent list) or name
    target_type: str
    include: tuple[str, ...]
    label: str  # for the capture name: vm1, web_3


def _agent_target(agent_id: str, *, whole_scale_set: bool = False) -> Target:
    """The capture target for a connected agent: its VM, or its one instance of a scale set
    (or, with whole_scale_set, the scale set)."""
    parsed = parse_compute_id(agent_id)
    if parsed is None:
        raise LookupError(f"agent id '{agent_id}' is not a VM or scale-set instance id")
    if not parsed.scale_set:
        return Target(agent_id, TargetType.VM, (), parsed.name)
    scale_set = agent_id[: agent_id.lower().index("/virtualmachines/")]
    if whole_scale_set:
        return Target(scale_set, TargetType.VMSS, (), parsed.name)
    return Target(scale_set, TargetType.VMSS, (parsed.instance_id,), parsed.instance_name)


def _target_from_id(client: sdk.Client, resource_id: str) -> Target:
    """Canonicalizes an alert's (often lowercased) ARM id against the connected agents."""
    parsed = parse_compute_id(resource_id or "")
    if parsed is None:
        raise LookupError(f"the alert's target '{resource_id}' is not a VM or scale-set instance id")
    wanted = resource_id.rstrip("/").lower()
    whole_scale_set = parsed.scale_set and not parsed.instance_id
    for agent in client.list_agents():
        if agent.id.lower() == wanted or (whole_scale_set and agent.id.lower().startswith(wanted + "/virtualmachines/")):
            return _agent_target(agent.id, whole_scale_set=whole_scale_set)
    raise LookupError(f"no connected agent is '{resource_id}'")


def _capture_name(rule: Rule, target: Target) -> str:
    name = rule.capture_name.replace("{rule}", rule.name).replace("{target}", target.label)
    return _NAME_CHARS.sub("-", name)[:80]


def run_rule(client: sdk.Client, rule: Rule, target: Target, alert: str, now: datetime.datetime) -> Result:
    name = _capture_name(rule, target)
    out = Result(alert=alert, action="", rule=rule.name, capture=name)
    try:
        existing = client.get_status(name=name)
    except sdk.CaptureNotFound:
        existing = None
    if existing is not None:
        if Status(existing.packet_capture_status or Status.UNKNOWN).is_active():
            out.action, out.message = "kept-running", "a capture of this name is still running"
            return out
        client.delete(name=name)
    count = len(client.list())
    if count >= rule.max_captures:
        out.action = "quota-exceeded"
        out.message = f"{count} captures exist; the rule allows {rule.max_captures}"
        return out
    props = json_format.ParseDict(dict(rule.properties), pb.PacketCaptureParameters())
    props.target, props.target_type = target.target, target.target_type
    props.scope.include[:] = list(target.include)
    stamp = now.strftime("%Y%m%d_%H%M%S")
    loc = props.storage_location
    if loc.file_path or not loc.storage_id:
        base = loc.file_path[:-4] if loc.file_path.endswith(".cap") else f"/var/captures/{name}"
        loc.file_path = f"{base}_{stamp}.cap"
    try:
        client.create_from(name=name, properties=props)
    except sdk.QuotaExceeded as e:
        out.action, out.message = "quota-exceeded", e.message
        return out
    except sdk.CoordinatorUnavailable:
        raise
    except sdk.FleetcapError as e:
        out.action, out.message = "failed", f"{e.code.name}: {e.message}"
        return out
    out.action = "created"
    return out


def _trigger(client: sdk.Client, rule: Rule, alert: str) -> Result:
    """A trigger rule: the flight recorder keeps the minutes before the alert. The first alert
    triggers it; a re-fire finds it triggered and changes nothing (the trigger is idempotent)."""
    name = _NAME_CHARS.sub("-", rule.capture_name.replace("{rule}", rule.name))[:80]
    note = "".join(ch for ch in f"alert {alert}" if ch.isprintable())[:200]
    try:
        status = client.trigger(name=name, after_in_seconds=rule.after_s, note=note)
    except sdk.CoordinatorUnavailable:
        raise
    except sdk.FleetcapError as e:
        return Result(alert=alert, action="failed", rule=rule.name, capture=name, message=f"{e.code.name}: {e.message}")
    return Result(
        alert=alert,
        action="triggered",
        rule=rule.name,
        capture=name,
        message=f"triggered at {status.trigger_time} by {status.trigger_source}",
    )


def _dispatch(
    client: sdk.Client, rules: AlertRules, source: str, alert: str, fields: Mapping[str, Any], find_target: Callable[[Rule], Target]
) -> list[Result]:
    matched = rules.matching(source, fields)
    if not matched:
        return [Result(alert=alert, action="no-rule", message="no rule matches this alert")]
    now = datetime.datetime.now(datetime.UTC)
    results = []
    for rule in matched:
        if rule.action == "trigger":
            results.append(_trigger(client, rule, alert))
            continue
        try:
            target = find_target(rule)
        except LookupError as e:
            results.append(Result(alert=alert, action="failed", rule=rule.name, message=str(e)))
            continue
        try:
            results.append(run_rule(client, rule, target, alert, now))
        except sdk.CoordinatorUnavailable:
            raise  # 503 to the sender, which retries: the alert is not lost
        except sdk.FleetcapError as e:
            results.append(Result(alert=alert, action="failed", rule=rule.name, message=f"{e.code.name}: {e.message}"))
    return results


def handle_azure_monitor(client: sdk.Client, rules: AlertRules, body: Any) -> list[Result]:
    """An Azure Monitor action-group webhook: the common alert schema, or the older one."""
    from fleetcap.clients.rest.arm import HttpError

    if not isinstance(body, dict) or not isinstance(body.get("data"), dict):
        raise HttpError(400, "InvalidRequestFormat", "data: required; not an Azure Monitor alert payload")
    data = body["data"]
    if body.get("schemaId") == "azureMonitorCommonAlertSchema":
        ess = data.get("essentials")
        if not isinstance(ess, dict):
            raise HttpError(400, "InvalidRequestFormat", "data.essentials: required by the common alert schema")
        ids = ess.get("alertTargetIDs") or []
        alert = str(ess.get("alertRule") or ess.get("alertId") or "alert")
        fired = ess.get("monitorCondition", "Fired") == "Fired"
        fields = {k: v for k, v in ess.items() if isinstance(v, (str, int, float))}
    else:  # the older, non-common schemas: data.context
        ctx = data.get("context")
        if not isinstance(ctx, dict):
            raise HttpError(400, "InvalidRequestFormat", "data.context or data.essentials: required")
        ids = [ctx.get("resourceId")] if ctx.get("resourceId") else []
        alert = str(ctx.get("name") or "alert")
        fired = data.get("status", "Activated") in ("Activated", "Fired")
        fields = {k: v for k, v in ctx.items() if isinstance(v, (str, int, float))}
        fields.setdefault("alertRule", ctx.get("name", ""))
    if not fired:
        return [Result(alert=alert, action="ignored", message="resolved alerts start no capture")]
    if not ids or not isinstance(ids[0], str):
        raise HttpError(400, "InvalidRequestFormat", "data.essentials.alertTargetIDs: needs the alert's target id")
    return _dispatch(client, rules, "azure-monitor", alert, fields, lambda rule: _target_from_id(client, ids[0]))


def handle_alertmanager(client: sdk.Client, rules: AlertRules, body: Any) -> list[Result]:
    """A Prometheus Alertmanager webhook (version 4): each firing alert in `alerts`."""
    from fleetcap.clients.rest.arm import HttpError

    if not isinstance(body, dict) or not isinstance(body.get("alerts"), list):
        raise HttpError(400, "InvalidRequestFormat", "alerts: required; not an Alertmanager webhook payload")
    results: list[Result] = []
    for i, a in enumerate(body["alerts"]):
        if not isinstance(a, dict) or not isinstance(a.get("labels", {}), dict):
            raise HttpError(400, "InvalidRequestFormat", f"alerts[{i}].labels: must be an object")
        labels = {str(k): str(v) for k, v in a.get("labels", {}).items()}
        alert = labels.get("alertname", f"alerts[{i}]")
        if a.get("status", body.get("status")) != "firing":
            results.append(Result(alert=alert, action="ignored", message="resolved alerts start no capture"))
            continue

        def find(rule: Rule, labels: Mapping[str, str] = labels) -> Target:
            if rule.scale_set_label:
                vmss, inst = labels.get(rule.scale_set_label), labels.get(rule.instance_label or "instance_id")
                if not vmss or not inst:
                    raise LookupError(
                        f"labels {rule.scale_set_label} and {rule.instance_label or 'instance_id'} are needed to find the instance"
                    )
                return _target_by_name(client, vmss=vmss, instance=inst)
            value = labels.get(rule.target_label)
            if not value:
                raise LookupError(f"label {rule.target_label} is needed to find the VM")
            return _target_from_id(client, value) if value.startswith("/") else _target_by_name(client, vm=value)

        results += _dispatch(client, rules, "alertmanager", alert, labels, find)
    return results


def _target_by_name(client: sdk.Client, *, vm: str = "", vmss: str = "", instance: str = "") -> Target:
    for agent in client.list_agents():
        parsed = parse_compute_id(agent.id)
        if parsed is None:
            continue
        if (
            vm
            and not parsed.scale_set
            and parsed.name.lower() == vm.lower()
            or vmss
            and parsed.instance_id
            and parsed.name.lower() == vmss.lower()
            and parsed.instance_id == instance
        ):
            return _agent_target(agent.id)
    raise LookupError(f"no connected agent is {'VM ' + vm if vm else f'instance {instance} of {vmss}'}")
