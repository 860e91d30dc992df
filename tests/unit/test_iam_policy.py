"""The permission tests' IAM evaluator (tests/iam_policy.py): IAM's own rules for what the
template's roles use, and the IAM request each kind of botocore call is authorized as."""

from __future__ import annotations

import pytest

from tests.iam_policy import Arns, Call, Policy, Request, UnmappedCallError, requests_of

ARNS = Arns("us-east-1", "123456789012", {"t": "pk", "t/index/ByTenant": "tenant_kind"})
TABLE = "arn:aws:dynamodb:us-east-1:123456789012:table/t"
BUCKET = "arn:aws:s3:::b"


def policy(*statements: dict[str, object]) -> Policy:
    return Policy(tuple({"Effect": "Allow", **s} for s in statements))


def test_wildcards_in_actions_and_resources() -> None:
    role = policy({"Action": ["s3:Get*"], "Resource": f"{BUCKET}/batches/*/results/*"})
    assert role.allowed("s3:GetObject", f"{BUCKET}/batches/x/results/0/p.jsonl")
    assert role.allowed("S3:getobjectversion", f"{BUCKET}/batches/x/results/p")  # any case
    assert not role.allowed("s3:PutObject", f"{BUCKET}/batches/x/results/p")
    assert not role.allowed("s3:GetObject", f"{BUCKET}/batches/x/shards/p")
    assert not role.allowed("s3:GetObject", f"{BUCKET}x/batches/x/results/p")  # another bucket


def test_an_explicit_deny_wins_and_nothing_is_allowed_by_default() -> None:
    role = policy(
        {"Action": "dynamodb:*", "Resource": "*"},
        {"Effect": "Deny", "Action": "dynamodb:DeleteTable", "Resource": TABLE},
    )
    assert role.allowed("dynamodb:PutItem", TABLE)
    assert not role.allowed("dynamodb:DeleteTable", TABLE)
    assert not policy().allowed("dynamodb:GetItem", TABLE)
    assert not policy({"NotAction": "s3:*", "Resource": "*"}).allowed("s3:GetObject", BUCKET)


def test_conditions_as_iam_evaluates_them() -> None:
    leading = {"ForAllValues:StringLike": {"dynamodb:LeadingKeys": ["BATCH#*"]}}
    role = policy({"Action": "dynamodb:*", "Resource": TABLE, "Condition": leading})
    assert role.allowed("dynamodb:GetItem", TABLE, dynamodb__LeadingKeys="BATCH#b")
    assert not role.allowed("dynamodb:GetItem", TABLE, dynamodb__LeadingKeys="APIKEY#k")
    keys = ["BATCH#b", "FILE#f"]
    assert not role.allowed("dynamodb:BatchGetItem", TABLE, dynamodb__LeadingKeys=keys)
    assert role.allowed("dynamodb:Scan", TABLE)  # IAM's pitfall: no key, ForAllValues holds
    prefix = {"StringLike": {"s3:prefix": ["batches/*"]}}
    lister = policy({"Action": "s3:ListBucket", "Resource": BUCKET, "Condition": prefix})
    assert lister.allowed("s3:ListBucket", BUCKET, s3__prefix="batches/x/")
    assert not lister.allowed("s3:ListBucket", BUCKET, s3__prefix="files/")
    assert not lister.allowed("s3:ListBucket", BUCKET)  # no prefix: the key is missing
    unknown = policy({"Action": "*", "Resource": "*", "Condition": {"DateLessThan": {"k": "v"}}})
    with pytest.raises(ValueError, match="DateLessThan"):
        unknown.allowed("s3:GetObject", BUCKET)


