"""The README's "Deploying for real" checklist cannot go stale: its IAM policy parses and allows
every AWS API operation the AWS driver, the preflight and the shared-files bucket call, derived
from their source with botocore's own method-to-operation mapping, and no operation they do not
call."""

import fnmatch
import glob
import json
import os
import re

import boto3
import pytest
import yaml

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
AWS_CODE = [os.path.join(ROOT, "actions", "lib", "providers", "aws.py")] + sorted(
    glob.glob(os.path.join(ROOT, "actions", "lib", "cloud", "*.py")))
# IAM prefix per botocore service name.
SERVICES = {"ec2": "ec2", "sts": "sts", "service-quotas": "servicequotas", "s3": "s3",
            "iam": "iam"}
# S3 operations whose IAM action has another name (Amazon S3 User Guide, "Actions, resources,
# and condition keys for Amazon S3").
S3_ACTIONS = {"ListObjectsV2": "ListBucket", "ListObjects": "ListBucket",
              "HeadBucket": "ListBucket", "ListBuckets": "ListAllMyBuckets",
              "DeleteObjects": "DeleteObject", "HeadObject": "GetObject",
              "PutPublicAccessBlock": "PutBucketPublicAccessBlock",
              "GetPublicAccessBlock": "GetBucketPublicAccessBlock",
              "DeletePublicAccessBlock": "PutBucketPublicAccessBlock",
              "ListObjectVersions": "ListBucketVersions"}
# IAM actions a call needs besides its own: CreateUser with Tags also needs iam:TagUser (IAM
# User Guide, "Tagging IAM users"); DeleteObjects naming a VersionId, as emptying a bucket
# from its ListObjectVersions does, needs s3:DeleteObjectVersion (S3 API Reference,
# DeleteObjects).
IMPLIED = {"create_user": ["iam:TagUser"], "list_object_versions": ["s3:DeleteObjectVersion"]}


def readme():
    with open(os.path.join(ROOT, "README.md"), encoding="utf-8") as handle:
        return handle.read()


def policy():
    block = readme().split("<!-- iam-policy:start -->", 1)[1].split("<!-- iam-policy:end -->")[0]
    return json.loads(block.strip().removeprefix("```json").removesuffix("```"))


def allowed_actions():
    actions = []
    for statement in policy()["Statement"]:
        assert statement["Effect"] == "Allow"
        listed = statement["Action"]
        actions += [listed] if isinstance(listed, str) else listed
    return actions


def code_words():
    words = set()
    for path in AWS_CODE:
        with open(path, encoding="utf-8") as handle:
            words |= set(re.findall(r"\b([a-z][a-z0-9_]*)\b", handle.read()))
    return words


def called_actions():
    """IAM actions of every boto3 client method named in the code (a call, a paginator or a
    _describe("...") name); the waiters the driver uses poll DescribeInstances."""
    words = code_words()
    needed = set()
    for service, prefix in SERVICES.items():
        mapping = boto3.client(service, region_name="us-east-1",
                               aws_access_key_id="x", aws_secret_access_key="x"
                               ).meta.method_to_api_mapping
        for word in words & set(mapping):
            operation = mapping[word]
            if service == "s3":
                operation = S3_ACTIONS.get(operation, operation)
            needed.add("%s:%s" % (prefix, operation))
    if "get_waiter" in words:
        needed.add("ec2:DescribeInstances")
    for word, implied in IMPLIED.items():
        if word in words:
            needed.update(implied)
    return needed


def test_the_policy_is_valid_iam_json():
    document = policy()
    assert document["Version"] == "2012-10-17"
    actions = allowed_actions()
    assert len(actions) == len(set(actions)), "an action is listed twice"
    assert all(re.match(r"^[a-z0-9-]+:[A-Za-z*]+$", a) for a in actions), actions


def test_the_policy_allows_every_aws_call_the_code_makes():
    needed = called_actions()
    # The derivation itself must see the calls it is meant to see.
    assert {"ec2:RunInstances", "ec2:DescribeKeyPairs", "ec2:DescribeInstanceTypeOfferings",
            "servicequotas:GetServiceQuota", "sts:AssumeRole", "sts:GetCallerIdentity",
            "s3:CreateBucket", "iam:CreateUser", "iam:TagUser", "iam:CreateAccessKey"} <= needed
    allowed = allowed_actions()
    missing = sorted(a for a in needed if not any(fnmatch.fnmatchcase(a, p) for p in allowed))
    assert not missing, "add to the README's IAM policy: %s" % ", ".join(missing)


def test_the_policy_lists_no_call_the_code_does_not_make():
    needed = called_actions()
    extra = sorted(a for a in allowed_actions()
                   if a.split(":")[0] in SERVICES.values() and a not in needed)
    assert not extra, "the README's IAM policy allows calls nothing makes: %s" % extra


@pytest.mark.parametrize("service", sorted(SERVICES))
def test_every_listed_action_is_an_operation_of_its_service(service):
    mapping = boto3.client(service, region_name="us-east-1", aws_access_key_id="x",
                           aws_secret_access_key="x").meta.method_to_api_mapping
    operations = set(mapping.values())
    if service == "s3":
        operations |= set(S3_ACTIONS.values())
    prefix = SERVICES[service] + ":"
    operations |= {a[len(prefix):] for implied in IMPLIED.values() for a in implied
                   if a.startswith(prefix)}
    unknown = [a for a in allowed_actions()
               if a.startswith(prefix) and a[len(prefix):] not in operations]
    assert not unknown, unknown


def test_the_checklist_names_the_preflight_and_every_secret_field():
    section = readme().split("### Deploying for real: the checklist", 1)[1].split("\n### ")[0]
    assert "st2 run dialog.preflight" in section
    with open(os.path.join(ROOT, "config.schema.yaml"), encoding="utf-8") as handle:
        profile = yaml.safe_load(handle)["profiles"]["additionalProperties"]["properties"]
    secrets = []    # (enclosing field or None, field), nested objects such as object_storage too
    for name, spec in profile.items():
        if spec.get("secret"):
            secrets.append((None, name))
        for inner, inner_spec in (spec.get("properties") or {}).items():
            if inner_spec.get("secret"):
                secrets.append((name, inner))
    assert (None, "digitalocean_token") in secrets
    assert ("object_storage", "secret_access_key") in secrets
    unnamed = [".".join(filter(None, s)) for s in secrets
               if "`%s:" % s[1] not in section or s[0] and "`%s:" % s[0] not in section]
    assert not unnamed, "say where these secrets go: %s" % unnamed
