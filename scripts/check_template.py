#!/usr/bin/env python3
"""Checks that template.yaml deploys as a real mini-program needs, offline.

    .venv/bin/python scripts/check_template.py

1. cfn-lint in us-east-1, ap-east-1, cn-north-1 and cn-northwest-1, with every option off, with a
   domain alone, and with every option on (domain with base path and Route 53 record, VPC
   egress, alarm e-mail, X-Ray, x86_64, payments, another stage).
2. The SAM translation (the same translator CloudFormation runs) for each of those regions, with
   every option off and every option on, then:
   - every ARN written out carries the region's partition (arn:aws-cn: in China), and no host
     name ends in a literal amazonaws.com (URLs use AWS::URLSuffix; IAM service principals such
     as lambda.amazonaws.com are the one exception, as IAM spells them so in every partition);
   - every function's role has only its own statements, none on "*", and only the AWS managed
     policies Lambda needs (basic execution; VPC access and X-Ray write only as options);
   - the custom-domain resources exist only with DomainName (and the DNS record only with
     HostedZoneId);
   - every function has its errors, throttles and near-timeout alarms, under its own condition.
Prints what failed and exits 1, or exits 0.
"""
import copy
import json
import os
import subprocess
import sys

from cfnlint.decode import decode
from samtranslator.parser.parser import Parser
from samtranslator.translator.arn_generator import ArnGenerator
from samtranslator.translator.translator import Translator

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
TEMPLATE = os.path.join(ROOT, "template.yaml")
REGIONS = {"us-east-1": "aws", "ap-east-1": "aws", "cn-north-1": "aws-cn", "cn-northwest-1": "aws-cn"}

MINIMAL = {
    "AppId": "wx4f4bc4dec97d474b",
    "AppSecretArn": "arn:aws-cn:secretsmanager:cn-north-1:123456789012:secret:wxa/app-AbCdEf",
}
DOMAIN = {
    "DomainName": "api.example.com",
    "CertificateArn": "arn:aws-cn:acm:cn-north-1:123456789012:certificate/0123abcd",
}
EVERYTHING = {
    **MINIMAL,
    **DOMAIN,
    "PaySecretArn": "arn:aws-cn:secretsmanager:cn-north-1:123456789012:secret:wxa/pay-AbCdEf",
    "PushSecretArn": "arn:aws-cn:secretsmanager:cn-north-1:123456789012:secret:wxa/push-AbCdEf",
    "PayNotifyUrl": "https://api.example.com/v1/pay/notify",
    "HostedZoneId": "Z0123456789ABCDEFGHIJ",
    "BasePath": "v1",
    "EgressSubnetIds": "subnet-0a,subnet-0b",
    "EgressSecurityGroupIds": "sg-0a",
    "AlarmEmail": "ops@example.com",
    "FunctionTracing": "Active",
    "Architecture": "x86_64",
    "Stage": "dev",
    "SafeDeploys": "true",
    "DeploymentType": "Linear10PercentEvery1Minute",
    "CustomerServiceHandover": "console",
    "CustomerServiceAutoReply": "您好，客服将尽快回复。",
}
COMBINATIONS = {"every option off": MINIMAL, "a domain alone": {**MINIMAL, **DOMAIN}, "every option on": EVERYTHING}

# X-Ray's write policy only with FunctionTracing=Active (its name differs outside `aws`); SAM
# attaches the VPC one whenever VpcConfig is written, even as an Fn::If that resolves to nothing.
ALLOWED_MANAGED = {"AWSLambdaBasicExecutionRole", "AWSLambdaVPCAccessExecutionRole"}
TRACING_MANAGED = {"AWSXrayWriteOnlyAccess", "AWSXRayDaemonWriteAccess"}

problems = []


def lint():
    for name, parameters in COMBINATIONS.items():
        command = [os.path.join(os.path.dirname(sys.executable), "cfn-lint"), "--regions", *REGIONS,
                   "--parameters", *[f"{k}={v}" for k, v in parameters.items()], "--", TEMPLATE]
        result = subprocess.run(command, capture_output=True, text=True)
        if result.returncode != 0:
            problems.append(f"cfn-lint, {name}:\n{result.stdout}{result.stderr}")


def translate(region, parameters):
    os.environ["AWS_DEFAULT_REGION"] = region
    ArnGenerator.BOTO_SESSION_REGION_NAME = region
    template, matches = decode(TEMPLATE)
    if matches:
        sys.exit(f"template.yaml does not parse: {matches}")
    template = copy.deepcopy(template)
    for resource in template["Resources"].values():
        if resource["Type"] == "AWS::Serverless::Function":
            # The translator wants code in S3, as `sam deploy` uploads it.
            resource["Properties"]["CodeUri"] = "s3://bucket/" + resource["Properties"]["CodeUri"]
    translated = Translator(managed_policy_map={}, sam_parser=Parser()).translate(
        sam_template=template, parameter_values=dict(parameters), passthrough_metadata=True)
    return json.loads(json.dumps(translated, default=str))


