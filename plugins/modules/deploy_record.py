#!/usr/bin/python
# Copyright: (c) 2026, TokoTani DevOps Team
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
# Engine: plugins/module_utils/deploy_record.py (the S3 store of s3_offsite.py, the signatures of backup_keys.py).

DOCUMENTATION = r"""
module: deploy_record
short_description: Record in the offsite bucket which application version is live, and read it back
version_added: "0.3.0"
description:
  - Keeps, beside the offsite backups, the record of the application version that is live, so that a server
    rebuilt from nothing - on new infrastructure, under another host name - deploys the same version. The deploy
    role writes it after every successful deployment (O(mode=put)); the rebuild reads it (O(mode=get)).
  - "The objects, under O(prefix): C(<prefix>/deploy/current.json) (the record) and
    C(<prefix>/deploy/history/<UTC yyyymmddThhmmssZ>-<first 12 hex digits of the commit>.json) (a copy per
    deploy, for an operator to see earlier ones). M(tokotani.dr.backup_offsite) ignores them (they are not
    backups) and never prunes them."
  - The record is a JSON object - C(record_version), C(version), C(commit), C(release), C(deployed_at), C(host) -
    signed with the backup key (O(backup_key)) exactly as backup manifests are (HMAC-SHA256 over its canonical
    JSON, naming the key by its id, never the key).
  - O(mode=put) checks its inputs against the rules a get applies, so that it never writes a record a rebuild
    would refuse; then writes the history copy, then C(current.json). When C(current.json) already records the
    same O(version), O(commit) and O(release), signed by the current key, nothing is written (C(changed=false)).
    Without a backup key it writes nothing, unless O(allow_unsigned=true) (then an unsigned record, with a warning).
  - O(mode=get) trusts nothing in the bucket. C(current.json) is refused when larger than 64 KiB (before it is
    downloaded), when it is not strict JSON (UTF-8, no duplicate keys, no NaN or Infinity), when it is not an object
    with exactly the expected keys, each of its type and confined form (see the options of O(mode=put)), when
    C(deployed_at) is before 2000 or more than a day in the future, when it is not signed (unless
    O(allow_unsigned=true)), signed by a key that is none of O(backup_key) and O(backup_previous_keys), or
    changed after it was signed. Without O(backup_key), a get is refused unless O(allow_unsigned=true).
    A refused record fails the task with a message that names the object (and the key id, never a key) and what
    to do; nothing of it is returned.
  - No record at all is not a failure - RV(found=false), and the caller decides.
  - The values of a record are only returned, never used in a shell, a path or SQL by this module.
author:
  - TokoTani DevOps Team (@tokotani)
extends_documentation_fragment:
  - tokotani.dr.s3
  - tokotani.dr.backup_key
attributes:
  check_mode:
    support: full
    description:
      - O(mode=put) reads the record in place and reports what it would write, writing nothing. O(mode=get) only
        reads.
  diff_mode:
    support: none
    description: The result carries the record written or read.
options:
  mode:
    description:
      - V(put) records a deployment; V(get) reads the record of the live version.
    type: str
    required: true
    choices: [put, get]
  version:
    description:
      - O(mode=put) - the git ref deployed (a tag such as V(v1.4.2), a branch, or a ref).
      - Letters, digits and C(. _ / + -), at most 128 characters, starting with a letter or digit, without C(..),
        C(//), a component starting with C(.), or a final C(.), C(/) or C(.lock).
      - Required with O(mode=put).
    type: str
  commit:
    description:
      - O(mode=put) - the commit deployed, 7 to 64 lowercase hex digits (C(git rev-parse HEAD)).
      - Required with O(mode=put).
    type: str
  release:
    description:
      - O(mode=put) - the name of the release directory deployed (letters, digits and C(. _ -), at most 128
        characters, starting with a letter or digit).
      - Required with O(mode=put).
    type: str
  deployed_at:
    description:
      - O(mode=put) - when the deployment finished, in epoch seconds. Default now.
    type: float
  host:
    description:
      - O(mode=put) - the server deployed (a host name, at most 253 characters). Default this server's host name.
      - Informative only - a rebuild deploys the version under whatever name the new server has.
    type: str
notes:
  - The credentials need C(s3:GetObject) and (for O(mode=put)) C(s3:PutObject) on C(<prefix>/deploy/*), and
    C(s3:ListBucket) on the bucket (without it, S3 answers a missing record with access denied).
seealso:
  - module: tokotani.dr.backup_offsite
  - module: tokotani.dr.app_release
"""

