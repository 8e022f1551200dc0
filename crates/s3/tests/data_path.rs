//! The S3 data path against the real SeaweedFS: the sink (shuffled blocks, concurrency under a
//! bounded cache, failures that leave no multipart upload, resume that re-sends only missing
//! parts, the size refusal), the ranged reader, the stale-upload reaper, and an expired session
//! token mid-upload (against a stub).

mod common;
use bytes::Bytes;
use common::*;
use slipstream_s3::{check_upload_size, S3Backend};
use slipstream_storage::cache::FileCache;
use slipstream_storage::config::Secret;
use slipstream_storage::data::{
    part_size, DigestBuilder, FileDigest, FileSink, ObjectReader, OverwriteMode, SinkOptions, MIB,
};
use slipstream_storage::{Backend, RelPath, StorageError};
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

fn p(s: &str) -> RelPath {
    RelPath::parse(s).unwrap()
}

/// Deterministic, non-repeating test data.
fn data(size: usize, seed: u64) -> Vec<u8> {
    let mut x = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    (0..size)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            (x >> 24) as u8
        })
        .collect()
}

fn digest(bytes: &[u8]) -> FileDigest {
    let mut d = DigestBuilder::new(bytes.len() as u64);
    d.update(bytes);
    d.finish().unwrap()
}

fn options(size: u64) -> SinkOptions {
    SinkOptions {
        size,
        overwrite: OverwriteMode::InPlaceNever,
        executable: false,
        modification_time: None,
        reception_id: "test".into(),
        resume: None,
        resume_only: false,
    }
}

/// The block offsets of a file in a shuffled order (Fisher-Yates with a fixed seed).
fn shuffled(size: u64, block: u64, seed: u64) -> Vec<u64> {
    let mut offsets: Vec<u64> = (0..size.div_ceil(block)).map(|i| i * block).collect();
    let mut x = seed | 1;
    for i in (1..offsets.len()).rev() {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        offsets.swap(i, (x % (i as u64 + 1)) as usize);
    }
    offsets
}

async fn write_blocks(sink: &mut dyn FileSink, bytes: &[u8], offsets: &[u64], block: u64) {
    for &offset in offsets {
        let end = (offset + block).min(bytes.len() as u64);
        sink.write_at(
            offset,
            Bytes::copy_from_slice(&bytes[offset as usize..end as usize]),
        )
        .await
        .unwrap();
    }
}

async fn get(s: &Services, bucket: &str, key: &str) -> Option<Vec<u8>> {
    match raw_client(s)
        .get_object()
        .bucket(bucket)
        .key(key)
        .send()
        .await
    {
        Ok(out) => Some(out.body.collect().await.unwrap().into_bytes().to_vec()),
        Err(_) => None,
    }
}

async fn uploads(s: &Services, bucket: &str) -> Vec<(String, String)> {
    let out = raw_client(s)
        .list_multipart_uploads()
        .bucket(bucket)
        .send()
        .await
        .unwrap();
    out.uploads()
        .iter()
        .map(|u| {
            (
                u.key().unwrap_or_default().to_string(),
                u.upload_id().unwrap_or_default().to_string(),
            )
        })
        .collect()
}

