# Copyright: (c) 2026, TokoTani DevOps Team
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Connection options of the S3 modules of tokotani.dr (the names and fallbacks of amazon.aws)."""


class ModuleDocFragment:
    DOCUMENTATION = r"""
options:
  bucket:
    description:
      - Name of the bucket holding the offsite copies. It must exist; the module never creates buckets.
    type: str
    required: true
  prefix:
    description:
      - Key prefix (a "folder") under which the backups are kept, for example V(tokotani/prod).
        Leading and trailing slashes are ignored. Empty means the top of the bucket.
    type: str
    default: ""
  region:
    description:
      - The AWS region of the bucket (for an S3-compatible store, the region its signatures use,
        usually V(us-east-1)).
      - Falls back to the C(AWS_REGION), C(AWS_DEFAULT_REGION) or C(EC2_REGION) environment variables,
        then to the AWS config file of the profile.
    type: str
    aliases: [aws_region, ec2_region]
  endpoint_url:
    description:
      - URL of an S3-compatible endpoint (MinIO, Ceph, a sandbox moto server), for example
        V(https://s3.internal:9000). Unset means AWS itself.
      - Falls back to the C(AWS_URL), C(EC2_URL) or C(AWS_ENDPOINT_URL) environment variables.
    type: str
    aliases: [aws_endpoint_url, ec2_url, s3_url]
  addressing_style:
    description:
      - How the bucket appears in request URLs. V(path) (C(https://host/bucket/key)) is what most
        S3-compatible stores expect; V(virtual) (C(https://bucket.host/key)) is AWS's default;
        V(auto) lets botocore choose.
    type: str
    choices: [auto, path, virtual]
    default: auto
  access_key:
    description:
      - AWS access key ID.
      - Falls back to the C(AWS_ACCESS_KEY_ID), C(AWS_ACCESS_KEY) or C(EC2_ACCESS_KEY) environment variables;
        without any, boto3's usual chain applies (shared credentials file, profile, instance or task role).
    type: str
    aliases: [aws_access_key_id, aws_access_key, ec2_access_key]
  secret_key:
    description:
      - AWS secret access key. Never logged or returned.
      - Falls back to the C(AWS_SECRET_ACCESS_KEY), C(AWS_SECRET_KEY) or C(EC2_SECRET_KEY) environment variables.
    type: str
    aliases: [aws_secret_access_key, aws_secret_key, ec2_secret_key]
  session_token:
    description:
      - AWS session token of temporary credentials. Never logged or returned.
      - Falls back to the C(AWS_SESSION_TOKEN), C(AWS_SECURITY_TOKEN) or C(EC2_SECURITY_TOKEN) environment
        variables.
    type: str
    aliases: [aws_session_token, security_token, aws_security_token, access_token]
  profile:
    description:
      - A named profile of the AWS config and credentials files of the user the module runs as.
        O(access_key) and O(secret_key), when set, take precedence over the profile's keys.
      - Falls back to the C(AWS_PROFILE) or C(AWS_DEFAULT_PROFILE) environment variables.
    type: str
    aliases: [aws_profile]
  validate_certs:
    description:
      - Verify the endpoint's TLS certificate. Turn off only for a throwaway sandbox; prefer O(ca_bundle).
    type: bool
    default: true
  ca_bundle:
    description:
      - A PEM file of the CA certificates that sign the endpoint's certificate (a private CA, or a
        TLS-intercepting proxy).
      - Falls back to the C(AWS_CA_BUNDLE) environment variable.
    type: path
    aliases: [aws_ca_bundle]
  retries:
    description:
      - How many times a failed request is retried. botocore retries every request (each part of a
        multipart transfer included) in its standard mode with exponential backoff; on top, a whole
        operation is retried with jittered exponential backoff when the endpoint throttles (C(SlowDown),
        C(Throttling), ...), answers with a 5xx, or drops a connection mid-way.
      - An endpoint that refuses connections is reported after botocore's retries, without more.
    type: int
    default: 3
  connect_timeout:
    description:
      - Seconds to wait for a connection to the endpoint.
    type: int
    default: 10
  read_timeout:
    description:
      - Seconds to wait for data on an open connection.
    type: int
    default: 120
requirements:
  - boto3 (and botocore) on the target host, in the Python that runs the module.
notes:
  - The credentials need C(s3:ListBucket) on the bucket and C(s3:GetObject), C(s3:PutObject) and
    C(s3:DeleteObject) on the prefix (C(kms:GenerateDataKey) and C(kms:Decrypt) with aws:kms encryption).
"""
