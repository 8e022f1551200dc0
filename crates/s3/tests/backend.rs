//! S3Backend against the real SeaweedFS: folder semantics (markers, implicit folders), ls
//! paging, du, mv, rm, prefix isolation, and what happens to odd keys.

mod common;
use common::*;
use futures::StreamExt;
use slipstream_s3::S3Backend;
use slipstream_storage::{Backend, EntryKind, RelPath, StorageError};

fn p(s: &str) -> RelPath {
    RelPath::parse(s).unwrap()
}

async fn names(b: &S3Backend, dir: &str) -> Vec<(String, EntryKind)> {
    let page = b.list(&p(dir), 1000, None).await.unwrap();
    assert!(page.next_cursor.is_none());
    page.entries.into_iter().map(|e| (e.name, e.kind)).collect()
}

fn d(n: &str) -> (String, EntryKind) {
    (n.to_string(), EntryKind::Directory)
}
fn f(n: &str) -> (String, EntryKind) {
    (n.to_string(), EntryKind::File)
}

#[tokio::test]
async fn folder_semantics_mkdir_ls_du_mv_rm() {
    let s = services();
    let bucket = bucket(&s, "fs").await;
    let mut cfg = config(&s, &bucket);
    cfg.path = "/sandbox/".into();
    let b = S3Backend::new(&cfg).unwrap();

    // The root exists with nothing in it (no marker, no keys).
    assert_eq!(
        b.stat(&RelPath::root()).await.unwrap().unwrap().kind,
        EntryKind::Directory
    );
    assert!(names(&b, "/").await.is_empty());
    assert_eq!(b.usage(&RelPath::root()).await.unwrap().total_files, 0);

    // mkdir writes one marker per missing level.
    b.mkdir(&p("a/b/c")).await.unwrap();
    b.mkdir(&p("a/b")).await.unwrap(); // existing: fine
    let keys = all_keys(&s, &bucket).await;
    for marker in ["sandbox/a/", "sandbox/a/b/", "sandbox/a/b/c/"] {
        assert!(keys.contains(&marker.to_string()), "{keys:?}");
    }
    assert_eq!(names(&b, "/").await, [d("a")]);
    assert_eq!(names(&b, "a").await, [d("b")]);
    assert_eq!(names(&b, "a/b/c").await, []);

    // Files: create, conflicts, missing parents.
    b.create_file(&p("a/b/empty.txt")).await.unwrap();
    put(&s, &bucket, "sandbox/a/b/data.bin", &[7u8; 100]).await;
    let st = b.stat(&p("a/b/data.bin")).await.unwrap().unwrap();
    assert_eq!((st.kind, st.size), (EntryKind::File, 100));
    assert!(st.modification_time.unwrap() > 1_600_000_000_000_000);
    assert!(matches!(
        b.create_file(&p("a/b/empty.txt")).await,
        Err(StorageError::Conflict(_))
    ));
    assert!(matches!(
        b.create_file(&p("nope/x")).await,
        Err(StorageError::NotFound(_))
    ));
    assert!(matches!(
        b.mkdir(&p("a/b/data.bin/sub")).await,
        Err(StorageError::Conflict(_))
    ));
    assert!(matches!(
        b.create_file(&p("a/b/c")).await,
        Err(StorageError::Conflict(_))
    ));
    assert!(matches!(
        b.list(&p("a/b/data.bin"), 10, None).await,
        Err(StorageError::Conflict(_))
    ));
    assert!(matches!(
        b.list(&p("missing"), 10, None).await,
        Err(StorageError::NotFound(_))
    ));
    assert_eq!(
        names(&b, "a/b").await,
        [d("c"), f("data.bin"), f("empty.txt")]
    );

    // du: files, bytes, folders below (not the folder itself).
    let u = b.usage(&RelPath::root()).await.unwrap();
    assert_eq!(
        (u.total_files, u.total_size, u.total_directories),
        (2, 100, 3)
    );
    let u = b.usage(&p("a/b")).await.unwrap();
    assert_eq!(
        (u.total_files, u.total_size, u.total_directories),
        (2, 100, 1)
    );
    let u = b.usage(&p("a/b/data.bin")).await.unwrap();
    assert_eq!(
        (u.total_files, u.total_size, u.total_directories),
        (1, 100, 0)
    );
    assert!(matches!(
        b.usage(&p("zzz")).await,
        Err(StorageError::NotFound(_))
    ));

    // rm: non-empty without recursive is a conflict; missing is not found; root is refused.
    assert!(matches!(
        b.remove(&p("a"), false).await,
        Err(StorageError::Conflict(_))
    ));
    assert!(matches!(
        b.remove(&p("zzz"), true).await,
        Err(StorageError::NotFound(_))
    ));
    assert!(matches!(
        b.remove(&RelPath::root(), true).await,
        Err(StorageError::PermissionDenied(_))
    ));

    // mv a file (CopyObject + DeleteObject): content travels.
    b.rename(&p("a/b/data.bin"), &p("a/moved.bin"))
        .await
        .unwrap();
    assert!(b.stat(&p("a/b/data.bin")).await.unwrap().is_none());
    let got = raw_client(&s)
        .get_object()
        .bucket(&bucket)
        .key("sandbox/a/moved.bin")
        .send()
        .await
        .unwrap();
    assert_eq!(
        got.body.collect().await.unwrap().into_bytes().as_ref(),
        &[7u8; 100]
    );

    // mv errors.
    assert!(matches!(
        b.rename(&p("zzz"), &p("y")).await,
        Err(StorageError::NotFound(_))
    ));
    assert!(matches!(
        b.rename(&p("a/moved.bin"), &p("a/b")).await,
        Err(StorageError::Conflict(_))
    ));
    assert!(matches!(
        b.rename(&p("a/moved.bin"), &p("no/such/x")).await,
        Err(StorageError::NotFound(_))
    ));
    assert!(matches!(
        b.rename(&p("a"), &p("a/b/c/a")).await,
        Err(StorageError::Conflict(_))
    ));

    // mv a folder: every key below moves; the source's parent stays.
    b.rename(&p("a/b"), &p("x")).await.unwrap();
    assert_eq!(names(&b, "/").await, [d("a"), d("x")]);
    assert_eq!(names(&b, "x").await, [d("c"), f("empty.txt")]);
    assert_eq!(names(&b, "a").await, [f("moved.bin")]);
    assert!(b.stat(&p("a/b")).await.unwrap().is_none());

    // rm -r, then rm of an empty folder; a file's removal keeps its folder.
    b.remove(&p("x"), true).await.unwrap();
    assert!(b.stat(&p("x")).await.unwrap().is_none());
    assert_eq!(names(&b, "/").await, [d("a")]);
    b.remove(&p("a/moved.bin"), false).await.unwrap();
    assert_eq!(names(&b, "a").await, []);
    b.remove(&p("a"), false).await.unwrap();
    assert_eq!(names(&b, "/").await, []);
    assert!(
        all_keys(&s, &bucket).await.is_empty(),
        "{:?}",
        all_keys(&s, &bucket).await
    );
}

