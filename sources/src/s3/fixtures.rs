//! Notification bodies as stores send them, for the tests of this module.

use serde_json::{Value, json};

/// An AWS S3 record, as in S3's documentation, with request ids.
pub fn aws_record() -> Value {
    json!({
        "eventVersion": "2.1",
        "eventSource": "aws:s3",
        "awsRegion": "us-east-1",
        "eventTime": "2024-05-01T12:00:00.123Z",
        "eventName": "ObjectCreated:Put",
        "userIdentity": {"principalId": "AWS:AIDAEXAMPLE"},
        "requestParameters": {"sourceIPAddress": "203.0.113.7"},
        "responseElements": {
            "x-amz-request-id": "C3D13FE58DE4C810",
            "x-amz-id-2": "FMyUVURIY8/IgAtTv8xRjskZQpcIZ9KG4V5Wp6S7S/JRWeUWerMUE5JgHvANOjpD"
        },
        "s3": {
            "s3SchemaVersion": "1.0",
            "configurationId": "kinetic",
            "bucket": {
                "name": "photos",
                "ownerIdentity": {"principalId": "A3NL1KOZZKExample"},
                "arn": "arn:aws:s3:::photos"
            },
            "object": {
                "key": "uploads/red+flower.jpg",
                "size": 1024,
                "eTag": "d41d8cd98f00b204e9800998ecf8427e",
                "versionId": "096fKKXTRTtl3on89fVO.nfljtsv6qko",
                "sequencer": "0055AED6DCD90281E5"
            }
        }
    })
}

/// A record as moto sends it: no `responseElements`, `/` encoded as `%2F`.
pub fn moto_record() -> Value {
    json!({
        "eventVersion": "2.1",
        "eventSource": "aws:s3",
        "awsRegion": "us-east-1",
        "eventTime": "2024-05-01T12:00:00.000Z",
        "eventName": "ObjectCreated:Put",
        "s3": {
            "s3SchemaVersion": "1.0",
            "configurationId": "kinetic",
            "bucket": {"name": "photos", "arn": "arn:aws:s3:::photos"},
            "object": {
                "key": "uploads%2Fa+b.txt",
                "size": 3,
                "eTag": "\"900150983cd24fb0d6963f7d28e17f72\"",
                "versionId": "null",
                "sequencer": "0"
            }
        }
    })
}

/// A MinIO webhook body: `minio:s3`, empty region, `s3:`-prefixed name, top-level repeats.
pub fn minio_body() -> Value {
    json!({
        "EventName": "s3:ObjectCreated:Put",
        "Key": "images/my+photo.jpg",
        "Records": [{
            "eventVersion": "2.0",
            "eventSource": "minio:s3",
            "awsRegion": "",
            "eventTime": "2019-09-10T17:52:06.253Z",
            "eventName": "s3:ObjectCreated:Put",
            "userIdentity": {"principalId": "minio"},
            "requestParameters": {"accessKey": "minio", "region": "", "sourceIPAddress": "172.17.0.1"},
            "responseElements": {
                "content-length": "0",
                "x-amz-request-id": "15C3248A2B81C3D9",
                "x-minio-origin-endpoint": "http://172.17.0.2:9000"
            },
            "s3": {
                "s3SchemaVersion": "1.0",
                "configurationId": "Config",
                "bucket": {"name": "images", "ownerIdentity": {"principalId": "minio"}, "arn": "arn:aws:s3:::images"},
                "object": {
                    "key": "my+photo.jpg",
                    "size": 6474,
                    "eTag": "a3410ea5f2e4e7f4a6e5d1b0c9e8f7a6",
                    "contentType": "image/jpeg",
                    "userMetadata": {"content-type": "image/jpeg"},
                    "sequencer": "15C3248A2D5B56A2"
                }
            },
            "source": {"host": "172.17.0.1", "port": "", "userAgent": "MinIO (linux; amd64)"}
        }]
    })
}

/// A Tencent COS record in the documented shape.
pub fn cos_record() -> Value {
    json!({
        "cos": {
            "cosSchemaVersion": "1.0",
            "cosNotificationId": "kinetic",
            "cosBucket": {"name": "photos-1250000000", "appid": "1250000000", "region": "ap-guangzhou"},
            "cosObject": {
                "url": "http://photos-1250000000.cos.ap-guangzhou.myqcloud.com/photos/uploads/a.jpg",
                "meta": {
                    "x-cos-request-id": "NWMxOWY4MGFfMjViMjU4NjRfMTUyMV8yNzhhZjM=",
                    "Content-Type": "image/jpeg",
                    "ETag": "\"5f4dcc3b5aa765d61d8327deb882cf99\""
                },
                "vid": "",
                "key": "/1250000000/photos/uploads/a.jpg",
                "size": 1234
            }
        },
        "event": {
            "eventName": "cos:ObjectCreated:Put",
            "eventVersion": "1.0",
            "eventSource": "qcs::cos",
            "eventTime": 1700000000,
            "eventQueue": "qcs:0:scf:ap-guangzhou:appid/1250000000:default.printevent.$LATEST",
            "requestParameters": {"requestSourceIP": "192.168.15.101", "requestHeaders": {"Authorization": "q-sign-algorithm=sha1"}},
            "reservedInfo": ""
        }
    })
}

/// `{"Records": [records…]}` as bytes.
pub fn body(records: &[Value]) -> Vec<u8> {
    serde_json::to_vec(&json!({ "Records": records })).unwrap()
}

/// An SNS envelope of `type` with `fields`.
pub fn sns(kind: &str, fields: Value) -> Vec<u8> {
    let mut envelope = json!({
        "Type": kind,
        "MessageId": "22b80b92-fdea-4c2c-8f9d-bdfb0c7bf324",
        "TopicArn": "arn:aws:sns:us-east-1:123456789012:photos",
        "Timestamp": "2024-05-01T12:00:01.000Z",
        "SignatureVersion": "1",
        "Signature": "EXAMPLE",
        "SigningCertURL": "https://sns.us-east-1.amazonaws.com/SimpleNotificationService.pem"
    });
    for (name, value) in fields.as_object().unwrap() {
        envelope[name] = value.clone();
    }
    serde_json::to_vec(&envelope).unwrap()
}
