"""Creates the stack of one resolved template on moto and checks what it made.

    stack-on-moto.py RESOLVED.json

RESOLVED.json is what scripts/resolve-template.py writes: the CloudFormation a
stack of one parameter set would be. The stack is created through moto's
CloudFormation (MOTO_ENDPOINT), with a placeholder package for the functions'
code, and then each created function is held to the template: its runtime,
handler, role (the role the template gives it, with that role's inline
policies), every environment variable with its value, and every event source
mapping with its settings (batch size, parallelization, bisection, retries,
failure destination, filters, partial batch responses).

Moto does not create API Gateway v2 resources or CloudWatch alarms (it logs and
skips them), attaches no managed policies and checks no Rules; those are left
to scripts/lint-template and the IAM test. A FIFO queue without a name is given
one ending in `.fifo` here: moto's generated names lack the suffix that
CloudFormation's own have.
"""

import io
import json
import os
import sys
import time
import zipfile

import boto3

CODE_BUCKET, CODE_KEY = "stack-on-moto-code", "code.zip"
# Mapping settings the template sets and Lambda reports under the same name.
MAPPING_SETTINGS = [
    "BatchSize",
    "ParallelizationFactor",
    "BisectBatchOnFunctionError",
    "MaximumRetryAttempts",
    "MaximumBatchingWindowInSeconds",
    "StartingPosition",
    "FunctionResponseTypes",
]


def client(service):
    return boto3.client(
        service,
        endpoint_url=os.environ["MOTO_ENDPOINT"],
        region_name="us-east-1",
        aws_access_key_id="testing",
        aws_secret_access_key="testing",
    )


def prepare(template):
    """Points every function at a placeholder package and names unnamed FIFO queues."""
    s3 = client("s3")
    s3.create_bucket(Bucket=CODE_BUCKET)
    package = io.BytesIO()
    with zipfile.ZipFile(package, "w") as z:
        z.writestr("bootstrap", "#!/bin/sh\n")
    s3.put_object(Bucket=CODE_BUCKET, Key=CODE_KEY, Body=package.getvalue())
    for name, resource in template["Resources"].items():
        properties = resource.get("Properties", {})
        if resource["Type"] == "AWS::Lambda::Function":
            properties["Code"] = {"S3Bucket": CODE_BUCKET, "S3Key": CODE_KEY}
        if resource["Type"] == "AWS::SQS::Queue" and properties.get("FifoQueue") is True:
            properties.setdefault("QueueName", f"{name}.fifo")


def create(template, stack):
    cloudformation = client("cloudformation")
    cloudformation.create_stack(
        StackName=stack,
        TemplateBody=json.dumps(template),
        Capabilities=["CAPABILITY_IAM", "CAPABILITY_NAMED_IAM", "CAPABILITY_AUTO_EXPAND"],
    )
    for _ in range(120):
        status = cloudformation.describe_stacks(StackName=stack)["Stacks"][0]
        if not status["StackStatus"].endswith("IN_PROGRESS"):
            break
        time.sleep(0.5)
    if status["StackStatus"] != "CREATE_COMPLETE":
        failures = [
            f'{e["LogicalResourceId"]}: {e.get("ResourceStatusReason")}'
            for e in cloudformation.describe_stack_events(StackName=stack)["StackEvents"]
            if "FAILED" in e["ResourceStatus"]
        ]
        raise SystemExit(f'{stack}: {status["StackStatus"]}: {failures}')
    return {
        r["LogicalResourceId"]: r["PhysicalResourceId"]
        for r in cloudformation.describe_stack_resources(StackName=stack)["StackResources"]
        if r.get("PhysicalResourceId")
    }


class Resolver:
    """Turns the template's Ref, GetAtt and Sub into what the stack made of them."""

    def __init__(self, template, physical):
        self.template = template
        self.physical = physical
        self.sqs = client("sqs")
        self.dynamodb = client("dynamodb")
        self.iam = client("iam")

    def arn(self, name):
        kind = self.template["Resources"][name]["Type"]
        physical = self.physical[name]
        if kind == "AWS::SQS::Queue":
            return self.sqs.get_queue_attributes(QueueUrl=physical, AttributeNames=["QueueArn"])[
                "Attributes"
            ]["QueueArn"]
        if kind == "AWS::IAM::Role":
            return self.iam.get_role(RoleName=physical)["Role"]["Arn"]
        if kind == "AWS::DynamoDB::Table":
            return self.dynamodb.describe_table(TableName=physical)["Table"]["TableArn"]
        raise ValueError(f"no Arn for {kind}")

    def value(self, value):
        """The value a property has in the stack, or None where it cannot be known here."""
        if isinstance(value, (str, int, bool)):
            return value
        if isinstance(value, dict) and len(value) == 1:
            (function, argument), = value.items()
            if function == "Ref" and argument in self.physical:
                kind = self.template["Resources"][argument]["Type"]
                return None if kind.startswith("AWS::ApiGatewayV2") else self.physical[argument]
            if function == "Fn::GetAtt":
                name, attribute = argument if isinstance(argument, list) else argument.split(".", 1)
                if attribute == "Arn":
                    return self.arn(name)
                if attribute == "StreamArn":
                    return self.dynamodb.describe_table(TableName=self.physical[name])["Table"][
                        "LatestStreamArn"
                    ]
                if attribute == "QueueUrl":
                    return self.physical[name]
        return None


