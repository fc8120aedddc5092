"""Shared object storage for the uploaded files of a multi-server deployment.

A dialog server without S3 keeps uploaded files on its own disk, so with several dialog servers
a download fails on every server but the one that took the upload. Tiers with more than one
server and without the self-hosted Ceph storage (with_storage) therefore keep files in a
bucket:
- aws: an S3 bucket the pack creates, named from the deployment and the account (bucket names
  are global), tagged dialog:deployment, versioning off (S3's default), every kind of public
  access blocked;
- digitalocean: a Spaces bucket the pack creates through Spaces' S3 API at
  https://<region>.digitaloceanspaces.com with the profile's Spaces keys (Spaces buckets are
  private unless an ACL says otherwise, and Spaces has neither bucket tags nor a public access
  block: the name carries the deployment);
- any provider: an S3 endpoint and bucket the operator names (profile object_storage); the
  pack then never creates or deletes it.
Mini (one server) keeps its files on its own disk.

A bucket holds the users' files, so destroy keeps it unless asked to delete data.
"""

import hashlib
import json
from urllib.parse import unquote

from botocore.exceptions import ClientError

from lib.errors import InputError, ProviderError
from lib.providers.base import MANAGED_BY, TAG_DEPLOYMENT, TAG_MANAGED, change

SPACES_ENDPOINT = "https://%s.digitaloceanspaces.com"
PAGE = 1000     # DeleteObjects takes at most 1000 keys


def needs_shared_files(plan):
    """True when the plan's dialog servers need a bucket: more than one server and no
    self-hosted S3 storage."""
    return len(plan["hosts"]) > 1 and not plan.get("with_storage")


def operator_storage(profile):
    """The profile's object_storage, checked: None when not given."""
    given = profile.get("object_storage")
    # StackStorm's config loader fills in schema defaults of nested fields: an object holding
    # nothing but path_style was never written by the operator.
    if not isinstance(given, dict) or not any(v for k, v in given.items() if k != "path_style"):
        return None
    missing = [k for k in ("endpoint", "bucket", "access_key_id", "secret_access_key")
               if not given.get(k)]
    if missing:
        raise InputError("object_storage", "needs %s" % ", ".join(missing),
                         ["endpoint", "bucket", "access_key_id", "secret_access_key", "region"])
    if not str(given["endpoint"]).startswith(("https://", "http://")):
        raise InputError("object_storage", "endpoint %r is not an http(s) URL"
                         % (given["endpoint"],))
    return dict(given)


def bucket_name(deployment, account, region):
    """dialog-<deployment>-<8 hex>: the same on every run for one account and region, and
    unlike another account's (S3 and Spaces bucket names are global). 63 characters at most."""
    digest = hashlib.sha256(("%s|%s|%s" % (account, region, deployment)).encode()).hexdigest()
    return "dialog-%s-%s" % (deployment, digest[:8])


def _code(exc):
    return str(exc.response.get("Error", {}).get("Code", ""))


