//! A FIFO of preallocated packet buffers: no allocation per packet.
//!
//! The relay reads each packet straight into the next free slot ([`PacketRing::spare`]); if the
//! model accepts it, [`PacketRing::commit`] makes it part of the queue with its delivery time,
//! otherwise the slot is simply reused by the next read. Delivery times are non-decreasing (see
//! [`crate::model`]), so the oldest packet is always the next one due.

/// Fixed-capacity ring of packet slots.
#[derive(Debug)]
pub struct PacketRing {
    data: Vec<u8>,
    due: Vec<u64>,
    tag: Vec<u64>,
    len: Vec<u32>,
    slot_size: usize,
    head: usize,
    count: usize,
}

impl PacketRing {
    /// `slots` buffers of `slot_size` bytes each (both at least 1). The memory is zeroed with one
    /// allocation; untouched pages cost no RAM until used.
    pub fn new(slots: usize, slot_size: usize) -> Self {
        let slots = slots.max(1);
        let slot_size = slot_size.max(1);
        Self {
            data: vec![0; slots * slot_size],
            due: vec![0; slots],
            tag: vec![0; slots],
            len: vec![0; slots],
            slot_size,
            head: 0,
            count: 0,
        }
    }

    /// Number of slots.
    pub fn capacity(&self) -> usize {
        self.due.len()
    }

    /// Packets queued.
    pub fn len(&self) -> usize {
        self.count
    }

    /// True when nothing is queued.
    pub fn is_empty(&self) -> bool {
        self.count == 0
    }

    /// True when every slot holds a queued packet.
    pub fn is_full(&self) -> bool {
        self.count == self.capacity()
    }

    fn slot(&self, i: usize) -> std::ops::Range<usize> {
        let start = i * self.slot_size;
        start..start + self.slot_size
    }

    /// The free slot the next packet should be read into, or `None` when the ring is full.
    pub fn spare(&mut self) -> Option<&mut [u8]> {
        if self.is_full() {
            return None;
        }
        let i = (self.head + self.count) % self.capacity();
        let r = self.slot(i);
        Some(&mut self.data[r])
    }

    /// Queues the packet last read into [`spare`](Self::spare) (`len` bytes, due at `due_ns`).
    /// Returns false (and queues nothing) when the ring is full or `len` exceeds the slot.
    pub fn commit(&mut self, len: usize, due_ns: u64) -> bool {
        self.commit_tagged(len, due_ns, 0)
    }

    /// Like [`commit`](Self::commit), with a caller-defined tag kept alongside the packet (the
    /// relay uses it to recognise consecutive segments of one TCP super-packet).
    pub fn commit_tagged(&mut self, len: usize, due_ns: u64, tag: u64) -> bool {
        if self.is_full() || len > self.slot_size {
            return false;
        }
        let i = (self.head + self.count) % self.capacity();
        self.due[i] = due_ns;
        self.tag[i] = tag;
        // len <= slot_size, and slot sizes are a few KiB, so this fits in u32.
        self.len[i] = len as u32;
        self.count += 1;
        true
    }

    /// Delivery time of the oldest packet.
    pub fn next_due(&self) -> Option<u64> {
        (!self.is_empty()).then(|| self.due[self.head])
    }

    /// The oldest packet if it is due at `now_ns`.
    pub fn peek_due(&self, now_ns: u64) -> Option<&[u8]> {
        if self.is_empty() || self.due[self.head] > now_ns {
            return None;
        }
        let start = self.head * self.slot_size;
        Some(&self.data[start..start + self.len[self.head] as usize])
    }

    /// The `k`-th oldest packet: (due time, tag, bytes).
    pub fn entry(&self, k: usize) -> Option<(u64, u64, &[u8])> {
        if k >= self.count {
            return None;
        }
        let i = (self.head + k) % self.capacity();
        let start = i * self.slot_size;
        Some((
            self.due[i],
            self.tag[i],
            &self.data[start..start + self.len[i] as usize],
        ))
    }

    /// Removes the `n` oldest packets (or all, if fewer are queued).
    pub fn pop_n(&mut self, n: usize) {
        let n = n.min(self.count);
        if n > 0 {
            self.head = (self.head + n) % self.capacity();
            self.count -= n;
        }
    }

    /// Removes the oldest packet (no-op when empty).
    pub fn pop(&mut self) {
        if self.count > 0 {
            self.head = (self.head + 1) % self.capacity();
            self.count -= 1;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn push(r: &mut PacketRing, byte: u8, len: usize, due: u64) -> bool {
        match r.spare() {
            Some(s) => {
                s[..len].fill(byte);
                r.commit(len, due)
            }
            None => false,
        }
    }

    #[test]
    fn fifo_with_due_times_and_wraparound() {
        let mut r = PacketRing::new(3, 16);
        assert!(r.is_empty());
        assert_eq!(r.next_due(), None);
        for round in 0..5u8 {
            assert!(push(&mut r, round, 4, 10 * u64::from(round)));
            assert!(push(&mut r, round + 100, 8, 10 * u64::from(round) + 5));
            assert_eq!(r.len(), 2);
            assert_eq!(
                r.peek_due(10 * u64::from(round)).map(<[u8]>::to_vec),
                Some(vec![round; 4])
            );
            r.pop();
            assert_eq!(
                r.peek_due(10 * u64::from(round)),
                None,
                "second one not due yet"
            );
            assert_eq!(r.next_due(), Some(10 * u64::from(round) + 5));
            assert_eq!(r.peek_due(u64::MAX).map(<[u8]>::len), Some(8));
            r.pop();
            assert!(r.is_empty());
        }
    }

    #[test]
    fn full_ring_refuses_and_uncommitted_slot_is_reused() {
        let mut r = PacketRing::new(2, 4);
        assert!(push(&mut r, 1, 4, 0));
        // Read into the spare slot but do not commit (packet dropped by the model) ...
        r.spare().unwrap().fill(9);
        // ... so the same slot is handed out again.
        assert!(push(&mut r, 2, 4, 0));
        assert!(r.is_full());
        assert!(r.spare().is_none());
        assert!(!r.commit(1, 0));
        assert_eq!(r.peek_due(0), Some(&[1u8; 4][..]));
        r.pop();
        assert_eq!(r.peek_due(0), Some(&[2u8; 4][..]));
    }

    #[test]
    fn entries_and_tags_by_position() {
        let mut r = PacketRing::new(3, 4);
        for t in 0..2u64 {
            r.pop();
            for k in 0..3u64 {
                assert!(r.spare().is_some());
                assert!(r.commit_tagged(1 + k as usize, 10 * k, 100 * t + k));
            }
            assert_eq!(
                r.entry(1).map(|(d, tag, b)| (d, tag, b.len())),
                Some((10, 100 * t + 1, 2))
            );
            assert_eq!(r.entry(3), None);
            r.pop_n(2);
            assert_eq!(
                r.entry(0).map(|(d, tag, _)| (d, tag)),
                Some((20, 100 * t + 2))
            );
        }
        r.pop_n(10);
        assert!(r.is_empty());
    }

    #[test]
    fn oversized_commit_is_refused() {
        let mut r = PacketRing::new(2, 4);
        assert!(r.spare().is_some());
        assert!(!r.commit(5, 0));
        assert!(r.is_empty());
    }
}
