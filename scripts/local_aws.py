#!/usr/bin/env python3
"""Creates the local AWS resources (on moto server) exactly as template.yaml declares them.

    local_aws.py --endpoint http://127.0.0.1:9200 setup \
        --sessions-table wxa-sessions --orders-table wxa-orders --refunds-table wxa-refunds \
        [--transfers-table wxa-transfers] \
        --messages-table wxa-messages --tokens-table wxa-tokens \
        --app-secret-id wxa/app --app-secret S \
        [--pay-secret-id wxa/pay --pay-sim http://127.0.0.1:9100 --pay-dir .dev]
    local_aws.py --endpoint http://127.0.0.1:9200 put-order --orders-table wxa-orders \
        --out-trade-no T1 --openid o_x --description "A cup of tea" --amount-total 1

The tables' key schemas, attribute definitions, indexes and TTL attributes are read from the
SessionsTable, OrdersTable, RefundsTable, TransfersTable, MessagesTable and TokensTable resources of template.yaml, so local runs and tests cannot drift
from what is deployed. Idempotent: existing tables are kept, an existing secret gets the new value.

The secrets, as deployed: the app secret {"app_secret": ...}, with --push-secret-id the push secret
{"push_token", "push_aes_key"?} and, with --pay-sim, the pay secret:
a merchant key pair is made (kept in --pay-dir) and registered with the WeChat simulator, and the
pay secret holds the merchant's keys and the simulator's platform public key and certificate.
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
        extra = {}
        if props.get("GlobalSecondaryIndexes"):
            extra["GlobalSecondaryIndexes"] = props["GlobalSecondaryIndexes"]
        dynamodb.create_table(
            TableName=name,
            AttributeDefinitions=props["AttributeDefinitions"],
            KeySchema=props["KeySchema"],
            BillingMode=props.get("BillingMode", "PAY_PER_REQUEST"),
            **extra,
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


def pay_secrets(sim_url, pay_dir):
    """Registers a local merchant with the simulator; returns the pay secret's value."""
    import urllib.request
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric import rsa

    os.makedirs(pay_dir, exist_ok=True)
    key_path = os.path.join(pay_dir, "merchant_key.pem")
    if not os.path.exists(key_path):
        key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
        pem = key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                serialization.NoEncryption())
        with open(key_path, "wb") as f:
            f.write(pem)
        os.chmod(key_path, 0o600)
    with open(key_path, "rb") as f:
        key = serialization.load_pem_private_key(f.read(), password=None)
    private_pem = key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                    serialization.NoEncryption()).decode()
    public_pem = key.public_key().public_bytes(serialization.Encoding.PEM,
                                               serialization.PublicFormat.SubjectPublicKeyInfo).decode()
    merchant = {"mchid": "1900000109", "serial_no": "4D3F2A1B0C9E8D7F6A5B4C3D2E1F0A9B8C7D6E5F",
                "public_key": public_pem, "apiv3_key": "local-dev-apiv3-key-0123456789ab",
                "apiv2_key": "local-dev-apiv2-key-0123456789ab"}

    def call(method, path, body=None):
        data = None if body is None else json.dumps(body).encode()
        request = urllib.request.Request(sim_url + path, data=data, method=method,
                                         headers={"content-type": "application/json"})
        with urllib.request.urlopen(request, timeout=10) as response:
            text = response.read().decode()
            return json.loads(text) if text else None

    call("POST", "/__sim/pay/merchant", merchant)
    platform = call("GET", "/__sim/pay/platform")
    return {
        "mchid": merchant["mchid"],
        "merchant_serial_no": merchant["serial_no"],
        "merchant_private_key": private_pem,
        "apiv3_key": merchant["apiv3_key"],
        "apiv2_key": merchant["apiv2_key"],
        "platform_keys": [
            {"id": platform["public_key_id"], "public_key": platform["public_key"]},
            {"id": platform["certificate_serial"], "certificate": platform["certificate"]},
        ],
    }


