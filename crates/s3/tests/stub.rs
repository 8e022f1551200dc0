//! Conditions SeaweedFS cannot produce, against a tiny local HTTP stub that answers with the
//! exact AWS response: wrong region (301 + x-amz-bucket-region, AuthorizationHeaderMalformed
//! with <Region>), expired and invalid session tokens, odd keys in listings, an endpoint that
//! refuses connections and one that never answers. Real SDK and real HTTP; only the server is
//! fake, and only for that one condition.

mod common;
use common::*;
use slipstream_s3::{probe, S3Backend};
use slipstream_storage::config::{S3Config, Scheme, Secret};
use slipstream_storage::{Backend, EntryKind, RelPath, StorageError};
use std::time::{Duration, Instant};

fn stub_config(endpoint: &str, bucket: &str) -> S3Config {
    let mut c = bare_config(bucket);
    c.access_key_id = Some("AKIASTUB000000000000".into());
    c.secret_key = Some(Secret("stub-secret".into()));
    c.scheme = Scheme::Http;
    c.endpoint_override = Some(endpoint.to_string());
    c
}

async fn probe_error(cfg: &S3Config) -> String {
    match probe(cfg).await {
        Ok(()) => panic!("probe should have failed"),
        Err(StorageError::Backend(m)) => m,
        Err(other) => panic!("expected a Backend error, got {other:?}"),
    }
}

#[tokio::test]
async fn wrong_region_from_301_permanent_redirect() {
    let endpoint = stub(error_response(
        "301 Moved Permanently",
        "x-amz-bucket-region: eu-west-1\r\n",
        "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n<Error><Code>PermanentRedirect</Code>\
         <Message>The bucket you are attempting to access must be addressed using the specified endpoint. \
         Please send all future requests to this endpoint.</Message><Endpoint>raw.s3.eu-west-1.amazonaws.com</Endpoint>\
         <Bucket>raw</Bucket><RequestId>R1</RequestId><HostId>H1</HostId></Error>",
    ))
    .await;
    let m = probe_error(&stub_config(&endpoint, "raw")).await;
    assert!(
        m.starts_with("bucket 'raw' is in region eu-west-1, not us-east-1: set region"),
        "{m}"
    );
    assert!(m.contains("PermanentRedirect"), "{m}");
}

#[tokio::test]
async fn wrong_region_from_authorization_header_malformed() {
    let endpoint = stub(error_response(
        "400 Bad Request",
        "",
        "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n<Error><Code>AuthorizationHeaderMalformed</Code>\
         <Message>The authorization header is malformed; the region 'us-east-1' is wrong; expecting 'ap-south-1'</Message>\
         <Region>ap-south-1</Region><RequestId>R2</RequestId><HostId>H2</HostId></Error>",
    ))
    .await;
    let m = probe_error(&stub_config(&endpoint, "raw")).await;
    assert!(
        m.starts_with("bucket 'raw' is in region ap-south-1, not us-east-1: set region"),
        "{m}"
    );
}

#[tokio::test]
async fn expired_session_token() {
    let endpoint = stub(error_response(
        "400 Bad Request",
        "",
        "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n<Error><Code>ExpiredToken</Code>\
         <Message>The provided token has expired.</Message><RequestId>R3</RequestId></Error>",
    ))
    .await;
    let mut c = stub_config(&endpoint, "raw");
    c.session_token = Some(Secret("FwoGZXIvYXdzEXAMPLETOKEN".into()));
    let m = probe_error(&c).await;
    assert!(m.starts_with("the session token has expired"), "{m}");
    assert!(
        m.contains("S3 ExpiredToken: The provided token has expired."),
        "{m}"
    );
    assert!(!m.contains("FwoGZXIvYXdzEXAMPLETOKEN"), "{m}");
}

#[tokio::test]
async fn invalid_session_token() {
    let endpoint = stub(error_response(
        "400 Bad Request",
        "",
        "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n<Error><Code>InvalidToken</Code>\
         <Message>The provided token is malformed or otherwise invalid.</Message><RequestId>R4</RequestId></Error>",
    ))
    .await;
    let mut c = stub_config(&endpoint, "raw");
    c.session_token = Some(Secret("tampered".into()));
    let m = probe_error(&c).await;
    assert!(m.starts_with("the session token is invalid"), "{m}");
    assert!(m.contains("InvalidToken"), "{m}");
}

#[tokio::test]
async fn unreachable_endpoint_refused_quickly() {
    let endpoint = closed_port().await;
    let started = Instant::now();
    let m = probe_error(&stub_config(&endpoint, "raw")).await;
    assert!(m.starts_with("endpoint unreachable"), "{m}");
    assert!(
        m.contains(&format!("http://{endpoint} refused the connection")),
        "{m}"
    );
    assert!(
        started.elapsed() < Duration::from_secs(15),
        "{:?}",
        started.elapsed()
    );
}

