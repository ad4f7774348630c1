"""Seeds a moto server with a few insecure AWS resources for the Prowler end-to-end test.

Usage: python3 seed_moto.py ENDPOINT_URL NAME_PREFIX
Prints one JSON object: the names and ids of what it made.
"""
import json
import sys

import boto3

endpoint, prefix = sys.argv[1], sys.argv[2]
session = boto3.session.Session(
    aws_access_key_id="testing", aws_secret_access_key="testing", region_name="us-east-1"
)
s3 = session.client("s3", endpoint_url=endpoint)
iam = session.client("iam", endpoint_url=endpoint)
ec2 = session.client("ec2", endpoint_url=endpoint)

# A bucket anyone may read: a public ACL and a policy granting s3:GetObject to "*".
bucket = f"{prefix}-public-bucket"
s3.create_bucket(Bucket=bucket)
s3.put_public_access_block(
    Bucket=bucket,
    PublicAccessBlockConfiguration={
        "BlockPublicAcls": False,
        "IgnorePublicAcls": False,
        "BlockPublicPolicy": False,
        "RestrictPublicBuckets": False,
    },
)
s3.put_bucket_acl(Bucket=bucket, ACL="public-read")
s3.put_bucket_policy(
    Bucket=bucket,
    Policy=json.dumps(
        {
            "Version": "2012-10-17",
            "Statement": [
                {
                    "Effect": "Allow",
                    "Principal": "*",
                    "Action": "s3:GetObject",
                    "Resource": f"arn:aws:s3:::{bucket}/*",
                }
            ],
        }
    ),
)

# A console user without MFA.
user = f"{prefix}-no-mfa-user"
iam.create_user(UserName=user)
iam.create_login_profile(UserName=user, Password="Not-A-Real-Passw0rd!", PasswordResetRequired=False)

# A security group open to the world on SSH.
vpc = ec2.describe_vpcs()["Vpcs"][0]["VpcId"]
sg = ec2.create_security_group(GroupName=f"{prefix}-open-ssh", Description="open to the world", VpcId=vpc)["GroupId"]
ec2.authorize_security_group_ingress(
    GroupId=sg,
    IpPermissions=[{"IpProtocol": "tcp", "FromPort": 22, "ToPort": 22, "IpRanges": [{"CidrIp": "0.0.0.0/0"}]}],
)

print(json.dumps({"bucket": bucket, "user": user, "security_group": sg}))
