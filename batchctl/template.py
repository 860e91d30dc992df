"""Reads template.yaml so the local stack builds moto resources from the template's own
properties (tests cannot drift from what gets deployed), and the worker fleet it nests
(infra/worker-fleet.yaml, its `Workers` stack)."""

from __future__ import annotations

import copy
import json
import re
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path
from typing import Any

import yaml

PROJECT_ROOT = Path(__file__).resolve().parent.parent
TEMPLATE_PATH = PROJECT_ROOT / "template.yaml"
FLEET_PATH = PROJECT_ROOT / "infra" / "worker-fleet.yaml"
WORKERS = "Workers"
"""The main template's nested stack of its own model's workers (FLEET_PATH)."""


class _CfnLoader(yaml.SafeLoader):
    """YAML loader that understands CloudFormation's short tags (!Ref, !GetAtt, !Sub, ...)."""


def _construct_tag(loader: yaml.SafeLoader, suffix: str, node: yaml.Node) -> dict[str, Any]:
    # !Ref and !Condition keep their names; every other short tag is a Fn:: function.
    name = suffix if suffix in {"Ref", "Condition"} else f"Fn::{suffix}"
    value: Any
    if isinstance(node, yaml.ScalarNode):
        value = loader.construct_scalar(node)
        if suffix == "GetAtt":
            value = str(value).split(".", 1)
    elif isinstance(node, yaml.SequenceNode):
        value = loader.construct_sequence(node, deep=True)
    else:
        value = loader.construct_mapping(node, deep=True)  # type: ignore[arg-type]
    return {name: value}


_CfnLoader.add_multi_constructor("!", _construct_tag)


def load_template(path: Path = TEMPLATE_PATH) -> dict[str, Any]:
    """The template at `path`, parsed once per content (a local stack is built from it for
    most tests, and PyYAML's pure-Python parse of the whole template takes most of a
    second); each caller gets its own copy to change."""
    text = path.read_text()
    return copy.deepcopy(_parsed(text))


@lru_cache(maxsize=8)
def _parsed(text: str) -> dict[str, Any]:
    return parse_template(text)


def parse_template(text: str) -> dict[str, Any]:
    """A template's YAML (or JSON) text, its short tags as their Fn:: forms."""
    document: dict[str, Any] = yaml.load(text, Loader=_CfnLoader)
    return document


@dataclass
class Resolver:
    """Resolves intrinsic functions against the physical ids of locally created resources."""

    pseudo: dict[str, str]
    refs: dict[str, str] = field(default_factory=dict)
    attributes: dict[tuple[str, str], str] = field(default_factory=dict)
    parameters: dict[str, str] = field(default_factory=dict)
    conditions: dict[str, Any] = field(default_factory=dict)
    """The template's Conditions, evaluated against `parameters` when an Fn::If needs one."""

    def resolve(self, value: Any) -> Any:
        if isinstance(value, list):
            return [self.resolve(v) for v in value]
        if not isinstance(value, dict):
            return value
        if set(value) == {"Ref"}:
            return self._ref(value["Ref"])
        if set(value) == {"Fn::GetAtt"}:
            logical, attribute = value["Fn::GetAtt"]
            return self.attributes[(logical, attribute)]
        if set(value) == {"Fn::Sub"}:
            return self._substitute(value["Fn::Sub"])
        if set(value) == {"Fn::Select"}:
            index, items = value["Fn::Select"]
            return self.resolve(items)[int(index)]
        if set(value) == {"Fn::Split"}:
            delimiter, text = value["Fn::Split"]
            return str(self.resolve(text)).split(delimiter)
        if set(value) == {"Fn::Join"}:
            delimiter, items = value["Fn::Join"]
            return delimiter.join(str(item) for item in self.resolve(items))
        if set(value) == {"Fn::If"}:
            name, when_true, when_false = value["Fn::If"]
            return self.resolve(when_true if self.condition(name) else when_false)
        return {k: self.resolve(v) for k, v in value.items()}

    def condition(self, name: str) -> bool:
        """The value of one of the template's Conditions."""
        return self._holds(self.conditions[name])

    def _holds(self, expression: Any) -> bool:
        ((function, arguments),) = expression.items()
        if function == "Fn::Equals":
            left, right = (self.resolve(argument) for argument in arguments)
            return str(left) == str(right)
        if function == "Fn::Not":
            return not self._holds(arguments[0])
        if function == "Fn::And":
            return all(self._holds(argument) for argument in arguments)
        if function == "Fn::Or":
            return any(self._holds(argument) for argument in arguments)
        if function == "Condition":
            return self.condition(arguments)
        raise KeyError(f"condition function {function!r} is not known locally")

    def _ref(self, name: str) -> str:
        for table in (self.pseudo, self.parameters, self.refs):
            if name in table:
                return table[name]
        raise KeyError(f"template reference {name!r} is not known locally")

    def _substitute(self, argument: Any) -> str:
        # Fn::Sub's two forms: "text", or ["text", {name: value}] with names of its own.
        text, names = (argument, {}) if isinstance(argument, str) else argument
        values = {name: str(self.resolve(v)) for name, v in names.items()}
        return re.sub(
            r"\$\{([^}]+)\}",
            lambda m: values[m.group(1)] if m.group(1) in values else self._sub(m.group(1)),
            text,
        )

    def _sub(self, expression: str) -> str:
        if "." in expression:
            logical, attribute = expression.split(".", 1)
            return str(self.attributes[(logical, attribute)])
        return str(self._ref(expression))