def check_functions(template, physical, resolver):
    lam, iam = client("lambda"), client("iam")
    problems = []
    functions = {
        name: r for name, r in template["Resources"].items() if r["Type"] == "AWS::Lambda::Function"
    }
    if not functions:
        problems.append("the template has no function")
    for name, resource in functions.items():
        want = resource["Properties"]
        got = lam.get_function_configuration(FunctionName=physical[name])
        for key in ("Runtime", "Handler", "MemorySize", "Timeout"):
            if key in want and got.get(key) != want[key]:
                problems.append(f"{name}: {key} {got.get(key)!r}, the template says {want[key]!r}")
        role = resolver.value(want["Role"])
        if got["Role"] != role:
            problems.append(f"{name}: role {got['Role']}, the template says {role}")
        role_name = role.rsplit("/", 1)[-1]
        role_template = next(
            r for n, r in template["Resources"].items() if physical.get(n) == role_name
        )
        want_policies = sorted(p["PolicyName"] for p in role_template["Properties"].get("Policies", []))
        got_policies = sorted(iam.list_role_policies(RoleName=role_name)["PolicyNames"])
        if got_policies != want_policies:
            problems.append(f"{name}: inline policies {got_policies}, the template says {want_policies}")
        want_env = want.get("Environment", {}).get("Variables", {})
        got_env = got.get("Environment", {}).get("Variables", {})
        if sorted(got_env) != sorted(want_env):
            problems.append(f"{name}: environment {sorted(got_env)}, the template says {sorted(want_env)}")
        for variable, value in want_env.items():
            expected = resolver.value(value)
            if expected is not None and got_env.get(variable) != str(expected):
                problems.append(f"{name}: {variable}={got_env.get(variable)!r}, expected {expected!r}")
    return problems, functions


def check_mappings(template, physical, resolver):
    lam = client("lambda")
    problems = []
    mappings = {
        name: r["Properties"]
        for name, r in template["Resources"].items()
        if r["Type"] == "AWS::Lambda::EventSourceMapping"
    }
    for name, want in mappings.items():
        function = resolver.value(want["FunctionName"])
        source = resolver.value(want["EventSourceArn"])
        found = [
            m
            for m in lam.list_event_source_mappings(FunctionName=function)["EventSourceMappings"]
            if m["EventSourceArn"] == source
        ]
        if len(found) != 1:
            problems.append(f"{name}: {len(found)} mappings of {function} from {source}")
            continue
        got = found[0]
        for key in MAPPING_SETTINGS:
            if key in want and got.get(key) != want[key]:
                problems.append(f"{name}: {key} {got.get(key)!r}, the template says {want[key]!r}")
        failure = want.get("DestinationConfig", {}).get("OnFailure", {}).get("Destination")
        if failure is not None:
            got_failure = got.get("DestinationConfig", {}).get("OnFailure", {}).get("Destination")
            if got_failure != resolver.value(failure):
                problems.append(f"{name}: on failure {got_failure}, expected {resolver.value(failure)}")
        if "FilterCriteria" in want:
            want_filters = sorted(json.dumps(json.loads(f["Pattern"]), sort_keys=True) for f in want["FilterCriteria"]["Filters"])
            got_filters = sorted(
                json.dumps(json.loads(f["Pattern"]), sort_keys=True)
                for f in got.get("FilterCriteria", {}).get("Filters", [])
            )
            if got_filters != want_filters:
                problems.append(f"{name}: filters {got_filters}, the template says {want_filters}")
    return problems, mappings


def main():
    path = sys.argv[1]
    with open(path) as f:
        template = json.load(f)
    prepare(template)
    # A name of its own on every run: a moto left running keeps the stacks it made.
    stack = f"stack-on-moto-{os.path.splitext(os.path.basename(path))[0]}-{time.time_ns() % 10**9}"
    physical = create(template, stack)
    resolver = Resolver(template, physical)
    problems, functions = check_functions(template, physical, resolver)
    more, mappings = check_mappings(template, physical, resolver)
    problems += more
    if problems:
        print(f"{stack}: {len(problems)} differences from the template:", file=sys.stderr)
        for problem in problems:
            print(f"  {problem}", file=sys.stderr)
        raise SystemExit(1)
    print(
        f"{stack}: CREATE_COMPLETE, {len(physical)} resources; {len(functions)} functions and "
        f"{len(mappings)} event source mappings as the template says"
    )


if __name__ == "__main__":
    main()
