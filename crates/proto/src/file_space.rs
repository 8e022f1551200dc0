//! `FileSpace`: maps several files, in manifest order, onto one transfer byte space `0..total_len`
//! and back (file index + offset <-> global offset), and splits a block into per-file pieces.

use std::ops::Range;

/// The files of a transfer laid end to end in one global byte space.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FileSpace {
    /// starts[i] = global offset of file i; one extra entry holds the total length.
    starts: Vec<u64>,
}

/// One contiguous piece of a global range that lies inside one file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FileSegment {
    /// Index of the file in manifest order.
    pub file_index: usize,
    /// Byte range inside that file.
    pub file_range: Range<u64>,
    /// The same bytes in the global space.
    pub global_range: Range<u64>,
}

/// The file sizes add up to more than `u64::MAX`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("total transfer size overflows u64")]
pub struct SizeOverflow;

impl FileSpace {
    /// Lays out files of the given sizes, in order.
    pub fn new<I: IntoIterator<Item = u64>>(sizes: I) -> Result<Self, SizeOverflow> {
        let mut starts = vec![0u64];
        let mut total = 0u64;
        for size in sizes {
            total = total.checked_add(size).ok_or(SizeOverflow)?;
            starts.push(total);
        }
        Ok(FileSpace { starts })
    }

    /// Sum of all file sizes.
    pub fn total_len(&self) -> u64 {
        self.starts.last().copied().unwrap_or(0)
    }

    /// Number of files (including empty ones).
    pub fn file_count(&self) -> usize {
        self.starts.len() - 1
    }

    /// Size of file `file_index`.
    pub fn file_len(&self, file_index: usize) -> Option<u64> {
        Some(self.starts.get(file_index + 1)? - self.starts.get(file_index)?)
    }

    /// Global range covered by file `file_index`.
    pub fn file_range(&self, file_index: usize) -> Option<Range<u64>> {
        Some(*self.starts.get(file_index)?..*self.starts.get(file_index + 1)?)
    }

    /// Global offset of `offset` inside file `file_index` (the end of a file is allowed).
    pub fn global_offset(&self, file_index: usize, offset: u64) -> Option<u64> {
        let range = self.file_range(file_index)?;
        let global = range.start.checked_add(offset)?;
        (global <= range.end).then_some(global)
    }

    /// The file holding global byte `global` and the offset inside it. Empty files hold no byte,
    /// so they are never returned.
    pub fn locate(&self, global: u64) -> Option<(usize, u64)> {
        if global >= self.total_len() {
            return None;
        }
        // The last file whose start is <= global is the non-empty one holding it.
        let index = self.starts.partition_point(|&start| start <= global) - 1;
        Some((index, global - self.starts[index]))
    }

    /// Splits a global range into per-file pieces (a block may straddle files).
    pub fn segments(&self, global: Range<u64>) -> impl Iterator<Item = FileSegment> + '_ {
        let end = global.end.min(self.total_len());
        let mut cursor = global.start;
        std::iter::from_fn(move || {
            if cursor >= end {
                return None;
            }
            let (file_index, offset) = self.locate(cursor)?;
            let file_end = self.starts[file_index + 1];
            let piece_end = file_end.min(end);
            let segment = FileSegment {
                file_index,
                file_range: offset..offset + (piece_end - cursor),
                global_range: cursor..piece_end,
            };
            cursor = piece_end;
            Some(segment)
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn maps_both_ways_and_skips_empty_files() {
        let space = FileSpace::new([10, 0, 5, 0, 20]).unwrap();
        assert_eq!(space.total_len(), 35);
        assert_eq!(space.file_count(), 5);
        assert_eq!(space.locate(0), Some((0, 0)));
        assert_eq!(space.locate(9), Some((0, 9)));
        assert_eq!(space.locate(10), Some((2, 0)));
        assert_eq!(space.locate(15), Some((4, 0)));
        assert_eq!(space.locate(35), None);
        assert_eq!(space.global_offset(2, 3), Some(13));
        assert_eq!(space.global_offset(2, 6), None);
        assert_eq!(space.global_offset(9, 0), None);
        let pieces: Vec<_> = space.segments(8..17).collect();
        assert_eq!(
            pieces,
            vec![
                FileSegment {
                    file_index: 0,
                    file_range: 8..10,
                    global_range: 8..10
                },
                FileSegment {
                    file_index: 2,
                    file_range: 0..5,
                    global_range: 10..15
                },
                FileSegment {
                    file_index: 4,
                    file_range: 0..2,
                    global_range: 15..17
                },
            ]
        );
        assert!(FileSpace::new([u64::MAX, 1]).is_err());
    }
}
