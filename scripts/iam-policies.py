"""Prints the IAM policy of each Lambda function of template.yaml, as deployed.

    iam-policies.py TEMPLATE PARAMETERS.json

The template goes through the SAM transform (policy templates and `Policies`
statements become the functions' generated roles) with the values of
PARAMETERS.json, its conditions are evaluated and its parameters put in place,
as scripts/resolve-template.py does for cfn-lint. The output is one JSON
object: for each AWS::Lambda::Function, its role's statements (inline policies
and managed policy ARNs), each as {"effect", "actions", "resources"}. Every
resource is a string in which what the stack would fill in is left as
`${Logical.Attr}`, `${Logical}` or `${AWS::Pseudo}` (Ref, Fn::GetAtt and
Fn::Sub all written that way), for the caller to put its names in.
Run it with the tools venv's python (scripts/test-deps installs it).
"""

import importlib.util
import json
import os
import sys
import tempfile


def load_resolver():
    path = os.path.join(os.path.dirname(os.path.abspath(__file__)), "resolve-template.py")
    spec = importlib.util.spec_from_file_location("resolve_template", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def as_text(node):
    """A resource expression as a `${...}` string."""
    if isinstance(node, str):
        return node
    if isinstance(node, dict) and len(node) == 1:
        (fn, arg), = node.items()
        if fn == "Ref":
            return "${" + arg + "}"
        if fn == "Fn::GetAtt":
            parts = arg if isinstance(arg, list) else arg.split(".", 1)
            return "${" + ".".join(parts) + "}"
        if fn == "Fn::Sub":
            if isinstance(arg, str):
                return arg
            text, names = arg
            for name, value in names.items():
                text = text.replace("${" + name + "}", as_text(value))
            return text
        if fn == "Fn::Join":
            separator, items = arg
            return separator.join(as_text(item) for item in items)
    raise SystemExit(f"cannot write {node!r} as a string")


def as_list(value):
    return value if isinstance(value, list) else [value]


def role_statements(role):
    statements = []
    for policy in role["Properties"].get("Policies", []):
        for statement in as_list(policy["PolicyDocument"]["Statement"]):
            statements.append(
                {
                    "effect": statement["Effect"],
                    "actions": as_list(statement["Action"]),
                    "resources": [as_text(r) for r in as_list(statement["Resource"])],
                }
            )
    for arn in role["Properties"].get("ManagedPolicyArns", []):
        statements.append({"effect": "Managed", "actions": [], "resources": [as_text(arn)]})
    return statements


def role_of(function, resources):
    role = function["Properties"]["Role"]
    if isinstance(role, dict) and "Fn::GetAtt" in role:
        name = as_list(role["Fn::GetAtt"])[0].split(".")[0]
        return resources[name]
    raise SystemExit(f"a function's role is not a role of the template: {role!r}")


def main(template_path, parameters_path):
    resolver = load_resolver()
    with tempfile.TemporaryDirectory() as folder:
        out = os.path.join(folder, "resolved.json")
        # resolve-template.py prints a summary line: keep stdout JSON only.
        stdout, sys.stdout = sys.stdout, sys.stderr
        try:
            resolver.main(template_path, parameters_path, out)
        finally:
            sys.stdout = stdout
        with open(out) as f:
            cfn = json.load(f)
    resources = cfn["Resources"]
    policies = {
        name: role_statements(role_of(resource, resources))
        for name, resource in resources.items()
        if resource["Type"] == "AWS::Lambda::Function"
    }
    json.dump(policies, sys.stdout, indent=1, sort_keys=True)


if __name__ == "__main__":
    if len(sys.argv) != 3:
        sys.exit(__doc__)
    try:
        main(*sys.argv[1:])
    except Exception as e:  # noqa: BLE001 - the message is the report
        sys.exit(f"iam-policies.py: {type(e).__name__}: {e}")
