//! The server-wide bound on open reopenable sinks (File sinks: a partfile or in-place file and
//! its folder handle each). Every reception's writer takes a [`Slot`] for each such sink it
//! keeps open; when the server has none left, the writer checkpoints and closes its own least
//! recently used sink and reopens it from that checkpoint when it needs it again.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

/// The most reopenable sinks a server keeps open at once.
pub const MAX_OPEN_SINKS: usize = 512;
/// The fewest, whatever the open-file limit.
const MIN_OPEN_SINKS: usize = 8;

/// How many reopenable sinks this process may keep open: [`MAX_OPEN_SINKS`], or a quarter of
/// its open-file limit (`RLIMIT_NOFILE`, soft) if that is less, so that sinks (two descriptors
/// each) use at most half the descriptors and sockets, the database and the files being sent
/// keep the rest. At least 8.
pub fn limit_for_this_process() -> usize {
    let mut limit = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit only writes the struct we pass.
    let known = unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut limit) } == 0;
    let quarter = if known {
        usize::try_from(limit.rlim_cur / 4).unwrap_or(usize::MAX)
    } else {
        MAX_OPEN_SINKS
    };
    quarter.clamp(MIN_OPEN_SINKS, MAX_OPEN_SINKS)
}

/// The count of open reopenable sinks of one server, and its limit.
#[derive(Debug)]
pub(crate) struct OpenSinks {
    limit: AtomicUsize,
    open: AtomicUsize,
}

impl OpenSinks {
    pub fn new(limit: usize) -> Arc<OpenSinks> {
        Arc::new(OpenSinks {
            limit: AtomicUsize::new(limit.max(1)),
            open: AtomicUsize::new(0),
        })
    }

    pub fn limit(&self) -> usize {
        self.limit.load(Ordering::Relaxed)
    }

    pub fn set_limit(&self, limit: usize) {
        self.limit.store(limit.max(1), Ordering::Relaxed);
    }

    /// Sinks open right now.
    pub fn open(&self) -> usize {
        self.open.load(Ordering::Relaxed)
    }

    /// A slot, if the limit leaves one.
    pub fn try_take(self: &Arc<Self>) -> Option<Slot> {
        let limit = self.limit();
        self.open
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |open| {
                (open < limit).then_some(open + 1)
            })
            .ok()
            .map(|_| Slot(self.clone()))
    }

    /// A slot even beyond the limit: a reception with no sink of its own left to close may
    /// always keep one open, so that it makes progress while others hold every slot.
    pub fn take_over(self: &Arc<Self>) -> Slot {
        self.open.fetch_add(1, Ordering::AcqRel);
        Slot(self.clone())
    }
}

/// One open sink's place in the count; given back when dropped.
#[derive(Debug)]
pub(crate) struct Slot(Arc<OpenSinks>);

impl Drop for Slot {
    fn drop(&mut self) {
        self.0.open.fetch_sub(1, Ordering::AcqRel);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn slots_are_bounded_and_given_back() {
        let sinks = OpenSinks::new(2);
        let a = sinks.try_take().expect("first slot");
        let b = sinks.try_take().expect("second slot");
        assert!(sinks.try_take().is_none());
        let over = sinks.take_over();
        assert_eq!(sinks.open(), 3);
        drop((a, over));
        assert_eq!(sinks.open(), 1);
        let c = sinks.try_take().expect("a slot was freed");
        drop((b, c));
        assert_eq!(sinks.open(), 0);
        let limit = limit_for_this_process();
        assert!(
            (MIN_OPEN_SINKS..=MAX_OPEN_SINKS).contains(&limit),
            "{limit}"
        );
    }
}
