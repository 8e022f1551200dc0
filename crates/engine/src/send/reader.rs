//! A source file opened on its first read, so that a transfer of thousands of files does not
//! hold a descriptor per file from the start. Refuses a file whose size changed since the
//! manifest was made.

use async_trait::async_trait;
use bytes::Bytes;
use slipstream_storage::data::ObjectReader;
use slipstream_storage::{Backend, RelPath, StorageError, StorageResult};
use std::sync::Arc;
use tokio::sync::OnceCell;

pub struct LazyReader {
    backend: Arc<dyn Backend>,
    path: RelPath,
    /// The user's path, for messages.
    shown: String,
    size: u64,
    inner: OnceCell<Box<dyn ObjectReader>>,
}

impl LazyReader {
    pub fn new(backend: Arc<dyn Backend>, path: RelPath, shown: String, size: u64) -> Self {
        LazyReader {
            backend,
            path,
            shown,
            size,
            inner: OnceCell::new(),
        }
    }

    async fn reader(&self) -> StorageResult<&dyn ObjectReader> {
        let reader = self
            .inner
            .get_or_try_init(|| async {
                let reader = self.backend.open_reader(&self.path).await?;
                if reader.size() != self.size {
                    return Err(StorageError::Conflict(format!(
                        "source '{}' changed since the manifest was made ({} bytes, now {}): \
                         create a new manifest",
                        self.shown,
                        self.size,
                        reader.size()
                    )));
                }
                Ok(reader)
            })
            .await?;
        Ok(reader.as_ref())
    }
}

#[async_trait]
impl ObjectReader for LazyReader {
    fn size(&self) -> u64 {
        self.size
    }

    async fn read_at(&self, offset: u64, len: usize) -> StorageResult<Bytes> {
        self.reader().await?.read_at(offset, len).await
    }
}