#[tokio::test]
async fn silent_endpoint_times_out_within_bounds() {
    let endpoint = silent_server().await;
    let started = Instant::now();
    let m = probe_error(&stub_config(&endpoint, "raw")).await;
    let took = started.elapsed();
    assert!(
        m.contains("no answer from") || m.contains("within the time limit"),
        "{m}"
    );
    assert!(m.contains(&endpoint), "{m}");
    assert!(took < Duration::from_secs(30), "{took:?}");
}

fn list_xml(prefix: &str, keys: &[&str], prefixes: &[&str]) -> String {
    let mut body = format!(
        "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n<ListBucketResult xmlns=\"http://s3.amazonaws.com/doc/2006-03-01/\">\
         <Name>odd</Name><Prefix>{prefix}</Prefix><KeyCount>{}</KeyCount><MaxKeys>1000</MaxKeys><IsTruncated>false</IsTruncated>",
        keys.len() + prefixes.len()
    );
    for k in keys {
        body.push_str(&format!(
            "<Contents><Key>{k}</Key><LastModified>2026-11-01T10:00:00.000Z</LastModified><ETag>\"d41d8cd98f00b204e9800998ecf8427e\"</ETag><Size>3</Size><StorageClass>STANDARD</StorageClass></Contents>"
        ));
    }
    for p in prefixes {
        body.push_str(&format!(
            "<CommonPrefixes><Prefix>{p}</Prefix></CommonPrefixes>"
        ));
    }
    body.push_str("</ListBucketResult>");
    format!(
        "HTTP/1.1 200 OK\r\nContent-Type: application/xml\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    )
}

#[tokio::test]
async fn odd_keys_in_listings_are_skipped() {
    // A store that keeps `.`, `..`, `a//b`, `dir/./x` as keys (AWS does).
    let endpoint = stub_with(|head| {
        let line = head.lines().next().unwrap_or("");
        if line.starts_with("HEAD") {
            return "HTTP/1.1 404 Not Found\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"
                .into();
        }
        let delimited = line.contains("delimiter=");
        if line.contains("prefix=dir%2F") {
            if delimited {
                list_xml("dir/", &["dir/", "dir/ok.txt"], &["dir/./", "dir//"])
            } else {
                list_xml("dir/", &["dir/", "dir/./x", "dir//y", "dir/ok.txt"], &[])
            }
        } else if delimited {
            list_xml(
                "",
                &[".", "..", "ok.txt"],
                &["../", "./", "/", "a/", "dir/"],
            )
        } else {
            list_xml(
                "",
                &[
                    ".",
                    "..",
                    "../up",
                    "./x",
                    "/abs",
                    "a//b",
                    "dir/",
                    "dir/./x",
                    "dir//y",
                    "dir/ok.txt",
                    "ok.txt",
                ],
                &[],
            )
        }
    })
    .await;
    let b = S3Backend::new(&stub_config(&endpoint, "odd")).unwrap();
    let page = b.list(&RelPath::root(), 1000, None).await.unwrap();
    let names: Vec<_> = page
        .entries
        .iter()
        .map(|e| (e.name.as_str(), e.kind))
        .collect();
    assert_eq!(
        names,
        [
            ("a", EntryKind::Directory),
            ("dir", EntryKind::Directory),
            ("ok.txt", EntryKind::File)
        ]
    );
    let page = b
        .list(&RelPath::parse("dir").unwrap(), 1000, None)
        .await
        .unwrap();
    let names: Vec<_> = page.entries.iter().map(|e| e.name.as_str()).collect();
    assert_eq!(names, ["ok.txt"]);
    // du counts only what ls shows: dir/ok.txt and ok.txt, and the folder dir.
    let u = b.usage(&RelPath::root()).await.unwrap();
    assert_eq!(
        (u.total_files, u.total_size, u.total_directories),
        (2, 6, 1)
    );
    // No path reaches the odd keys.
    assert!(RelPath::parse("..").is_err());
    assert!(RelPath::parse("dir/../x").is_err());
    assert_eq!(RelPath::parse("dir/./x").unwrap().as_str(), "dir/x");
}

#[tokio::test]
async fn requests_are_signed_for_the_configured_region() {
    // SeaweedFS accepts any region in the signature, so look at what the client sends.
    let seen = std::sync::Arc::new(std::sync::Mutex::new(Vec::<String>::new()));
    let log = seen.clone();
    let endpoint = stub_with(move |head| {
        log.lock().unwrap().push(head.to_string());
        list_xml("", &[], &[])
    })
    .await;
    let mut c = stub_config(&endpoint, "raw");
    c.region = "eu-central-1".into();
    probe(&c).await.unwrap();
    let heads = seen.lock().unwrap().clone();
    let auth = heads[0]
        .lines()
        .find(|l| l.to_ascii_lowercase().starts_with("authorization:"))
        .expect("a signed request");
    assert!(auth.contains("/eu-central-1/s3/aws4_request"), "{auth}");
    assert!(auth.contains("Credential=AKIASTUB000000000000/"), "{auth}");
    // Path style with endpointOverride: the bucket is in the path, not the host.
    assert!(
        heads[0].starts_with("GET /raw?") || heads[0].starts_with("GET /raw/?"),
        "{}",
        heads[0]
    );
}