/// Waits (up to 10 s) until the bucket has no multipart upload left.
async fn no_uploads_left(s: &Services, bucket: &str) {
    for _ in 0..100 {
        if uploads(s, bucket).await.is_empty() {
            return;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    panic!("uploads left behind: {:?}", uploads(s, bucket).await);
}

async fn backend(s: &Services, tag: &str, cache: &FileCache) -> (S3Backend, String) {
    let bucket = bucket(s, tag).await;
    let mut cfg = config(s, &bucket);
    cfg.path = "/in/".into();
    let b = S3Backend::new(&cfg).unwrap().with_file_cache(cache.clone());
    (b, bucket)
}

#[tokio::test]
async fn shuffled_blocks_read_back_identical() {
    let s = services();
    let cache = FileCache::new(256 * MIB, 64 * MIB, 16 * MIB);
    let (b, bucket) = backend(&s, "shuffle", &cache).await;
    let size = 64 * MIB;
    let bytes = data(size as usize, 1);
    let mut sink = b.create_sink(&p("big.bin"), options(size)).await.unwrap();
    write_blocks(sink.as_mut(), &bytes, &shuffled(size, MIB, 7), MIB).await;
    // Not visible before commit.
    assert!(get(&s, &bucket, "in/big.bin").await.is_none());
    sink.commit(digest(&bytes)).await.unwrap();
    let back = get(&s, &bucket, "in/big.bin").await.unwrap();
    assert!(back == bytes, "the object differs from what was written");
    assert!(uploads(&s, &bucket).await.is_empty());
    assert_eq!(cache.used(), 0);
    assert!(cache.peak() <= 64 * MIB, "{}", cache.peak());

    // A small file (below one part) is one PutObject; an empty file works too.
    let small = data(3 * MIB as usize + 5, 2);
    let mut sink = b
        .create_sink(&p("small.bin"), options(small.len() as u64))
        .await
        .unwrap();
    write_blocks(
        sink.as_mut(),
        &small,
        &shuffled(small.len() as u64, 100_000, 3),
        100_000,
    )
    .await;
    sink.commit(digest(&small)).await.unwrap();
    assert!(get(&s, &bucket, "in/small.bin").await.unwrap() == small);
    let sink = b.create_sink(&p("empty.bin"), options(0)).await.unwrap();
    sink.commit(digest(&[])).await.unwrap();
    assert_eq!(
        get(&s, &bucket, "in/empty.bin").await.unwrap(),
        Vec::<u8>::new()
    );
    // overwriteMode is ignored: an existing object is replaced.
    let mut sink = b.create_sink(&p("small.bin"), options(10)).await.unwrap();
    sink.write_at(0, Bytes::from_static(b"0123456789"))
        .await
        .unwrap();
    sink.commit(digest(b"0123456789")).await.unwrap();
    assert_eq!(
        get(&s, &bucket, "in/small.bin").await.unwrap(),
        b"0123456789"
    );
    assert_eq!(cache.used(), 0);
}

#[tokio::test]
async fn concurrent_uploads_stay_within_the_cache() {
    let s = services();
    let cache = FileCache::new(64 * MIB, 64 * MIB, 16 * MIB);
    let (b, bucket) = backend(&s, "concurrent", &cache).await;
    let size = 40 * MIB;
    let mut tasks = Vec::new();
    for i in 0..4u64 {
        let b = b.clone();
        tasks.push(tokio::spawn(async move {
            let bytes = data(size as usize, 10 + i);
            let mut sink = b
                .create_sink(&p(&format!("f{i}.bin")), options(size))
                .await
                .unwrap();
            let order: Vec<u64> = (0..size / MIB).map(|n| n * MIB).collect();
            write_blocks(sink.as_mut(), &bytes, &order, MIB).await;
            sink.commit(digest(&bytes)).await.unwrap();
            bytes
        }));
    }
    let mut written = Vec::new();
    for t in tasks {
        written.push(t.await.unwrap());
    }
    for (i, bytes) in written.iter().enumerate() {
        assert!(get(&s, &bucket, &format!("in/f{i}.bin")).await.unwrap() == *bytes);
    }
    assert!(cache.peak() <= 64 * MIB, "peak {} > 64 MiB", cache.peak());
    assert!(
        cache.peak() >= 32 * MIB,
        "peak {} (the cache was used)",
        cache.peak()
    );
    assert_eq!(cache.used(), 0);
    assert!(uploads(&s, &bucket).await.is_empty());
}

#[tokio::test]
async fn failures_leave_no_multipart_upload() {
    let s = services();
    let cache = FileCache::new(256 * MIB, 64 * MIB, 16 * MIB);
    let (b, bucket) = backend(&s, "failures", &cache).await;
    let size = 30 * MIB;
    let bytes = data(size as usize, 3);
    let half: Vec<u64> = (0..20).map(|n| n * MIB).collect();

    // abort() mid-way.
    let mut sink = b.create_sink(&p("a.bin"), options(size)).await.unwrap();
    write_blocks(sink.as_mut(), &bytes, &half, MIB).await;
    assert_eq!(uploads(&s, &bucket).await.len(), 1);
    sink.abort().await.unwrap();
    assert!(uploads(&s, &bucket).await.is_empty());

    // A commit with the wrong digest: nothing appears, the upload is aborted.
    let mut sink = b.create_sink(&p("b.bin"), options(size)).await.unwrap();
    let all: Vec<u64> = (0..30).map(|n| n * MIB).collect();
    write_blocks(sink.as_mut(), &bytes, &all, MIB).await;
    let err = sink
        .commit(digest(&data(size as usize, 4)))
        .await
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("integrity check failed for 'in/b.bin'"),
        "{err}"
    );
    assert!(get(&s, &bucket, "in/b.bin").await.is_none());
    assert!(uploads(&s, &bucket).await.is_empty());

    // A commit with bytes missing.
    let mut sink = b.create_sink(&p("c.bin"), options(size)).await.unwrap();
    write_blocks(sink.as_mut(), &bytes, &half, MIB).await;
    let err = sink.commit(digest(&bytes)).await.unwrap_err().to_string();
    assert!(err.contains("parts are incomplete"), "{err}");
    assert!(uploads(&s, &bucket).await.is_empty());

    // Dropping the sink (no checkpoint taken): the upload is aborted in the background.
    let mut sink = b.create_sink(&p("d.bin"), options(size)).await.unwrap();
    write_blocks(sink.as_mut(), &bytes, &half, MIB).await;
    drop(sink);
    no_uploads_left(&s, &bucket).await;
    assert!(get(&s, &bucket, "in/d.bin").await.is_none());
    // Memory is given back once the aborted part tasks are gone.
    for _ in 0..50 {
        if cache.used() == 0 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(cache.used(), 0);
}

#[tokio::test]
async fn restart_resends_only_missing_parts() {
    let s = services();
    let cache = FileCache::new(256 * MIB, 64 * MIB, 16 * MIB);
    let (b, bucket) = backend(&s, "resume", &cache).await;
    let size = 48 * MIB + 12345; // 7 parts of 8 MiB, the last short
    assert_eq!(part_size(size), 8 * MIB);
    let bytes = data(size as usize, 5);
    let mut sink = b.create_s3_sink(&p("r.bin"), options(size)).await.unwrap();
    // Parts 1-4 complete, part 5 half.
    let first: Vec<u64> = (0..36).map(|n| n * MIB).collect();
    write_blocks(&mut sink, &bytes, &first, MIB).await;
    let first_four = 0..32 * MIB;
    let mut checkpoint = sink.checkpoint().await.unwrap();
    for _ in 0..100 {
        if checkpoint.durable == vec![first_four.clone()] {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
        checkpoint = sink.checkpoint().await.unwrap();
    }
    assert_eq!(checkpoint.durable, vec![first_four.clone()]);
    assert_eq!(checkpoint.state["parts"].as_array().unwrap().len(), 4);
    assert_eq!(sink.upload_part_calls(), 4);
    let upload_id = sink.upload_id().unwrap().to_string();
    assert_eq!(checkpoint.state["uploadId"], upload_id.as_str());
    // A restart: the sink goes away after a checkpoint; the upload stays for the resume.
    drop(sink);
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(
        uploads(&s, &bucket).await,
        [("in/r.bin".to_string(), upload_id.clone())]
    );

    let mut again = options(size);
    again.resume = Some(checkpoint.state.clone());
    let mut sink = b.create_s3_sink(&p("r.bin"), again).await.unwrap();
    assert_eq!(sink.resumed(), vec![first_four.clone()]);
    assert_eq!(sink.upload_id(), Some(upload_id.as_str()));
    // The sender sends what was not durable (part 5 again from its start, parts 6 and 7).
    let rest: Vec<u64> = (32..49).map(|n| n * MIB).collect();
    write_blocks(&mut sink, &bytes, &rest, MIB).await;
    // A retransmission into a part already in S3 is harmless.
    sink.write_at(0, Bytes::copy_from_slice(&bytes[..1000]))
        .await
        .unwrap();
    let calls = sink.upload_part_counter();
    Box::new(sink).commit(digest(&bytes)).await.unwrap();
    // Parts 5, 6 and 7 only.
    assert_eq!(calls.load(std::sync::atomic::Ordering::SeqCst), 3);
    assert!(get(&s, &bucket, "in/r.bin").await.unwrap() == bytes);
    assert!(uploads(&s, &bucket).await.is_empty());

    // Resuming an upload that is gone starts afresh (or is refused with resume_only).
    let mut sink = b.create_s3_sink(&p("g.bin"), options(size)).await.unwrap();
    write_blocks(&mut sink, &bytes, &first, MIB).await;
    let state = sink.checkpoint().await.unwrap().state;
    drop(sink);
    tokio::time::sleep(Duration::from_millis(300)).await;
    for (key, id) in uploads(&s, &bucket).await {
        raw_client(&s)
            .abort_multipart_upload()
            .bucket(&bucket)
            .key(key)
            .upload_id(id)
            .send()
            .await
            .unwrap();
    }
    // With resume_only, a gone upload is NotFound and no new upload is started.
    let mut only = options(size);
    only.resume = Some(state.clone());
    only.resume_only = true;
    let refused = b.create_s3_sink(&p("g.bin"), only).await.err();
    assert!(
        matches!(refused, Some(StorageError::NotFound(_))),
        "{refused:?}"
    );
    assert!(uploads(&s, &bucket).await.is_empty());
    let mut again = options(size);
    again.resume = Some(state);
    let mut sink = b.create_s3_sink(&p("g.bin"), again).await.unwrap();
    assert!(sink.resumed().is_empty());
    let all: Vec<u64> = (0..49).map(|n| n * MIB).collect();
    write_blocks(&mut sink, &bytes, &all, MIB).await;
    Box::new(sink).commit(digest(&bytes)).await.unwrap();
    assert!(get(&s, &bucket, "in/g.bin").await.unwrap() == bytes);
}

#[tokio::test]
async fn too_large_files_are_refused_before_any_byte() {
    let s = services();
    let cache = FileCache::new(1 << 30, 256 * MIB, 64 * MIB);
    let (b, bucket) = backend(&s, "toolarge", &cache).await;
    let err = b
        .create_sink(&p("huge.bin"), options(3 << 40))
        .await
        .err()
        .unwrap()
        .to_string();
    assert!(err.contains("--max-file-cache-upload-size"), "{err}");
    assert!(err.contains("at least 315MiB"), "{err}");
    let err = b
        .create_sink(&p("huge.bin"), options((5 << 40) + 1))
        .await
        .err()
        .unwrap()
        .to_string();
    assert!(err.contains("5 TiB"), "{err}");
    assert!(uploads(&s, &bucket).await.is_empty());
}

#[test]
fn part_sizes_for_typical_files() {
    const TIB: u64 = 1 << 40;
    assert_eq!(part_size(1_000_000), 8 * MIB); // 1 MB: one part (a single PutObject)
    assert_eq!(part_size(1_000_000_000), 8 * MIB); // 1 GB: 120 parts
    assert_eq!(1_000_000_000u64.div_ceil(8 * MIB), 120);
    assert_eq!(part_size(1_000_000_000_000), 96 * MIB); // 1 TB: 9,935 parts
    assert_eq!(1_000_000_000_000u64.div_ceil(96 * MIB), 9_935);
    assert_eq!(part_size(5 * TIB), 525 * MIB); // 5 TiB: 9,987 parts
    assert_eq!((5 * TIB).div_ceil(525 * MIB), 9_987);
    // With the default upload share (256 MiB) 1 TB fits, 5 TiB needs 525 MiB.
    assert!(check_upload_size(1_000_000_000_000, 256 * MIB).is_ok());
    let err = check_upload_size(5 * TIB, 256 * MIB)
        .unwrap_err()
        .to_string();
    assert!(err.contains("at least 525MiB"), "{err}");
    assert!(check_upload_size(5 * TIB, 525 * MIB).is_ok());
}

#[tokio::test]
async fn ranged_reader_reads_and_rereads() {
    let s = services();
    let cache = FileCache::new(256 * MIB, 64 * MIB, 32 * MIB);
    let (b, bucket) = backend(&s, "reader", &cache).await;
    let size = 41 * MIB as usize + 777;
    let bytes = data(size, 6);
    put(&s, &bucket, "in/src.bin", &bytes).await;
    let reader = b.open_s3_reader(&p("src.bin")).await.unwrap();
    assert_eq!(reader.size(), size as u64);
    let step = 1_000_003usize;
    let mut offset = 0usize;
    let mut reads = 0;
    while offset < size {
        let got = reader.read_at(offset as u64, step).await.unwrap();
        let end = (offset + step).min(size);
        assert!(got[..] == bytes[offset..end], "bytes at {offset}");
        assert!(cache.used() <= 32 * MIB);
        reads += 1;
        // Now and then, a re-read of something older (a retransmission).
        if reads % 7 == 0 {
            let back = offset.saturating_sub(20 * MIB as usize);
            let again = reader.read_at(back as u64, 5000).await.unwrap();
            assert!(again[..] == bytes[back..back + 5000], "re-read at {back}");
        }
        offset = end;
    }
    // Across a range boundary, at the very end, past the end.
    let at = 8 * MIB as usize - 10;
    assert!(reader.read_at(at as u64, 20).await.unwrap()[..] == bytes[at..at + 20]);
    assert!(reader.read_at(0, 100).await.unwrap()[..] == bytes[..100]);
    let tail = reader.read_at(size as u64 - 5, 100).await.unwrap();
    assert!(tail[..] == bytes[size - 5..]);
    assert!(reader.read_at(size as u64, 10).await.unwrap().is_empty());
    // Six ranges of 8 MiB: sequential reading fetched each about once.
    assert!(reader.gets() < 20, "{} GETs", reader.gets());
    assert!(cache.peak() <= 32 * MIB);
    drop(reader);
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(cache.used(), 0);

    let missing = b.open_reader(&p("nope.bin")).await.err().unwrap();
    assert!(
        matches!(missing, slipstream_storage::StorageError::NotFound(_)),
        "{missing}"
    );

    // Through the Backend trait, with a small share (one range at a time).
    let tiny = FileCache::new(64 * MIB, 64 * MIB, 4 * MIB);
    let b2 = b.clone().with_file_cache(tiny.clone());
    let reader = b2.open_reader(&p("src.bin")).await.unwrap();
    let got = reader.read_at(10 * MIB, 3 * MIB as usize).await.unwrap();
    assert!(got[..] == bytes[10 * MIB as usize..13 * MIB as usize]);
    let got = reader.read_at(MIB, 100).await.unwrap();
    assert!(got[..] == bytes[MIB as usize..MIB as usize + 100]);
    assert!(tiny.peak() <= 4 * MIB);
}

#[tokio::test]
async fn reaper_aborts_old_uploads_not_live_ones() {
    let s = services();
    let cache = FileCache::new(256 * MIB, 64 * MIB, 16 * MIB);
    let (b, bucket) = backend(&s, "reaper", &cache).await;
    let raw = raw_client(&s);
    for key in ["in/old1.bin", "in/sub/old2.bin", "outside/x.bin"] {
        raw.create_multipart_upload()
            .bucket(&bucket)
            .key(key)
            .send()
            .await
            .unwrap();
    }
    // A live sink's upload is never touched.
    let sink = b
        .create_s3_sink(&p("live.bin"), options(20 * MIB))
        .await
        .unwrap();
    let live_id = sink.upload_id().unwrap().to_string();
    let listed = b.multipart_uploads().await.unwrap();
    let mut keys: Vec<&str> = listed.iter().map(|u| u.key.as_str()).collect();
    keys.sort();
    assert_eq!(keys, ["in/live.bin", "in/old1.bin", "in/sub/old2.bin"]);
    assert!(listed.iter().any(|u| u.live && u.upload_id == live_id));
    // Young uploads stay.
    let none = b
        .reap_stale_uploads(Duration::from_secs(3600), false)
        .await
        .unwrap();
    assert!(none.is_empty(), "{none:?}");
    let dry = b.reap_stale_uploads(Duration::ZERO, true).await.unwrap();
    assert_eq!(dry.len(), 2);
    assert_eq!(uploads(&s, &bucket).await.len(), 4);
    let reaped = b.reap_stale_uploads(Duration::ZERO, false).await.unwrap();
    assert_eq!(reaped.len(), 2);
    let mut left: Vec<String> = uploads(&s, &bucket)
        .await
        .into_iter()
        .map(|u| u.0)
        .collect();
    left.sort();
    assert_eq!(left, ["in/live.bin", "outside/x.bin"]);
    Box::new(sink).abort().await.unwrap();
}

/// A stub S3 that starts multipart uploads, answers every UploadPart with 400 ExpiredToken
/// (after reading the body) and counts aborts.
async fn expired_token_stub(aborts: std::sync::Arc<std::sync::atomic::AtomicU32>) -> String {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        while let Ok((mut socket, _)) = listener.accept().await {
            let aborts = aborts.clone();
            tokio::spawn(async move {
                let mut head = Vec::new();
                let mut byte = [0u8; 1];
                while !head.ends_with(b"\r\n\r\n") {
                    match socket.read(&mut byte).await {
                        Ok(1) => head.push(byte[0]),
                        _ => return,
                    }
                }
                let text = String::from_utf8_lossy(&head).to_string();
                let lower = text.to_ascii_lowercase();
                let length: usize = lower
                    .lines()
                    .find_map(|l| l.strip_prefix("content-length:"))
                    .and_then(|v| v.trim().parse().ok())
                    .unwrap_or(0);
                let expect = lower.contains("expect: 100-continue");
                let line = text.lines().next().unwrap_or_default().to_string();
                let (status, body) = if line.starts_with("POST") && line.contains("uploads") {
                    ("200 OK", "<?xml version=\"1.0\" encoding=\"UTF-8\"?><InitiateMultipartUploadResult><Bucket>raw</Bucket><Key>k</Key><UploadId>UP1</UploadId></InitiateMultipartUploadResult>".to_string())
                } else if line.starts_with("PUT") && line.contains("partNumber") {
                    ("400 Bad Request", "<?xml version=\"1.0\" encoding=\"UTF-8\"?><Error><Code>ExpiredToken</Code><Message>The provided token has expired.</Message></Error>".to_string())
                } else if line.starts_with("DELETE") {
                    aborts.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
                    ("204 No Content", String::new())
                } else {
                    (
                        "404 Not Found",
                        "<Error><Code>NoSuchKey</Code><Message>no</Message></Error>".to_string(),
                    )
                };
                if !expect {
                    let mut left = length;
                    let mut buf = vec![0u8; 64 * 1024];
                    while left > 0 {
                        match socket.read(&mut buf[..left.min(64 * 1024)]).await {
                            Ok(0) | Err(_) => return,
                            Ok(n) => left -= n,
                        }
                    }
                }
                let response = format!(
                    "HTTP/1.1 {status}\r\nContent-Type: application/xml\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
                    body.len()
                );
                let _ = socket.write_all(response.as_bytes()).await;
                let _ = socket.shutdown().await;
            });
        }
    });
    addr.to_string()
}

#[tokio::test]
async fn expired_session_token_mid_upload() {
    let aborts = std::sync::Arc::new(std::sync::atomic::AtomicU32::new(0));
    let endpoint = expired_token_stub(aborts.clone()).await;
    let mut cfg = bare_config("raw");
    cfg.endpoint_override = Some(endpoint);
    cfg.scheme = slipstream_storage::config::Scheme::Http;
    cfg.access_key_id = Some("ASIATEMP".into());
    cfg.secret_key = Some(Secret("secret".into()));
    cfg.session_token = Some(Secret("FwoGZXIvYXdzEXAMPLETOKEN".into()));
    let cache = FileCache::new(64 * MIB, 64 * MIB, 16 * MIB);
    let b = S3Backend::new(&cfg).unwrap().with_file_cache(cache.clone());
    let size = 20 * MIB;
    let bytes = data(size as usize, 8);
    let mut sink = b.create_sink(&p("t.bin"), options(size)).await.unwrap();
    let mut error = None;
    for n in 0..20u64 {
        let block = Bytes::copy_from_slice(&bytes[(n * MIB) as usize..((n + 1) * MIB) as usize]);
        if let Err(e) = sink.write_at(n * MIB, block).await {
            error = Some(e);
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let message = match error {
        Some(e) => e.to_string(),
        None => sink.commit(digest(&bytes)).await.unwrap_err().to_string(),
    };
    assert!(message.contains("session token expired"), "{message}");
    assert!(message.contains("ExpiredToken"), "{message}");
    assert!(!message.contains("FwoGZXIvYXdzEXAMPLETOKEN"), "{message}");
    assert!(
        aborts.load(std::sync::atomic::Ordering::SeqCst) >= 1,
        "the upload was not aborted"
    );
}