def put_order(dynamodb, table, out_trade_no, openid, description, amount_total):
    dynamodb.put_item(TableName=table, Item={
        "out_trade_no": {"S": out_trade_no}, "openid": {"S": openid}, "description": {"S": description},
        "amount_total": {"N": str(amount_total)}, "status": {"S": "UNPAID"},
    })


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
    setup = sub.add_parser("setup", help="create the tables and the secrets")
    setup.add_argument("--sessions-table", required=True)
    setup.add_argument("--orders-table", required=True)
    setup.add_argument("--refunds-table", required=True)
    setup.add_argument("--transfers-table", help="the merchant transfers table (made when given)")
    setup.add_argument("--messages-table", required=True)
    setup.add_argument("--tokens-table", required=True)
    setup.add_argument("--app-secret-id", required=True)
    setup.add_argument("--app-secret", required=True)
    setup.add_argument("--push-secret-id", help="the push secret's name (with --push-token)")
    setup.add_argument("--push-token", help="the message push's Token (kept in the push secret)")
    setup.add_argument("--push-aes-key", help="the message push's EncodingAESKey (43 characters)")
    setup.add_argument("--pay-secret-id", help="the pay secret's name (with --pay-sim)")
    setup.add_argument("--pay-sim", help="WeChat simulator URL: register a local merchant, write its keys")
    setup.add_argument("--pay-dir", default=".dev", help="where the local merchant key is kept")
    order = sub.add_parser("put-order", help="put an UNPAID order, as the merchant's system would")
    order.add_argument("--orders-table", required=True)
    order.add_argument("--out-trade-no", required=True)
    order.add_argument("--openid", required=True)
    order.add_argument("--description", required=True)
    order.add_argument("--amount-total", type=int, required=True, help="in fen")
    show = sub.add_parser("get-order", help="print an order as JSON")
    show.add_argument("--orders-table", required=True)
    show.add_argument("--out-trade-no", required=True)
    args = parser.parse_args()

    if args.command == "setup":
        dynamodb = client("dynamodb", args.endpoint)
        create_table(dynamodb, args.sessions_table, table_definition(args.template, "SessionsTable"))
        create_table(dynamodb, args.orders_table, table_definition(args.template, "OrdersTable"))
        create_table(dynamodb, args.refunds_table, table_definition(args.template, "RefundsTable"))
        if args.transfers_table:
            create_table(dynamodb, args.transfers_table, table_definition(args.template, "TransfersTable"))
        create_table(dynamodb, args.messages_table, table_definition(args.template, "MessagesTable"))
        create_table(dynamodb, args.tokens_table, table_definition(args.template, "TokensTable"))
        secretsmanager = client("secretsmanager", args.endpoint)
        put_secret(secretsmanager, args.app_secret_id, {"app_secret": args.app_secret})
        if args.push_token:
            if not args.push_secret_id:
                sys.exit("--push-token needs --push-secret-id")
            push = {"push_token": args.push_token}
            if args.push_aes_key:
                push["push_aes_key"] = args.push_aes_key
            put_secret(secretsmanager, args.push_secret_id, push)
        if args.pay_sim:
            if not args.pay_secret_id:
                sys.exit("--pay-sim needs --pay-secret-id")
            put_secret(secretsmanager, args.pay_secret_id, pay_secrets(args.pay_sim.rstrip("/"), args.pay_dir))
    elif args.command == "get-order":
        item = client("dynamodb", args.endpoint).get_item(
            TableName=args.orders_table, Key={"out_trade_no": {"S": args.out_trade_no}}, ConsistentRead=True
        ).get("Item", {})
        print(json.dumps({k: next(iter(v.values())) for k, v in item.items()}, sort_keys=True))
    elif args.command == "put-order":
        put_order(client("dynamodb", args.endpoint), args.orders_table, args.out_trade_no, args.openid,
                  args.description, args.amount_total)


if __name__ == "__main__":
    main()
