#!/usr/bin/python
# Copyright: (c) 2026, TokoTani DevOps Team
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
# Engine: plugins/module_utils/offsite_object.py (put).

DOCUMENTATION = r"""
module: offsite_object
short_description: Put one file into the offsite bucket once, with S3 Object Lock retention when the bucket has it
version_added: "0.3.0"
description:
  - Uploads O(src) to C(<prefix>/<name>) in the bucket, for what must outlive the server it came from - a breach's
    evidence bundle (M(tokotani.dr.evidence_bundle)), an incident report.
  - Written once. The object carries the file's sha256 in its metadata (C(x-amz-meta-sha256)) and an S3 SHA-256
    checksum the endpoint checks on arrival; it is read back after the upload and must match. The same bytes
    already under the name change nothing; other bytes under it are refused, and nothing is uploaded.
  - "When the bucket has S3 Object Lock (it can only be enabled when the bucket is created), the object gets a
    retention of O(retention_days) in O(lock_mode): until then it cannot be deleted or overwritten, by the
    server's own keys or anybody else's (C(compliance)), or only by a principal allowed to bypass governance
    retention (C(governance)). The retention is read back from the object and returned, never assumed."
  - Without Object Lock on the bucket, O(object_lock=auto) stores the object unlocked and warns;
    O(object_lock=required) refuses before uploading.
  - Everything read back (the existing object's head, the bucket's lock configuration) is type-checked before use.
author:
  - TokoTani DevOps Team (@tokotani)
extends_documentation_fragment:
  - tokotani.dr.s3
attributes:
  check_mode:
    support: full
    description:
      - Reads the bucket and the existing object and reports what would be uploaded and how it would be locked.
  diff_mode:
    support: none
    description: An object is never replaced, so there is nothing to compare.
options:
  src:
    description:
      - The local file to upload (a regular file; a symbolic link is refused).
    type: path
    required: true
  name:
    description:
      - Its key under O(prefix), for example V(evidence/evidence-shop1-20261208T031500Z.tar.gz).
      - Letters, digits, C(.), C(_) and C(-), up to 8 segments separated by C(/), none starting with a dot.
    type: str
    required: true
  retention_days:
    description:
      - Days the object stays locked when the bucket has Object Lock. V(0) leaves it to the bucket's default
        retention, if it has one.
    type: int
    default: 0
  lock_mode:
    description:
      - V(governance) (a principal with C(s3:BypassGovernanceRetention) can still remove it) or V(compliance)
        (nobody can, the root account included, until the retention ends).
    type: str
    choices: [governance, compliance]
    default: governance
  object_lock:
    description:
      - V(auto) locks it when the bucket has Object Lock and warns when it does not; V(required) refuses a
        bucket without Object Lock; V(off) never asks the bucket (an endpoint without the API).
    type: str
    choices: [auto, required, "off"]
    default: auto
  content_type:
    description:
      - The object's Content-Type, for example V(application/gzip).
    type: str
notes:
  - The credentials need C(s3:PutObject), C(s3:GetObject) and C(s3:PutObjectRetention) on the prefix and
    C(s3:GetBucketObjectLockConfiguration) on the bucket; never C(s3:DeleteObject).
seealso:
  - module: tokotani.dr.evidence_bundle
  - module: tokotani.dr.backup_offsite
  - module: amazon.aws.s3_bucket
    description: Creates a bucket with Object Lock enabled and a default retention (its C(object_lock_enabled) option).
"""

EXAMPLES = r"""
- name: Keep the evidence offsite, locked for 90 days
  tokotani.dr.offsite_object:
    src: /var/lib/tokotani/evidence/evidence-shop1-20261208T031500Z.tar.gz
    name: evidence/evidence-shop1-20261208T031500Z.tar.gz
    bucket: tokotani-dr
    prefix: prod/shop1
    retention_days: 90
    lock_mode: compliance
    object_lock: required
  register: evidence_offsite

- name: Copy a report (locked by the bucket's default retention, if any)
  tokotani.dr.offsite_object:
    src: /var/lib/tokotani/reports/incident-20261208T0400Z.json
    name: reports/incident-20261208T0400Z.json
    bucket: tokotani-dr
    endpoint_url: http://s3.sandbox:5000
    content_type: application/json
"""

RETURN = r"""
bucket:
  description: The bucket.
  returned: success
  type: str
  sample: tokotani-dr
key:
  description: The object's key.
  returned: success
  type: str
  sample: prod/shop1/evidence/evidence-shop1-20261208T031500Z.tar.gz
url:
  description: C(s3://<bucket>/<key>).
  returned: success
  type: str
  sample: s3://tokotani-dr/prod/shop1/evidence/evidence-shop1-20261208T031500Z.tar.gz
sha256:
  description: The file's sha256, as uploaded and read back from the object's metadata.
  returned: success
  type: str
  sample: 9f2c4be1d0b54c7a3c1b8c2b6b0f0c3e4a2d1e5f6a7b8c9d0e1f2a3b4c5d6e7f
size:
  description: Bytes.
  returned: success
  type: int
  sample: 48213
version_id:
  description: The object version S3 gave it (a bucket with Object Lock is versioned), or null.
  returned: success
  type: str
  sample: 3HL4kqtJlcpXroDTDmJ+rmSpXd3dIbrHY+MTRCxf3vjVBH40Nr8X8gdRQBpUMLUo
object_lock:
  description: What the bucket and the object say about Object Lock.
  returned: success
  type: dict
  contains:
    bucket_enabled:
      description: Whether the bucket has Object Lock.
      type: bool
      sample: true
    bucket_default_mode:
      description: The bucket's default retention mode (C(GOVERNANCE), C(COMPLIANCE)) or null.
      type: str
      sample: null
    bucket_default_days:
      description: The bucket's default retention in days, or null.
      type: int
      sample: null
    locked:
      description: Whether the object has a retention.
      type: bool
      sample: true
    mode:
      description: The object's retention mode (V(governance), V(compliance)) or null.
      type: str
      sample: compliance
    retain_until:
      description: Until when (UTC, ISO 8601), or null.
      type: str
      sample: "2027-03-08T03:15:09Z"
    retain_until_epoch:
      description: The same in epoch seconds, or null.
      type: float
      sample: 1804475709.0
"""

from ansible.module_utils.basic import AnsibleModule, missing_required_lib
from ansible_collections.tokotani.dr.plugins.module_utils.errors import call
from ansible_collections.tokotani.dr.plugins.module_utils.offsite_object import put
from ansible_collections.tokotani.dr.plugins.module_utils.s3_offsite import BOTO3_IMPORT_ERROR, HAS_BOTO3
from ansible_collections.tokotani.dr.plugins.module_utils.specs import offsite_object_argument_spec


def main():
    module = AnsibleModule(argument_spec=offsite_object_argument_spec(), supports_check_mode=True)
    module.add_path_info = lambda kwargs: kwargs  # the result's size is the object's, not a local path's
    if not HAS_BOTO3:
        module.fail_json(msg=missing_required_lib("boto3"), exception=BOTO3_IMPORT_ERROR)
    result, failure = call(put, module.params, check_mode=module.check_mode)
    if failure:
        failure.setdefault("error", "invalid")
        module.fail_json(changed=False, **failure)
    for warning in result.pop("warnings", []):
        module.warn(warning)
    module.exit_json(**result)


if __name__ == "__main__":
    main()