#[tokio::test]
async fn implicit_folders_without_markers() {
    let s = services();
    let bucket = bucket(&s, "implicit").await;
    put(&s, &bucket, "deep/er/file.txt", b"hello").await;
    put(&s, &bucket, "top.txt", b"x").await;
    let b = S3Backend::new(&config(&s, &bucket)).unwrap();
    assert_eq!(names(&b, "/").await, [d("deep"), f("top.txt")]);
    assert_eq!(
        b.stat(&p("deep/er")).await.unwrap().unwrap().kind,
        EntryKind::Directory
    );
    b.mkdir(&p("deep/er/new")).await.unwrap();
    b.create_file(&p("deep/f2")).await.unwrap();
    // The parent of a removed last file is kept (a marker is written when needed).
    b.remove(&p("deep/er/file.txt"), false).await.unwrap();
    b.remove(&p("deep/er/new"), false).await.unwrap();
    assert_eq!(
        b.stat(&p("deep/er")).await.unwrap().unwrap().kind,
        EntryKind::Directory
    );
    assert_eq!(names(&b, "deep").await, [d("er"), f("f2")]);
    let u = b.usage(&RelPath::root()).await.unwrap();
    assert_eq!((u.total_files, u.total_size), (2, 1));
}

#[tokio::test]
async fn path_prefixes_isolate_sandboxes() {
    let s = services();
    let bucket = bucket(&s, "iso").await;
    let mut ca = config(&s, &bucket);
    ca.path = "a".into();
    let mut cb = config(&s, &bucket);
    cb.path = "/b/".into();
    let (a, b) = (S3Backend::new(&ca).unwrap(), S3Backend::new(&cb).unwrap());
    a.create_file(&p("only-a.txt")).await.unwrap();
    a.mkdir(&p("dir-a")).await.unwrap();
    b.create_file(&p("only-b.txt")).await.unwrap();
    // A sibling prefix that starts with the same letters is not inside "a/".
    put(&s, &bucket, "ab/not-mine.txt", b"x").await;
    put(&s, &bucket, "a.txt", b"x").await;

    assert_eq!(names(&a, "/").await, [d("dir-a"), f("only-a.txt")]);
    assert_eq!(names(&b, "/").await, [f("only-b.txt")]);
    assert!(a.stat(&p("only-b.txt")).await.unwrap().is_none());
    assert!(b.stat(&p("only-a.txt")).await.unwrap().is_none());
    assert!(matches!(
        b.remove(&p("only-a.txt"), false).await,
        Err(StorageError::NotFound(_))
    ));
    assert_eq!(a.usage(&RelPath::root()).await.unwrap().total_files, 1);

    let mut keys = all_keys(&s, &bucket).await;
    keys.sort();
    assert_eq!(
        keys,
        [
            "a.txt",
            "a/dir-a/",
            "a/only-a.txt",
            "ab/not-mine.txt",
            "b/only-b.txt"
        ]
    );

    // The bucket-root sandbox sees both prefixes as folders.
    let root = S3Backend::new(&config(&s, &bucket)).unwrap();
    assert_eq!(
        names(&root, "/").await,
        [f("a.txt"), d("a"), d("ab"), d("b")]
    );
}

