#!/usr/bin/env python3
"""Creates the local AWS resources (on moto server) exactly as template.yaml declares them.

    local_aws.py --endpoint http://127.0.0.1:9200 setup \
        --sessions-table wxa-sessions --secret-id wxa/app --app-secret S

The table's key schema, attribute definitions and TTL attribute are read from the
SessionsTable resource of template.yaml, so local runs and tests cannot drift from what is
deployed. Idempotent: an existing table is kept, an existing secret gets the new value.
"""
import argparse
import json
import os
import sys

import boto3
import yaml

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


class _CfnLoader(yaml.SafeLoader):
    """Reads CloudFormation YAML: short-form intrinsics (!Ref, !GetAtt, !Sub...) become None."""


_CfnLoader.add_multi_constructor("!", lambda loader, suffix, node: None)


def table_definition(template_path, logical_id):
    with open(template_path, encoding="utf-8") as f:
        template = yaml.load(f, Loader=_CfnLoader)
    resource = template["Resources"][logical_id]
    if resource["Type"] != "AWS::DynamoDB::Table":
        sys.exit(f"{logical_id} in {template_path} is not a DynamoDB table")
    return resource["Properties"]


def client(service, endpoint):
    return boto3.client(
        service,
        endpoint_url=endpoint,
        region_name=os.environ.get("AWS_REGION", "us-east-1"),
        aws_access_key_id=os.environ.get("AWS_ACCESS_KEY_ID", "test"),
        aws_secret_access_key=os.environ.get("AWS_SECRET_ACCESS_KEY", "test"),
    )


def create_table(dynamodb, name, props):
    existing = dynamodb.list_tables()["TableNames"]
    if name not in existing:
        dynamodb.create_table(
            TableName=name,
            AttributeDefinitions=props["AttributeDefinitions"],
            KeySchema=props["KeySchema"],
            BillingMode=props.get("BillingMode", "PAY_PER_REQUEST"),
        )
        dynamodb.get_waiter("table_exists").wait(TableName=name)
    ttl = props.get("TimeToLiveSpecification")
    if ttl and ttl.get("Enabled"):
        current = dynamodb.describe_time_to_live(TableName=name)["TimeToLiveDescription"]
        if current.get("TimeToLiveStatus") not in ("ENABLED", "ENABLING"):
            dynamodb.update_time_to_live(
                TableName=name,
                TimeToLiveSpecification={"AttributeName": ttl["AttributeName"], "Enabled": True},
            )


def put_secret(secretsmanager, secret_id, value):
    text = json.dumps(value)
    try:
        secretsmanager.create_secret(Name=secret_id, SecretString=text)
    except secretsmanager.exceptions.ResourceExistsException:
        secretsmanager.put_secret_value(SecretId=secret_id, SecretString=text)


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--endpoint", required=True, help="moto server URL, e.g. http://127.0.0.1:9200")
    parser.add_argument("--template", default=os.path.join(ROOT, "template.yaml"))
    sub = parser.add_subparsers(dest="command", required=True)
    setup = sub.add_parser("setup", help="create the sessions table and the app secret")
    setup.add_argument("--sessions-table", required=True)
    setup.add_argument("--secret-id", required=True)
    setup.add_argument("--app-secret", required=True)
    args = parser.parse_args()

    if args.command == "setup":
        props = table_definition(args.template, "SessionsTable")
        create_table(client("dynamodb", args.endpoint), args.sessions_table, props)
        put_secret(client("secretsmanager", args.endpoint), args.secret_id, {"app_secret": args.app_secret})


if __name__ == "__main__":
    main()