class Bucket:
    """One bucket behind an S3 client (boto3). aws=True: tag it and block public access."""

    def __init__(self, client, name, region, deployment, aws=True, where=""):
        self.client = client
        self.name = name
        self.region = region
        self.deployment = deployment
        self.aws = aws
        self.where = where

    def exists(self):
        try:
            self.client.head_bucket(Bucket=self.name)
            return True
        except ClientError as exc:
            if _code(exc) in ("404", "NoSuchBucket", "NotFound"):
                return False
            if _code(exc) in ("403", "AccessDenied"):
                raise ProviderError("%s: bucket %s exists but this account may not use it; it "
                                    "belongs to someone else or the keys lack s3 permissions"
                                    % (self.where, self.name)) from None
            raise

    def ensure(self, dry_run=False):
        """Create what is missing; the change records."""
        if not self.exists():
            detail = "private, versioning off" + (", public access blocked" if self.aws else "")
            if not dry_run:
                params = {"Bucket": self.name}
                if self.region and self.region != "us-east-1":
                    params["CreateBucketConfiguration"] = {"LocationConstraint": self.region}
                self.client.create_bucket(**params)
                if self.aws:
                    self._block_public_access()
                    self._tag()
            return [change("create", "bucket", self.name, detail)]
        if not self.aws:
            return []
        changes = []
        tags = self._tags()
        if tags.get(TAG_DEPLOYMENT) not in (None, self.deployment):
            raise ProviderError("%s: bucket %s is tagged for deployment %s"
                                % (self.where, self.name, tags[TAG_DEPLOYMENT]))
        if tags.get(TAG_DEPLOYMENT) != self.deployment:
            changes.append(change("update", "bucket", self.name, "tags"))
            if not dry_run:
                self._tag()
        if not self._public_access_blocked():
            changes.append(change("update", "bucket", self.name, "block public access"))
            if not dry_run:
                self._block_public_access()
        return changes

    def _tag(self):
        self.client.put_bucket_tagging(Bucket=self.name, Tagging={"TagSet": [
            {"Key": TAG_DEPLOYMENT, "Value": self.deployment},
            {"Key": TAG_MANAGED, "Value": MANAGED_BY}]})

    def _tags(self):
        try:
            found = self.client.get_bucket_tagging(Bucket=self.name)["TagSet"]
        except ClientError as exc:
            if _code(exc) == "NoSuchTagSet":
                return {}
            raise
        return {t["Key"]: t["Value"] for t in found}

    def _block_public_access(self):
        self.client.put_public_access_block(Bucket=self.name, PublicAccessBlockConfiguration={
            "BlockPublicAcls": True, "IgnorePublicAcls": True, "BlockPublicPolicy": True,
            "RestrictPublicBuckets": True})

    def _public_access_blocked(self):
        try:
            config = self.client.get_public_access_block(
                Bucket=self.name)["PublicAccessBlockConfiguration"]
        except ClientError as exc:
            if _code(exc) == "NoSuchPublicAccessBlockConfiguration":
                return False
            raise
        return all(config.get(k) for k in ("BlockPublicAcls", "IgnorePublicAcls",
                                           "BlockPublicPolicy", "RestrictPublicBuckets"))

    def destroy(self, delete_data=False, dry_run=False):
        """(changes, kept): the bucket goes, with every object in it, only with delete_data."""
        if not self.exists():
            return [], []
        if not delete_data:
            return [], ["bucket %s (uploaded files; destroy with delete_data=true to delete it)"
                        % self.name]
        if not dry_run:
            self._empty()
            self.client.delete_bucket(Bucket=self.name)
        return [change("delete", "bucket", self.name, "with every uploaded file")], []

    def _empty(self):
        """S3 deletes only empty buckets; versions too, should someone have turned them on."""
        pages = self.client.get_paginator("list_object_versions").paginate(Bucket=self.name)
        keys = []
        for page in pages:
            for item in (page.get("Versions") or []) + (page.get("DeleteMarkers") or []):
                keys.append({"Key": item["Key"], "VersionId": item["VersionId"]})
        for start in range(0, len(keys), PAGE):
            self.client.delete_objects(Bucket=self.name,
                                       Delete={"Objects": keys[start:start + PAGE],
                                               "Quiet": True})


def s3_client(endpoint, access_key_id, secret_access_key, region, calls=None):
    """A boto3 S3 client on an S3-compatible endpoint (Spaces, the operator's); calls: a
    base.CallLog that records each call, mutating unless it only reads."""
    import boto3    # boto3 loads only where object storage is used
    from botocore.config import Config
    client = boto3.session.Session().client(
        "s3", endpoint_url=endpoint, region_name=region or "us-east-1",
        aws_access_key_id=access_key_id, aws_secret_access_key=secret_access_key,
        config=Config(retries={"mode": "standard", "max_attempts": 8},
                      s3={"addressing_style": "path"}))
    if calls is not None:
        def after_call(http_response, model, **_):
            if http_response is not None and http_response.status_code < 300:
                calls.record(model.name, not model.name.startswith(("Head", "Get", "List")))
        client.meta.events.register("after-call", after_call)
    return client


