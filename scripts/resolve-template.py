"""Resolves template.yaml for one set of parameter values, as a deployment would.

    resolve-template.py TEMPLATE PARAMETERS.json OUT.json

PARAMETERS.json is a CloudFormation parameter file (the format of
`aws cloudformation create-stack --parameters file://...`). The SAM transform
runs with those values (the one CloudFormation runs at deploy time, from the
SAM CLI's own package); then the template's Rules are checked and its
Conditions evaluated with them: every resource whose condition is false is
left out, every Fn::If replaced by its chosen branch, and every parameter's
value put in place of its Ref. OUT.json is the plain CloudFormation a stack of
those parameters would create, for cfn-lint. The values are checked against
their declarations (AllowedValues, AllowedPattern, lengths, bounds) as
CloudFormation does. Run it with the tools venv's python (scripts/test-deps
installs it).

cfn-lint alone does not do this: `--parameters` is ignored on a template with
the SAM transform, `--parameter-files` values are checked against the
declarations but not used where they are referenced, and neither checks Rules
or leaves out what a false condition removes.
"""

import json
import os
import re
import sys

from samtranslator.translator.transform import transform
from samtranslator.yaml_helper import yaml_parse

NO_VALUE = {"Ref": "AWS::NoValue"}


class Invalid(Exception):
    pass


class NoManagedPolicyNames:
    """The template names managed policies by ARN only: nothing to look up in IAM."""

    def load(self):
        return {}


def parameter_values(template, given):
    declared = template.get("Parameters", {})
    unknown = sorted(set(given) - set(declared))
    if unknown:
        raise Invalid(f"parameters the template does not declare: {', '.join(unknown)}")
    values = {}
    for name, spec in declared.items():
        if name in given:
            raw = given[name]
        elif "Default" in spec:
            raw = str(spec["Default"])
        else:
            raise Invalid(f"parameter {name} has no default and no value")
        if spec["Type"] == "CommaDelimitedList" or spec["Type"].startswith("List<"):
            values[name] = [item.strip() for item in raw.split(",")]
        else:
            values[name] = raw
        check_constraints(name, spec, values[name])
    return values


def check_constraints(name, spec, value):
    """What CloudFormation checks of a value before it creates anything."""
    for item in value if isinstance(value, list) else [value]:
        if "AllowedValues" in spec and item not in [str(v) for v in spec["AllowedValues"]]:
            raise Invalid(f"{name}: {item!r} is not one of {spec['AllowedValues']}")
        if "AllowedPattern" in spec and not re.fullmatch(spec["AllowedPattern"], item):
            raise Invalid(f"{name}: {item!r} does not match {spec['AllowedPattern']}")
        if len(item) < spec.get("MinLength", 0) or len(item) > spec.get("MaxLength", len(item)):
            raise Invalid(f"{name}: {len(item)} characters, outside its bounds")
        if spec["Type"] == "Number":
            try:
                number = float(item)
            except ValueError:
                raise Invalid(f"{name}: {item!r} is not a number") from None
            if number < spec.get("MinValue", number) or number > spec.get("MaxValue", number):
                raise Invalid(f"{name}: {item} is outside its bounds")


def evaluate(expr, values, conditions):
    """The value of a condition or rule expression (Ref, Equals, Not, And, Or,
    Condition, Join, and the rule functions EachMemberEquals and Contains)."""
    if isinstance(expr, (str, int, float, bool)):
        return str(expr) if not isinstance(expr, bool) else expr
    if isinstance(expr, list):
        return [evaluate(e, values, conditions) for e in expr]
    if not isinstance(expr, dict) or len(expr) != 1:
        raise Invalid(f"cannot evaluate {expr!r}")
    (fn, arg), = expr.items()
    if fn == "Ref":
        if arg not in values:
            raise Invalid(f"Ref to {arg!r}, which is not a parameter")
        return values[arg]
    if fn == "Condition":
        return conditions(arg)
    args = [evaluate(a, values, conditions) for a in arg] if isinstance(arg, list) else None
    if fn == "Fn::Equals":
        return args[0] == args[1]
    if fn == "Fn::Not":
        return not args[0]
    if fn == "Fn::And":
        return all(args)
    if fn == "Fn::Or":
        return any(args)
    if fn == "Fn::Join":
        return args[0].join(args[1])
    if fn == "Fn::EachMemberEquals":
        return all(item == args[1] for item in args[0])
    if fn == "Fn::Contains":
        return args[1] in args[0]
    raise Invalid(f"cannot evaluate {fn}")