@pytest.mark.parametrize(
    ("call", "expected"),
    [
        (
            Call("s3", "CopyObject", {"Bucket": "b", "Key": "t", "CopySource": "b/s?versionId=7"}),
            ["s3:GetObjectVersion on arn:aws:s3:::b/s", "s3:PutObject on arn:aws:s3:::b/t"],
        ),
        (
            Call(
                "s3",
                "UploadPartCopy",
                {"Bucket": "b", "Key": "t", "CopySource": {"Bucket": "b", "Key": "s"}},
            ),
            ["s3:GetObject on arn:aws:s3:::b/s", "s3:PutObject on arn:aws:s3:::b/t"],
        ),
        (
            Call("s3", "HeadObject", {"Bucket": "b", "Key": "k", "VersionId": "v"}),
            ["s3:GetObjectVersion on arn:aws:s3:::b/k"],
        ),
        (
            Call("s3", "GetObject", {"Bucket": "b", "Key": "k"}, presigned=True),
            ["s3:GetObject on arn:aws:s3:::b/k"],
        ),
        (
            Call("s3", "DeleteObjects", {"Bucket": "b", "Delete": {"Objects": [{"Key": "k"}]}}),
            ["s3:DeleteObject on arn:aws:s3:::b/k"],
        ),
        (
            Call("s3", "ListObjectVersions", {"Bucket": "b", "Prefix": "p/"}),
            ["s3:ListBucketVersions on arn:aws:s3:::b s3:prefix=['p/']"],
        ),
        (
            Call("s3", "AbortMultipartUpload", {"Bucket": "b", "Key": "k", "UploadId": "u"}),
            ["s3:AbortMultipartUpload on arn:aws:s3:::b/k"],
        ),
        (
            Call(
                "dynamodb",
                "Query",
                {
                    "TableName": "t",
                    "IndexName": "ByTenant",
                    "KeyConditionExpression": "#tk = :tk AND created_sort > :after",
                    "ExpressionAttributeNames": {"#tk": "tenant_kind"},
                    "ExpressionAttributeValues": {":tk": {"S": "x#batch"}, ":after": {"S": ""}},
                },
            ),
            [f"dynamodb:Query on {TABLE}/index/ByTenant dynamodb:LeadingKeys=['x#batch']"],
        ),
        (
            Call(
                "dynamodb",
                "TransactWriteItems",
                {
                    "TransactItems": [
                        {"ConditionCheck": {"TableName": "t", "Key": {"pk": {"S": "A"}}}},
                        {"Put": {"TableName": "t", "Item": {"pk": {"S": "B"}, "x": {"N": "1"}}}},
                    ]
                },
            ),
            [
                f"dynamodb:ConditionCheckItem on {TABLE} dynamodb:LeadingKeys=['A']",
                f"dynamodb:PutItem on {TABLE} dynamodb:LeadingKeys=['B']",
            ],
        ),
        (
            Call(
                "sqs", "SendMessageBatch", {"QueueUrl": "https://sqs.eu-west-1.amazonaws.com/1/q"}
            ),
            ["sqs:SendMessage on arn:aws:sqs:eu-west-1:1:q"],
        ),
        (
            Call("sqs", "ChangeMessageVisibilityBatch", {"QueueUrl": "https://x/1/q"}),
            ["sqs:ChangeMessageVisibility on arn:aws:sqs:us-east-1:1:q"],
        ),
        (
            Call("states", "SendTaskSuccess", {"taskToken": "t", "output": "{}"}),
            ["states:SendTaskSuccess on *"],
        ),
        (
            Call("events", "PutEvents", {"Entries": [{"EventBusName": "default"}]}),
            ["events:PutEvents on arn:aws:events:us-east-1:123456789012:event-bus/default"],
        ),
    ],
)
def test_each_call_is_the_iam_request_aws_authorizes(call: Call, expected: list[str]) -> None:
    assert [str(request) for request in requests_of(call, ARNS)] == expected


@pytest.mark.parametrize(
    "call",
    [
        Call("s3", "PutBucketPolicy", {"Bucket": "b"}),
        Call("s3", "PutObject", {"Bucket": "b", "Key": "k"}, presigned=True),
        Call("dynamodb", "ExecuteStatement", {"Statement": "SELECT"}),
        Call("lambda", "Invoke", {"FunctionName": "f"}),
    ],
)
def test_a_call_with_no_mapping_fails_instead_of_passing(call: Call) -> None:
    with pytest.raises(UnmappedCallError):
        requests_of(call, ARNS)


def test_a_request_prints_its_condition_keys() -> None:
    request = Request("s3:ListBucket", BUCKET, {"s3:prefix": ("a/",)})
    assert str(request) == "s3:ListBucket on arn:aws:s3:::b s3:prefix=['a/']"