def spaces_bucket(profile, region, deployment, account, calls=None, where=""):
    """The Spaces bucket of a DigitalOcean deployment, or None when the profile names the
    operator's object storage. Spaces needs its own keys (the API token cannot sign S3)."""
    if operator_storage(profile):
        return None
    missing = [k for k in ("spaces_access_key_id", "spaces_secret_access_key")
               if not profile.get(k)]
    if missing:
        raise InputError(missing[0], "a multi-server deployment keeps uploaded files in a "
                         "Spaces bucket: create a Spaces access key (API > Spaces Keys) and set "
                         "spaces_access_key_id and spaces_secret_access_key in the profile, or "
                         "name your own S3 storage in object_storage")
    endpoint = profile.get("spaces_endpoint_url") or SPACES_ENDPOINT % region
    client = s3_client(endpoint, profile["spaces_access_key_id"],
                       profile["spaces_secret_access_key"], region, calls)
    return Bucket(client, bucket_name(deployment, account, region), region, deployment,
                  aws=False, where=where)


def spaces_settings(profile, region, bucket):
    return {"endpoint": profile.get("spaces_endpoint_url") or SPACES_ENDPOINT % region,
            "bucket": bucket.name, "region": region, "path_style": False,
            "access_key_id": profile["spaces_access_key_id"],
            "secret_access_key": profile["spaces_secret_access_key"]}


class BucketUser:
    """The IAM user the dialog servers sign S3 requests as: allowed the files bucket only.

    Its access key's secret is shown once, at creation; the caller keeps it (encrypted, in
    the datastore) and hands it back as `stored`. A pair AWS no longer knows is replaced."""

    PATH = "/dialog/"
    POLICY = "dialog-files"

    def __init__(self, iam, deployment, bucket, tags=()):
        self.iam = iam
        self.name = "dialog-%s-files" % deployment
        self.bucket = bucket
        self.tags = list(tags)

    def _policy(self):
        arn = "arn:aws:s3:::%s" % self.bucket
        return json.dumps({"Version": "2012-10-17", "Statement": [
            {"Effect": "Allow", "Action": ["s3:ListBucket", "s3:GetBucketLocation"],
             "Resource": arn},
            {"Effect": "Allow", "Action": ["s3:GetObject", "s3:PutObject", "s3:DeleteObject",
                                           "s3:AbortMultipartUpload"],
             "Resource": arn + "/*"}]}, sort_keys=True)

    def _exists(self):
        try:
            self.iam.get_user(UserName=self.name)
            return True
        except ClientError as exc:
            if _code(exc) == "NoSuchEntity":
                return False
            raise

    def _has_policy(self):
        try:
            found = self.iam.get_user_policy(UserName=self.name, PolicyName=self.POLICY)
        except ClientError as exc:
            if _code(exc) == "NoSuchEntity":
                return False
            raise
        document = found["PolicyDocument"]
        if isinstance(document, str):   # IAM returns it URL-encoded
            document = json.loads(unquote(document))
        return json.dumps(document, sort_keys=True) == self._policy()

    def ensure(self, dry_run=False):
        changes = []
        exists = self._exists()
        if not exists:
            changes.append(change("create", "iam-user", self.name,
                                  "may use bucket %s only" % self.bucket))
            if not dry_run:
                self.iam.create_user(UserName=self.name, Path=self.PATH, Tags=self.tags)
        if exists and self._has_policy():
            return changes
        if exists:
            changes.append(change("update", "iam-user", self.name, "bucket policy"))
        if not dry_run:
            self.iam.put_user_policy(UserName=self.name, PolicyName=self.POLICY,
                                     PolicyDocument=self._policy())
        return changes

    def credentials(self, stored=None, create=True):
        """({access_key_id, secret_access_key}, new): the stored pair while AWS has it."""
        keys = [k["AccessKeyId"] for k in
                self.iam.list_access_keys(UserName=self.name)["AccessKeyMetadata"]]
        stored = stored or {}
        if stored.get("access_key_id") in keys and stored.get("secret_access_key"):
            return {"access_key_id": stored["access_key_id"],
                    "secret_access_key": stored["secret_access_key"]}, False
        if not create:
            raise InputError("deployment", "the datastore keeps no valid key of IAM user %s "
                             "for the files bucket %s; run dialog.provision (it makes one)"
                             % (self.name, self.bucket))
        for key in keys:    # secrets nobody kept: useless, and IAM allows two per user
            self.iam.delete_access_key(UserName=self.name, AccessKeyId=key)
        made = self.iam.create_access_key(UserName=self.name)["AccessKey"]
        return {"access_key_id": made["AccessKeyId"],
                "secret_access_key": made["SecretAccessKey"]}, True

    def destroy(self, dry_run=False):
        if not self._exists():
            return []
        if not dry_run:
            for key in self.iam.list_access_keys(UserName=self.name)["AccessKeyMetadata"]:
                self.iam.delete_access_key(UserName=self.name, AccessKeyId=key["AccessKeyId"])
            for policy in self.iam.list_user_policies(UserName=self.name)["PolicyNames"]:
                self.iam.delete_user_policy(UserName=self.name, PolicyName=policy)
            self.iam.delete_user(UserName=self.name)
        return [change("delete", "iam-user", self.name)]