def condition_values(template, values):
    declared = template.get("Conditions", {})
    known = {}

    def condition(name):
        if name not in declared:
            raise Invalid(f"unknown condition {name!r}")
        if name not in known:
            known[name] = evaluate(declared[name], values, condition)
        return known[name]

    for name in declared:
        condition(name)
    return known


def check_rules(template, values):
    for name, rule in template.get("Rules", {}).items():
        if "RuleCondition" in rule and not evaluate(rule["RuleCondition"], values, None):
            continue
        for assertion in rule.get("Assertions", []):
            if not evaluate(assertion["Assert"], values, None):
                raise Invalid(f"rule {name}: {assertion.get('AssertDescription', 'assertion failed')}")


def resolve_ifs(node, conditions):
    """Replaces each Fn::If by its branch; drops what resolves to AWS::NoValue."""
    if isinstance(node, dict):
        if len(node) == 1 and "Fn::If" in node:
            name, when_true, when_false = node["Fn::If"]
            return resolve_ifs(when_true if conditions[name] else when_false, conditions)
        out = {}
        for key, value in node.items():
            value = resolve_ifs(value, conditions)
            if value != NO_VALUE:
                out[key] = value
        return out
    if isinstance(node, list):
        items = [resolve_ifs(item, conditions) for item in node]
        return [item for item in items if item != NO_VALUE]
    return node


def substitute(node, values):
    """Puts the parameters' values in place of their Refs and `${Name}`s."""
    if isinstance(node, dict):
        if len(node) == 1 and "Ref" in node and node["Ref"] in values:
            return values[node["Ref"]]
        if len(node) == 1 and "Fn::Sub" in node:
            body = node["Fn::Sub"]
            text, names = (body, {}) if isinstance(body, str) else (body[0], body[1])

            def value_of(m):
                name = m.group(1)
                if name in names or not isinstance(values.get(name), str):
                    return m.group(0)
                return values[name]

            text = re.sub(r"\$\{([A-Za-z0-9]+)\}", value_of, text)
            names = substitute(names, values)
            if names:
                return {"Fn::Sub": [text, names]}
            return {"Fn::Sub": text} if "${" in text else text
        return {key: substitute(value, values) for key, value in node.items()}
    if isinstance(node, list):
        return [substitute(item, values) for item in node]
    return node


def main(template_path, parameters_path, out_path):
    with open(template_path) as f:
        sam = yaml_parse(f.read())
    with open(parameters_path) as f:
        given = {p["ParameterKey"]: p["ParameterValue"] for p in json.load(f)}
    values = parameter_values(sam, given)
    check_rules(sam, values)

    # `sam build` replaces the local CodeUri with the built artefacts; what they
    # are does not matter here.
    sam["Globals"]["Function"]["CodeUri"] = "s3://artifacts/code.zip"
    os.environ.setdefault("AWS_DEFAULT_REGION", os.environ.get("AWS_REGION", "us-east-1"))
    cfn = transform(sam, given, NoManagedPolicyNames())

    conditions = condition_values(cfn, values)
    cfn["Resources"] = {
        name: resource
        for name, resource in cfn["Resources"].items()
        if conditions.get(resource.get("Condition"), True)
    }
    for resource in cfn["Resources"].values():
        resource.pop("Condition", None)
    cfn.pop("Conditions", None)
    for section in ("Resources", "Outputs"):
        if section in cfn:
            cfn[section] = substitute(resolve_ifs(cfn[section], conditions), values)
    # Every parameter is in place and every rule checked.
    cfn.pop("Parameters", None)
    cfn.pop("Rules", None)

    with open(out_path, "w") as f:
        json.dump(cfn, f, indent=1)
    true = sorted(name for name, value in conditions.items() if value)
    print(f"{len(cfn['Resources'])} resources; conditions true: {', '.join(true) or 'none'}")


if __name__ == "__main__":
    if len(sys.argv) != 4:
        sys.exit(__doc__)
    try:
        main(*sys.argv[1:])
    except Invalid as e:
        sys.exit(f"{sys.argv[2]}: {e}")