#[tokio::test]
async fn listing_2500_objects_pages_by_1000() {
    let s = services();
    let bucket = bucket(&s, "paging").await;
    let raw = raw_client(&s);
    // 2,490 files and 10 folders (each with one file) directly in "big/".
    let keys: Vec<String> = (0..2500)
        .map(|i| {
            if i % 250 == 0 {
                format!("big/dir{i:04}/inner")
            } else {
                format!("big/f{i:04}")
            }
        })
        .collect();
    futures::stream::iter(keys.iter().cloned())
        .map(|k| {
            let raw = raw.clone();
            let bucket = bucket.clone();
            async move {
                raw.put_object()
                    .bucket(bucket)
                    .key(&k)
                    .body(b"12".to_vec().into())
                    .send()
                    .await
                    .unwrap();
            }
        })
        .buffer_unordered(32)
        .collect::<Vec<_>>()
        .await;
    let b = S3Backend::new(&config(&s, &bucket)).unwrap();
    let mut all = Vec::new();
    let mut sizes = Vec::new();
    let mut cursor: Option<String> = None;
    loop {
        let page = b.list(&p("big"), 1000, cursor.as_deref()).await.unwrap();
        sizes.push(page.entries.len());
        all.extend(page.entries.into_iter().map(|e| (e.name, e.kind)));
        match page.next_cursor {
            Some(c) => cursor = Some(c),
            None => break,
        }
    }
    assert_eq!(sizes, [1000, 1000, 500]);
    let mut expected: Vec<(String, EntryKind)> = (0..2500)
        .map(|i| {
            if i % 250 == 0 {
                d(&format!("dir{i:04}"))
            } else {
                f(&format!("f{i:04}"))
            }
        })
        .collect();
    expected.sort_by(|x, y| x.0.cmp(&y.0));
    assert_eq!(all, expected, "nothing lost, duplicated or out of order");
    let u = b.usage(&p("big")).await.unwrap();
    assert_eq!(
        (u.total_files, u.total_size, u.total_directories),
        (2500, 5000, 10)
    );
    // A small limit pages too; a foreign cursor is refused.
    let page = b.list(&p("big"), 7, None).await.unwrap();
    assert_eq!(page.entries.len(), 7);
    assert!(b.list(&p("big"), 7, Some("garbage")).await.is_err());
    // rm -r deletes in DeleteObjects batches of 1,000.
    b.remove(&p("big"), true).await.unwrap();
    assert!(all_keys(&s, &bucket).await.is_empty());
    assert!(names(&b, "/").await.is_empty());
}

