"""Helpers of scripts/s3.sh for the local S3 (moto): `setup` creates the example's bucket, queue
and notification; `upload FILE KEY` puts a file into the bucket. Credentials are moto's test ones."""
import os
import sys

import boto3

ENDPOINT = os.environ.get("S3_ENDPOINT", "http://127.0.0.1:5000")
SESSION = dict(
    endpoint_url=ENDPOINT,
    region_name="us-east-1",
    aws_access_key_id="test",
    aws_secret_access_key="test",
)


def setup():
    s3 = boto3.client("s3", **SESSION)
    sqs = boto3.client("sqs", **SESSION)
    s3.create_bucket(Bucket="photos")
    queue = sqs.create_queue(QueueName="photos-events")["QueueUrl"]
    arn = sqs.get_queue_attributes(QueueUrl=queue, AttributeNames=["QueueArn"])["Attributes"]["QueueArn"]
    s3.put_bucket_notification_configuration(
        Bucket="photos",
        NotificationConfiguration={
            "QueueConfigurations": [{"QueueArn": arn, "Events": ["s3:ObjectCreated:*"]}]
        },
    )
    print(f"queue {queue}")


def upload(path, key):
    boto3.client("s3", **SESSION).upload_file(path, "photos", key)
    print(f"uploaded {path} to s3://photos/{key}")


if __name__ == "__main__":
    if sys.argv[1:2] == ["setup"]:
        setup()
    elif sys.argv[1:2] == ["upload"] and len(sys.argv) == 4:
        upload(sys.argv[2], sys.argv[3])
    else:
        sys.exit("usage: s3.sh.py setup | upload FILE KEY")
