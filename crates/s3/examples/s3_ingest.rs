//! Benchmark (not a test): one file into an S3 sandbox through the S3 sink, as a transfer's
//! receiving side would write it (1 MiB blocks in order), with the file cache bounded.
//! Prints the rate and the process's peak RSS (VmHWM) as `key=value` lines for
//! bench/s3-ingest/run.sh.
//!
//! usage: s3_ingest FILE BUCKET KEY
//! env: S3_ENDPOINT (http://host:port), AWS_ACCESS_KEY_ID, AWS_SECRET_ACCESS_KEY,
//!      CACHE_MIB (whole cache and upload share, default 256)

use bytes::Bytes;
use slipstream_s3::S3Backend;
use slipstream_storage::cache::FileCache;
use slipstream_storage::config::{S3Config, Scheme, Secret};
use slipstream_storage::data::{DigestBuilder, FileSink, OverwriteMode, SinkOptions, MIB};
use slipstream_storage::RelPath;
use std::io::Read;
use std::time::Instant;

fn env(name: &str) -> Result<String, String> {
    std::env::var(name).map_err(|_| format!("{name} is not set"))
}

/// VmHWM of this process, in KiB.
fn peak_rss_kib() -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("VmHWM:"))
                .and_then(|l| l.split_whitespace().nth(1))
                .and_then(|n| n.parse().ok())
        })
        .unwrap_or(0)
}

#[tokio::main]
async fn main() -> Result<(), String> {
    let args: Vec<String> = std::env::args().collect();
    let [_, file, bucket, key] = args.as_slice() else {
        return Err("usage: s3_ingest FILE BUCKET KEY".into());
    };
    let cache_mib: u64 = std::env::var("CACHE_MIB")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(256);
    let mut config = S3Config::new(bucket.clone());
    config.endpoint_override = Some(env("S3_ENDPOINT")?);
    config.scheme = Scheme::Http;
    config.access_key_id = Some(env("AWS_ACCESS_KEY_ID")?);
    config.secret_key = Some(Secret(env("AWS_SECRET_ACCESS_KEY")?));
    let cache = FileCache::new(cache_mib * MIB, cache_mib * MIB, 64 * MIB);
    let backend = S3Backend::new(&config)
        .map_err(|e| e.to_string())?
        .with_file_cache(cache.clone());
    let size = std::fs::metadata(file).map_err(|e| e.to_string())?.len();

    // The sender's digest, computed before the clock starts (the sending side's work).
    let mut digest = DigestBuilder::new(size);
    let mut reader = std::fs::File::open(file).map_err(|e| e.to_string())?;
    let mut block = vec![0u8; MIB as usize];
    loop {
        let n = reader.read(&mut block).map_err(|e| e.to_string())?;
        if n == 0 {
            break;
        }
        digest.update(&block[..n]);
    }
    let expected = digest.finish().map_err(|e| e.to_string())?;

    let path = RelPath::parse(key).map_err(|e| e.to_string())?;
    let started = Instant::now();
    let mut sink = backend
        .create_s3_sink(
            &path,
            SinkOptions {
                size,
                overwrite: OverwriteMode::InPlaceAlways,
                executable: false,
                modification_time: None,
                reception_id: "bench".into(),
                resume: None,
                resume_only: false,
            },
        )
        .await
        .map_err(|e| e.to_string())?;
    let mut reader = std::fs::File::open(file).map_err(|e| e.to_string())?;
    let mut offset = 0u64;
    loop {
        let mut buf = vec![0u8; MIB as usize];
        let n = reader.read(&mut buf).map_err(|e| e.to_string())?;
        if n == 0 {
            break;
        }
        buf.truncate(n);
        sink.write_at(offset, Bytes::from(buf))
            .await
            .map_err(|e| e.to_string())?;
        offset += n as u64;
    }
    Box::new(sink)
        .commit(expected)
        .await
        .map_err(|e| e.to_string())?;
    let seconds = started.elapsed().as_secs_f64();
    println!("bytes={size}");
    println!("seconds={seconds:.3}");
    println!("mib_per_s={:.1}", size as f64 / MIB as f64 / seconds);
    println!("cache_mib={cache_mib}");
    println!("cache_peak_mib={:.1}", cache.peak() as f64 / MIB as f64);
    println!("peak_rss_mib={:.1}", peak_rss_kib() as f64 / 1024.0);
    Ok(())
}