EXAMPLES = r"""
- name: Record the version just deployed
  tokotani.dr.deploy_record:
    mode: put
    version: "{{ tokotani_app_version }}"
    commit: "{{ checkout.after }}"
    release: "{{ release_name }}"
    bucket: tokotani-dr
    prefix: prod
    region: ap-southeast-3
    backup_key: "{{ tokotani_backup_key }}"

# On a rebuilt server: deploy what was live, unless the operator chose a version (-e version=v1.4.2).
- name: Read which version was live
  tokotani.dr.deploy_record:
    mode: get
    bucket: tokotani-dr
    prefix: prod
    region: ap-southeast-3
    backup_key: "{{ tokotani_backup_key }}"
    backup_previous_keys: "{{ tokotani_backup_previous_keys | default([]) }}"
  register: live
  when: version is not defined

- name: Say what will be deployed
  ansible.builtin.debug:
    msg: >-
      {{ version | default(live.record.version if live.found | default(false) else 'nothing recorded') }}

- name: Read the record from an S3-compatible store, credentials from the environment
  tokotani.dr.deploy_record:
    mode: get
    bucket: tokotani-dr
    prefix: staging
    endpoint_url: https://s3.dr.internal:9000
    addressing_style: path
    ca_bundle: /etc/ssl/certs/tokotani-dr-ca.pem
  environment:
    AWS_ACCESS_KEY_ID: "{{ vault_s3_access_key }}"
    AWS_SECRET_ACCESS_KEY: "{{ vault_s3_secret_key }}"
    TOKOTANI_BACKUP_KEY: "{{ tokotani_backup_key }}"
"""

RETURN = r"""
mode:
  description: The mode that ran.
  returned: always
  type: str
  sample: get
bucket:
  description: The bucket.
  returned: always
  type: str
  sample: tokotani-dr
prefix:
  description: The key prefix, without leading or trailing slashes.
  returned: always
  type: str
  sample: prod
found:
  description:
    - O(mode=get) - whether there is a record. V(false) is not a failure - the caller decides which version to
      deploy. On a failure, V(true) when a record is there but was refused.
  returned: when O(mode=get)
  type: bool
  sample: true
record:
  description:
    - The record read (O(mode=get)), written or that would be (O(mode=put)), or already in place (O(mode=put),
      C(changed=false)). Null when O(mode=get) finds none.
  returned: success
  type: dict
  contains:
    version:
      description: The git ref deployed.
      type: str
      sample: v1.4.2
    commit:
      description: The commit deployed.
      type: str
      sample: 3f9a0c2d81b47e65a1c0d2e3f4a5b6c7d8e9f001
    release:
      description: The release directory deployed.
      type: str
      sample: 20260105T020000Z-3f9a0c2
    deployed_at:
      description: When the deployment finished, epoch seconds.
      type: float
      sample: 1767578400
    host:
      description: The server that was deployed.
      type: str
      sample: web1
    key_id:
      description:
        - The id of the backup key that signed the record (a hash of the key, never the key); null when it is not
          signed (accepted with O(allow_unsigned=true)), or was not checked (no O(backup_key)).
      type: str
      sample: 3f9a0c2d81b47e65
signed:
  description: O(mode=get) - whether the record is signed by one of the keys given (then RV(record.key_id) says which).
  returned: when O(mode=get) finds a record
  type: bool
  sample: true
object:
  description: The record's object, C(s3://<bucket>/<prefix>/deploy/current.json).
  returned: success, and on the refusal of a record
  type: str
  sample: s3://tokotani-dr/prod/deploy/current.json
history_object:
  description: O(mode=put) - the history copy written (or that would be).
  returned: when O(mode=put) changes something
  type: str
  sample: s3://tokotani-dr/prod/deploy/history/20260105T020000Z-3f9a0c2d81b4.json
msg:
  description: What was done or found, in a sentence; on a failure, what is wrong and what to do.
  returned: always
  type: str
error:
  description:
    - On failure, what kind of problem it is. A refused record - V(too_large) (larger than 64 KiB), V(invalid)
      (not JSON, not a deploy record, or a field of the wrong type or form; also wrong inputs of O(mode=put)),
      V(not_signed), V(unknown_key) (signed by a key none of those given), V(not_authentic) (changed after it was
      signed), V(key_missing) (no O(backup_key) to check or sign with, without O(allow_unsigned)).
    - Or a problem of the store, as M(tokotani.dr.backup_offsite) names them - V(bucket_missing),
      V(access_denied), V(no_credentials), V(endpoint_unreachable), V(tls), V(throttled), V(s3).
  returned: failure
  type: str
  sample: unknown_key
key_id:
  description: On a refusal naming a key, its id (never a key).
  returned: failure with V(unknown_key) or V(not_authentic)
  type: str
problems:
  description: On V(invalid), each reason the record (or the inputs of O(mode=put)) was refused.
  returned: failure with V(invalid) for a record that is JSON
  type: list
  elements: str
"""

from ansible.module_utils.basic import AnsibleModule, missing_required_lib
from ansible_collections.tokotani.dr.plugins.module_utils.deploy_record import argument_spec, run
from ansible_collections.tokotani.dr.plugins.module_utils.errors import call
from ansible_collections.tokotani.dr.plugins.module_utils.s3_offsite import BOTO3_IMPORT_ERROR, HAS_BOTO3


def main():
    module = AnsibleModule(
        argument_spec=argument_spec(),
        supports_check_mode=True,
        required_if=[["mode", "put", ["version", "commit", "release"]]],
    )
    if not HAS_BOTO3:
        module.fail_json(msg=missing_required_lib("boto3"), exception=BOTO3_IMPORT_ERROR)
    result, failure = call(run, module.params, check_mode=module.check_mode)
    if failure:  # outside any except block (see errors.call)
        failure.setdefault("error", "invalid")
        module.fail_json(changed=False, mode=module.params["mode"], **failure)
    for warning in result.pop("warnings", []):
        module.warn(warning)
    module.exit_json(**result)


if __name__ == "__main__":
    main()