def strings(node, path=()):
    """Every string of `node` with the keys leading to it."""
    if isinstance(node, dict):
        for key, value in node.items():
            yield from strings(value, path + (key,))
    elif isinstance(node, list):
        for value in node:
            yield from strings(value, path)
    elif isinstance(node, str):
        yield path, node


def check_partition(where, region, translated):
    partition = REGIONS[region]
    for section in ("Resources", "Outputs"):
        for path, text in strings(translated.get(section, {})):
            start = text.find("arn:")
            while start != -1:
                if not text.startswith(f"arn:{partition}:", start) and not text.startswith("arn:${AWS::Partition}:", start):
                    problems.append(f"{where}: an ARN outside {partition} at {'/'.join(path)}: {text}")
                start = text.find("arn:", start + 4)
            if "amazonaws.com" in text and "Principal" not in path:
                problems.append(f"{where}: a literal amazonaws.com at {'/'.join(path)}: {text}")


def check_roles(region, translated, tracing):
    resources = translated["Resources"]
    for logical_id, resource in resources.items():
        if resource["Type"] != "AWS::Lambda::Function":
            continue
        role_id = resource["Properties"]["Role"]["Fn::GetAtt"][0]
        role = resources[role_id]["Properties"]
        for arn in role.get("ManagedPolicyArns", []):
            for _, text in strings(arn):
                allowed = ALLOWED_MANAGED | (TRACING_MANAGED if tracing else set())
                if text.startswith("arn:") and text.rsplit("/", 1)[-1] not in allowed:
                    problems.append(f"{region}: {logical_id} has the managed policy {text}")
        for policy in role.get("Policies", []):
            document = policy.get("PolicyDocument", {})
            for statement in document.get("Statement", []):
                if statement.get("Resource") in ("*", ["*"]):
                    problems.append(f"{region}: {logical_id} may {statement.get('Action')} on every resource")


def check_conditions(region, translated):
    resources = translated["Resources"]
    expected = {"ApiDomain": "DomainOn", "ApiDomainMapping": "DomainOn", "ApiDomainRecord": "DomainRecordOn"}
    for logical_id, condition in expected.items():
        got = resources.get(logical_id, {}).get("Condition")
        if got != condition:
            problems.append(f"{region}: {logical_id} exists under {got!r}, not {condition}")
    for logical_id, resource in resources.items():
        if resource["Type"].startswith(("AWS::ApiGatewayV2::DomainName", "AWS::ApiGatewayV2::ApiMapping",
                                        "AWS::Route53::")) and logical_id not in expected:
            problems.append(f"{region}: an unexpected domain resource {logical_id}")


def check_alarms(region, translated):
    resources = translated["Resources"]
    alarms = {}
    for resource in resources.values():
        if resource["Type"] != "AWS::CloudWatch::Alarm":
            continue
        properties = resource["Properties"]
        for dimension in properties.get("Dimensions", []):
            if dimension["Name"] == "FunctionName" and properties.get("Namespace") == "AWS/Lambda":
                alarms.setdefault(dimension["Value"]["Ref"], []).append(
                    (properties["MetricName"], resource.get("Condition")))
    for logical_id, resource in resources.items():
        if resource["Type"] != "AWS::Lambda::Function":
            continue
        have = sorted(alarms.get(logical_id, []))
        want = sorted((metric, resource.get("Condition")) for metric in ("Duration", "Errors", "Throttles"))
        if have != want:
            problems.append(f"{region}: {logical_id}'s alarms are {have}, not {want}")


def main():
    lint()
    for region in REGIONS:
        for name in ("every option off", "every option on"):
            parameters = COMBINATIONS[name]
            translated = translate(region, parameters)
            where = f"{region}, {name}"
            check_partition(where, region, translated)
            check_roles(where, translated, parameters.get("FunctionTracing") == "Active")
            check_conditions(where, translated)
            check_alarms(where, translated)
    if problems:
        print("\n".join(problems))
        sys.exit(1)
    print(f"template.yaml: cfn-lint clean in {', '.join(REGIONS)} with {len(COMBINATIONS)} combinations of options; "
          "the SAM translation keeps to the partition, least privilege, the domain's conditions and the alarms")


if __name__ == "__main__":
    main()