def nested_fleet(main: dict[str, Any], resolver: Resolver) -> tuple[dict[str, Any], Resolver]:
    """The worker fleet as the main template nests it: its template and a Resolver for it,
    whose parameters are the `Workers` stack's Parameters as `resolver` (the main stack's)
    resolves them, the others at their defaults; the same pseudo parameters."""
    fleet = load_template(FLEET_PATH)
    passed = main["Resources"][WORKERS]["Properties"]["Parameters"]
    parameters = {name: str(spec.get("Default", "")) for name, spec in fleet["Parameters"].items()}
    parameters |= {name: str(resolver.resolve(value)) for name, value in passed.items()}
    nested = Resolver(
        pseudo=dict(resolver.pseudo), parameters=parameters, conditions=fleet["Conditions"]
    )
    return fleet, nested


def resources_of_type(template: dict[str, Any], resource_type: str) -> dict[str, dict[str, Any]]:
    return {
        name: resource.get("Properties", {})
        for name, resource in template["Resources"].items()
        if resource["Type"] == resource_type
    }


def state_machine_definition(properties: dict[str, Any], resolver: Resolver) -> str:
    """The ASL file the template points at, with its DefinitionSubstitutions applied."""
    definition: str = (PROJECT_ROOT / str(properties["DefinitionUri"])).read_text()
    for name, value in properties.get("DefinitionSubstitutions", {}).items():
        definition = definition.replace("${" + name + "}", str(resolver.resolve(value)))
    json.loads(definition)  # fail early on a bad substitution
    return definition


def sam_transformed(path: Path = TEMPLATE_PATH, **parameters: str) -> dict[str, Any]:
    """The template as CloudFormation receives it after the SAM transform, done offline by
    AWS's own translator (the one `sam deploy` and CloudFormation run): the plain resources
    (functions, roles with their policy templates expanded, event source mappings, the API's
    stages) that the create-time rules and the IAM checks read. `parameters` override the
    template's defaults (e.g. DeployWorkers="true"). A copy: callers may change it."""
    import copy

    return copy.deepcopy(_sam_transformed(path, tuple(sorted(parameters.items()))))


def artifact_url(logical: str) -> str:
    """Where `sam_transformed` says a nested stack's template was uploaded."""
    return f"https://sam-artifacts.s3.amazonaws.com/{logical}/TemplateURL"


@lru_cache(maxsize=8)
def _sam_transformed(path: Path, parameters: tuple[tuple[str, str], ...]) -> dict[str, Any]:
    import boto3
    from samtranslator.parser.parser import Parser
    from samtranslator.translator.translator import Translator
    from samtranslator.utils.py27hash_fix import (
        to_py27_compatible_template,
        undo_mark_unicode_str_in_template,
    )

    template = load_template(path)
    # What `sam package` does first: local code and definitions become S3 artifacts, and a
    # nested stack's template an S3 object named by its URL.
    for name, resource in template["Resources"].items():
        properties = resource.get("Properties", {})
        for key in ("CodeUri", "DefinitionUri"):
            if isinstance(properties.get(key), str) and not properties[key].startswith("s3://"):
                properties[key] = f"s3://sam-artifacts/{name}/{key}"
        url = properties.get("TemplateURL")
        if isinstance(url, str) and not url.startswith("https://"):
            properties["TemplateURL"] = artifact_url(name)
    values: dict[str, Any] = {
        name: str(spec.get("Default", "")) for name, spec in template.get("Parameters", {}).items()
    }
    values.update(parameters)
    # samtranslator's own transform(), but with a region of its own (it names the partition
    # from it), so the process's environment is left alone; no managed policy is looked up.
    to_py27_compatible_template(template, values)
    translator = Translator(
        None, Parser(), boto_session=boto3.session.Session(region_name="us-east-1")
    )
    result: dict[str, Any] = undo_mark_unicode_str_in_template(
        translator.translate(template, parameter_values=values, get_managed_policy_map=dict)
    )
    return result