FILES_KEY = "dialog.%s.files_key"


def load_stored_keys(datastore, deployment):
    """The files bucket's key pair kept in the datastore (encrypted), or None."""
    stored = datastore.get_value(FILES_KEY % deployment, local=False, decrypt=True)
    return json.loads(stored) if stored else None


# What provision keeps of an AWS files bucket: the key pair (AWS shows a secret key once) and
# where the bucket is, so that the bootstraps need no cloud call to render server.conf.
KEPT_SETTINGS = ("access_key_id", "secret_access_key", "endpoint", "bucket", "region",
                 "path_style")


def store_keys(datastore, deployment, settings):
    datastore.set_value(FILES_KEY % deployment, json.dumps(
        {key: settings[key] for key in KEPT_SETTINGS if key in settings}), local=False,
        encrypt=True)


def files_settings(datastore, driver, deployment, hosts, with_storage, create=False):
    """Where the dialog servers keep uploaded files, for render: None on one-server
    deployments, with self-hosted storage, and on static hosts without object_storage.
    create: make (and keep) the AWS bucket's key when none is kept. Only one action at a time
    may do that (IAM allows two keys per user; parallel bootstraps would replace each
    other's), so the bootstraps read and dialog.provision creates."""
    if with_storage or len(hosts) <= 1:
        return None
    given = operator_storage(driver.profile)
    if given:
        return dict(given, path_style=bool(given.get("path_style", True)))
    if not hasattr(driver, "object_storage_settings"):
        return None
    if driver.name != "aws":
        return driver.object_storage_settings(deployment)
    stored = load_stored_keys(datastore, deployment)
    if not create and stored and all(stored.get(key) is not None for key in KEPT_SETTINGS):
        # What dialog.provision found and kept: every parallel bootstrap would otherwise make
        # its own STS and IAM calls (and boto3 clients) for the same answer.
        return {key: stored[key] for key in KEPT_SETTINGS}
    settings = driver.object_storage_settings(deployment, stored, create=create)
    new = settings.pop("new_credentials", False)
    kept = {key: settings[key] for key in KEPT_SETTINGS if key in settings}
    if new or (create and kept != stored):
        store_keys(datastore, deployment, settings)
    return settings