#[tokio::test]
async fn odd_keys_are_refused_or_normalised_by_seaweedfs_and_never_shown() {
    let s = services();
    let bucket = bucket(&s, "odd").await;
    let raw = raw_client(&s);
    put(&s, &bucket, "ok.txt", b"x").await;
    let mut stored = Vec::new();
    for key in [".", "..", "a//b", "./x", "../y", "d/./z", "e/../f"] {
        if raw
            .put_object()
            .bucket(&bucket)
            .key(key)
            .body(Vec::new().into())
            .send()
            .await
            .is_ok()
        {
            stored.push(key);
        }
    }
    // SeaweedFS refuses `.`/`..` segments (400 InvalidRequest) and stores `a//b` as `a/b`, so
    // the odd-key listing itself is tested against a stub (tests/stub.rs).
    assert_eq!(stored, ["a//b"]);
    let mut keys = all_keys(&s, &bucket).await;
    keys.sort();
    assert_eq!(keys, ["a/b", "ok.txt"]);
    let b = S3Backend::new(&config(&s, &bucket)).unwrap();
    assert_eq!(names(&b, "/").await, [d("a"), f("ok.txt")]);
    // Paths cannot name them: RelPath refuses `..` and collapses `.` and `//`.
    assert!(RelPath::parse("..").is_err());
    assert_eq!(RelPath::parse("a//b").unwrap().as_str(), "a/b");
    assert_eq!(RelPath::parse("./x").unwrap().as_str(), "x");
}

#[tokio::test]
async fn multipart_copy_with_upload_part_copy() {
    let s = services();
    let bucket = bucket(&s, "mpcopy").await;
    let size = 12 * 1024 * 1024 + 3;
    let data: Vec<u8> = (0..size).map(|i| (i % 251) as u8).collect();
    put(&s, &bucket, "src.bin", &data).await;
    let b = S3Backend::new(&config(&s, &bucket)).unwrap();
    // 5 MiB parts: 5 + 5 + 2 MiB (+3 bytes), through UploadPartCopy with source ranges.
    b.copy_in_parts(&p("src.bin"), &p("dst.bin"), 5 * 1024 * 1024)
        .await
        .unwrap();
    let got = raw_client(&s)
        .get_object()
        .bucket(&bucket)
        .key("dst.bin")
        .send()
        .await
        .unwrap();
    let got = got.body.collect().await.unwrap().into_bytes();
    assert_eq!(got.len(), data.len());
    assert!(got.as_ref() == data.as_slice(), "copied bytes differ");
    // Nothing left behind.
    let uploads = raw_client(&s)
        .list_multipart_uploads()
        .bucket(&bucket)
        .send()
        .await
        .unwrap();
    assert!(uploads.uploads().is_empty());
    // A failing copy (parts below S3's 5 MiB minimum) is aborted, not left behind.
    let failed = b
        .copy_in_parts(&p("src.bin"), &p("bad.bin"), 1024 * 1024)
        .await;
    if failed.is_err() {
        let uploads = raw_client(&s)
            .list_multipart_uploads()
            .bucket(&bucket)
            .send()
            .await
            .unwrap();
        assert!(
            uploads.uploads().is_empty(),
            "the failed upload was aborted"
        );
    }
}
