//! Sender and receiver driven by hand: retransmission timing, flow-control blocking, resume,
//! ACK size bounds, and arbitrary garbage fed to both ends.

mod common;

use common::{PatternSource, SinkModel, VerifyingSink};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use slipstream_proto::wire::{AckFrame, Header, HEADER_LEN};
use slipstream_proto::{
    CipherLevel, PacketProtection, PacketType, RangeSet, RateLimits, ReceiveOutcome, Receiver,
    Role, Sender, SessionSecret, TransferParams, Transmit, TransmitKind, TransportConfig,
};
use std::time::{Duration, Instant};

const KEY: [u8; 32] = [3; 32];
const SESSION: u32 = 9;

fn endpoints(
    level: CipherLevel,
    total_len: u64,
    config: TransportConfig,
    now: Instant,
) -> (Sender, Receiver) {
    let block_size = TransferParams::block_size_for_datagram(1400, level).unwrap();
    let params = TransferParams::new(SESSION, total_len, block_size).unwrap();
    let secret = SessionSecret { level, key: &KEY };
    let sender = Sender::new(
        params,
        config.clone(),
        RateLimits::transfer(1_000_000),
        secret,
        now,
    )
    .unwrap();
    let receiver = Receiver::new(params, config, secret, now).unwrap();
    (sender, receiver)
}

/// Everything the sender sends from `from` up to `until`, following its pacing timer.
fn drain_sender(
    sender: &mut Sender,
    from: Instant,
    until: Instant,
) -> Vec<(TransmitKind, Vec<u8>)> {
    let mut out = Vec::new();
    let mut buffer = Vec::new();
    let mut now = from;
    loop {
        loop {
            buffer.clear();
            let Some(transmit) = sender.poll_transmit(now, &mut PatternSource, &mut buffer) else {
                break;
            };
            out.push((transmit.kind, buffer.clone()));
        }
        match sender.next_timeout() {
            Some(next) if next <= until => now = now.max(next),
            _ => return out,
        }
    }
}

/// The receiver's next ACK, alone in `out`.
fn poll_ack(receiver: &mut Receiver, now: Instant, out: &mut Vec<u8>) -> Option<Transmit> {
    out.clear();
    receiver.poll_transmit(now, out)
}

/// Sends for one millisecond: enough for every block of these small tests at 1 Gbit/s.
fn burst(sender: &mut Sender, now: Instant) -> Vec<(TransmitKind, Vec<u8>)> {
    drain_sender(sender, now, now + Duration::from_millis(1))
}

fn block_of(datagram: &[u8]) -> u64 {
    // Level 0 only: the block index follows the header in clear.
    datagram[HEADER_LEN..HEADER_LEN + 6]
        .iter()
        .fold(0, |acc, &byte| (acc << 8) | byte as u64)
}

#[test]
fn a_lost_block_is_retransmitted_after_rtt_plus_margin_and_not_before() {
    let start = Instant::now();
    let (mut sender, mut receiver) = endpoints(
        CipherLevel::None,
        20 * 1000,
        TransportConfig::default(),
        start,
    );
    let mut sink = VerifyingSink::new(SinkModel::Instant { window: 1 << 30 });
    let sent = burst(&mut sender, start);
    assert!(sent.len() >= 14, "{} datagrams", sent.len());
    let total_blocks = sender.stats().total_blocks;
    assert_eq!(sent.len() as u64, total_blocks);
    // Everything but block 5 arrives 50 ms later; the ACK reaches the sender after 100 ms.
    let arrival = start + Duration::from_millis(50);
    for (_, datagram) in &sent {
        if block_of(datagram) != 5 {
            let mut datagram = datagram.clone();
            receiver.handle_datagram(arrival, &mut datagram, &mut sink);
        }
    }
    let mut ack = Vec::new();
    while poll_ack(&mut receiver, arrival, &mut ack).is_some() {
        let mut copy = ack.clone();
        sender
            .handle_datagram(start + Duration::from_millis(100), &mut copy)
            .unwrap();
    }
    let rtt = sender.stats().smoothed_rtt;
    assert!(
        rtt >= Duration::from_millis(99) && rtt <= Duration::from_millis(101),
        "{rtt:?}"
    );
    let timeout = sender.retransmit_timeout();
    assert!(timeout > rtt);
    let deadline = start + timeout;
    let before = drain_sender(
        &mut sender,
        start + Duration::from_millis(100),
        deadline - Duration::from_micros(1),
    );
    assert!(before.is_empty(), "retransmitted before RTT + margin");
    assert!(sender.next_timeout().unwrap() <= deadline + Duration::from_millis(1));
    let after = burst(&mut sender, deadline);
    // The retransmission, plus one tail copy of it since every block was already sent once.
    assert_eq!(after.len(), 2);
    for (kind, datagram) in &after {
        assert_eq!(*kind, TransmitKind::Retransmission);
        assert_eq!(block_of(datagram), 5);
    }
    assert_eq!(sender.stats().blocks_retransmitted, 2);
}

#[test]
fn flow_control_limit_holds_new_data_until_the_window_opens() {
    let start = Instant::now();
    let config = TransportConfig {
        initial_window: 3 * 1376,
        ..TransportConfig::default()
    };
    let (mut sender, mut receiver) = endpoints(CipherLevel::None, 100_000, config, start);
    let block_size = sender.params().block_size as u64;
    assert_eq!(block_size, 1376);
    let sent = burst(&mut sender, start);
    assert_eq!(sent.len(), 3);
    // Only the loss deadline is pending: nothing to send until an ACK opens the window.
    let timeout = sender.next_timeout().unwrap();
    assert!(timeout >= start + sender.retransmit_timeout());

    let mut sink = VerifyingSink::new(SinkModel::Slow {
        capacity: 10 * block_size,
        drain_bps: 1,
    });
    let now = start + Duration::from_millis(10);
    for (_, datagram) in sent {
        let mut datagram = datagram;
        let outcome = receiver.handle_datagram(now, &mut datagram, &mut sink);
        assert!(matches!(outcome, ReceiveOutcome::Delivered { .. }));
    }
    let mut ack = Vec::new();
    while poll_ack(&mut receiver, now, &mut ack).is_some() {
        let frame = AckFrame::decode(&ack[HEADER_LEN..]).unwrap();
        // 3 blocks received plus 7 blocks of room.
        assert_eq!(frame.max_data, 10 * block_size);
        sender
            .handle_datagram(now + Duration::from_millis(10), &mut ack)
            .unwrap();
    }
    let more = burst(&mut sender, now + Duration::from_millis(10));
    assert_eq!(more.len(), 7);
    assert!(more.iter().all(|(kind, _)| *kind == TransmitKind::NewData));
}

#[test]
fn resumed_transfer_sends_only_missing_blocks() {
    let start = Instant::now();
    let (mut sender, mut receiver) = endpoints(
        CipherLevel::Aes128Gcm,
        50 * 1000,
        TransportConfig::default(),
        start,
    );
    let total_blocks = sender.stats().total_blocks;
    let checkpoint: RangeSet = [0..10, 20..total_blocks - 1].into_iter().collect();
    sender.resume_from(&checkpoint);
    receiver.resume_from(&checkpoint);
    let sent = burst(&mut sender, start);
    assert_eq!(sent.len(), 11);
    let mut sink = VerifyingSink::new(SinkModel::Instant { window: 1 << 30 });
    for (_, datagram) in sent {
        let mut datagram = datagram;
        receiver.handle_datagram(start, &mut datagram, &mut sink);
    }
    assert!(receiver.is_complete());
    assert_eq!(sink.mismatched_blocks, 0);
    let mut ack = Vec::new();
    while poll_ack(&mut receiver, start, &mut ack).is_some() {
        sender.handle_datagram(start, &mut ack).unwrap();
    }
    assert!(sender.is_complete());
    let close = burst(&mut sender, start);
    assert_eq!(close.len(), 1);
    assert_eq!(close[0].0, TransmitKind::Close);
    assert!(sender.is_closed());
    let mut datagram = close[0].1.clone();
    assert!(matches!(
        receiver.handle_datagram(start, &mut datagram, &mut sink),
        ReceiveOutcome::Closed(_)
    ));
    assert_eq!(receiver.next_timeout(), None);
}

#[test]
fn a_resume_larger_than_the_initial_window_sends_at_once() {
    let start = Instant::now();
    let config = TransportConfig::default();
    let total = 4 * config.initial_window;
    let (mut sender, mut receiver) = endpoints(CipherLevel::None, total, config.clone(), start);
    let resumed_blocks = sender.params().block_of(3 * config.initial_window);
    let mut checkpoint = RangeSet::new();
    checkpoint.insert(0..resumed_blocks);
    sender.resume_from(&checkpoint);
    receiver.resume_from(&checkpoint);
    // Before any ACK, the sender may already send new data beyond the resumed bytes.
    let sent = burst(&mut sender, start);
    let data: Vec<u64> = sent
        .iter()
        .filter(|(kind, _)| *kind == TransmitKind::NewData)
        .map(|(_, datagram)| block_of(datagram))
        .collect();
    assert!(
        !data.is_empty(),
        "the resumed sender stalled on its flow window"
    );
    assert!(data.iter().all(|&block| block >= resumed_blocks));
}

#[test]
fn acks_stay_within_one_datagram_whatever_the_gaps() {
    let start = Instant::now();
    let config = TransportConfig {
        max_ack_datagram_size: 1200,
        ..TransportConfig::default()
    };
    let (mut sender, mut receiver) =
        endpoints(CipherLevel::Aes256Gcm, 400_000 * 1000, config, start);
    let params = *sender.params();
    let mut sink = VerifyingSink::new(SinkModel::Instant { window: 1 << 40 });
    let mut data_sealer =
        PacketProtection::new(CipherLevel::Aes256Gcm, &KEY, SESSION, Role::Sender).unwrap();
    let mut ack = Vec::new();
    let mut reported = RangeSet::new();
    let mut acks = 0;
    // Every third block of the first 30 000 arrives: 10 000 separate ranges.
    for block in (0..30_000u64).step_by(3) {
        let mut datagram = Vec::new();
        let packet_start = data_sealer
            .start_packet(PacketType::Data, &mut datagram)
            .unwrap();
        slipstream_proto::wire::DataFields {
            block,
            timestamp_us: 0,
        }
        .encode(&mut datagram);
        let payload_start = datagram.len();
        datagram.resize(payload_start + params.block_len(block), 0);
        common::fill_pattern(
            params.block_bytes(block).start,
            &mut datagram[payload_start..],
        );
        data_sealer.seal(&mut datagram, packet_start);
        let outcome = receiver.handle_datagram(start, &mut datagram, &mut sink);
        assert!(matches!(outcome, ReceiveOutcome::Delivered { .. }));
        while poll_ack(&mut receiver, start, &mut ack).is_some() {
            acks += 1;
            assert!(ack.len() <= 1200, "ACK of {} bytes", ack.len());
            let mut opener =
                PacketProtection::new(CipherLevel::Aes256Gcm, &KEY, SESSION, Role::Sender).unwrap();
            let mut copy = ack.clone();
            let (header, body) = opener.open(&mut copy).unwrap();
            assert_eq!(header.packet_type, PacketType::Ack);
            let frame = AckFrame::decode(body).unwrap();
            reported.insert(0..frame.cumulative);
            for range in frame.ranges {
                reported.insert(range);
            }
            sender.handle_datagram(start, &mut ack).unwrap();
        }
    }
    let later = start + Duration::from_secs(1);
    while poll_ack(&mut receiver, later, &mut ack).is_some() {
        let mut opener =
            PacketProtection::new(CipherLevel::Aes256Gcm, &KEY, SESSION, Role::Sender).unwrap();
        let mut copy = ack.clone();
        let (_, body) = opener.open(&mut copy).unwrap();
        let frame = AckFrame::decode(body).unwrap();
        reported.insert(0..frame.cumulative);
        for range in frame.ranges {
            reported.insert(range);
        }
        sender.handle_datagram(later, &mut ack).unwrap();
    }
    assert!(acks > 10);
    // Every received block was reported at least once, and the sender knows all of them.
    assert_eq!(reported.len(), 10_000);
    assert_eq!(sender.stats().blocks_acked, 10_000);
    assert_eq!(sink.mismatched_blocks, 0);
}

#[test]
fn garbage_datagrams_are_dropped_counted_and_never_panic() {
    let start = Instant::now();
    let mut rng = StdRng::seed_from_u64(1234);
    for level in [
        CipherLevel::None,
        CipherLevel::AuthenticatedOnly,
        CipherLevel::Aes128Gcm,
        CipherLevel::Aes256Gcm,
    ] {
        let (mut sender, mut receiver) =
            endpoints(level, 10_000_000, TransportConfig::default(), start);
        let mut sink = VerifyingSink::new(SinkModel::Instant { window: 1 << 30 });
        let mut delivered_garbage = 0u64;
        let rounds = 20_000;
        for round in 0..rounds {
            let len = rng.gen_range(0..1500);
            let mut datagram = vec![0u8; len];
            // rand is unoptimised in test builds; a xorshift fill keeps this test fast.
            let mut state: u64 = rng.gen::<u64>() | 1;
            for byte in &mut datagram {
                state ^= state << 13;
                state ^= state >> 7;
                state ^= state << 17;
                *byte = state as u8;
            }
            if round % 2 == 0 && len >= HEADER_LEN {
                // A plausible header, so the body parsers and the crypto get exercised.
                let header = Header {
                    packet_type: match round % 3 {
                        0 => PacketType::Data,
                        1 => PacketType::Ack,
                        _ => PacketType::Close,
                    },
                    session_id: SESSION,
                    packet_number: rng.gen_range(0..1 << 48),
                };
                let mut encoded = Vec::new();
                header.encode(&mut encoded);
                datagram[..HEADER_LEN].copy_from_slice(&encoded);
            }
            let mut copy = datagram.clone();
            let _ = sender.handle_datagram(start, &mut copy);
            if !matches!(
                receiver.handle_datagram(start, &mut datagram, &mut sink),
                ReceiveOutcome::Dropped(_)
            ) {
                delivered_garbage += 1;
            }
        }
        let receiver_drops = receiver.stats().dropped.total();
        let sender_drops = sender.stats().dropped.total();
        if level == CipherLevel::None {
            // Without integrity some garbage parses; still nothing panicked.
            assert!(receiver_drops > rounds / 2);
        } else {
            assert_eq!(delivered_garbage, 0, "{level:?} let garbage through");
            assert_eq!(receiver_drops, rounds);
            assert_eq!(sender_drops, rounds);
            assert_eq!(sink.delivered.len(), 0);
        }
    }
}

#[test]
fn sender_pauses_when_acks_stop_and_resumes_with_the_next_ack() {
    let start = Instant::now();
    let config = TransportConfig {
        initial_window: 1 << 30,
        ..TransportConfig::default()
    };
    let stall_timeout = config.stall_timeout;
    let (mut sender, mut receiver) = endpoints(CipherLevel::None, 100 << 20, config, start);
    sender.set_rate_limits(RateLimits::transfer(10_000));
    // No ACK ever comes back: the sender keeps going until the stall timeout, then goes quiet.
    let horizon = start + stall_timeout * 3;
    let sent = drain_sender(&mut sender, start, horizon);
    let quiet_from = start + stall_timeout + Duration::from_millis(10);
    assert!(!sent.is_empty());
    let sent_before_stall = sender.stats().packets_sent;
    assert!(drain_sender(&mut sender, quiet_from, horizon).is_empty());
    assert!(sender.next_timeout().is_none_or(|t| t > horizon));
    assert_eq!(sender.stats().packets_sent, sent_before_stall);
    // One keepalive ACK from the receiver revives it.
    let mut ack = Vec::new();
    poll_ack(&mut receiver, horizon, &mut ack).unwrap();
    sender.handle_datagram(horizon, &mut ack).unwrap();
    assert!(!burst(&mut sender, horizon).is_empty());
}

#[test]
fn cancel_sends_close_and_repeats_it_while_the_receiver_talks() {
    let start = Instant::now();
    let (mut sender, mut receiver) = endpoints(
        CipherLevel::Aes256Gcm,
        1 << 20,
        TransportConfig::default(),
        start,
    );
    let mut sink = VerifyingSink::new(SinkModel::Instant { window: 1 << 30 });
    assert!(!burst(&mut sender, start).is_empty());
    sender.cancel();
    let close = burst(&mut sender, start);
    assert_eq!(close.len(), 1);
    assert_eq!(close[0].0, TransmitKind::Close);
    assert!(sender.is_closed());
    assert!(burst(&mut sender, start).is_empty());
    // The CLOSE was lost; the receiver's next ACK makes the sender say it again.
    let mut ack = Vec::new();
    poll_ack(&mut receiver, start, &mut ack).unwrap();
    sender.handle_datagram(start, &mut ack).unwrap();
    let again = burst(&mut sender, start);
    assert_eq!(again.len(), 1);
    let mut datagram = again[0].1.clone();
    assert_eq!(
        receiver.handle_datagram(start, &mut datagram, &mut sink),
        ReceiveOutcome::Closed(slipstream_proto::CloseReason::Cancelled)
    );
    assert!(receiver
        .poll_transmit(start + Duration::from_secs(1), &mut ack)
        .is_none());
}

#[test]
fn datagrams_batch_into_one_buffer_with_equal_segments_for_gso() {
    let start = Instant::now();
    let (mut sender, _) = endpoints(
        CipherLevel::Aes256Gcm,
        40 * 1000 + 7,
        TransportConfig::default(),
        start,
    );
    let mut batch = vec![0xaa; 3];
    let mut sizes = Vec::new();
    let later = start + Duration::from_millis(1);
    while let Some(transmit) = sender.poll_transmit(later, &mut PatternSource, &mut batch) {
        sizes.push(transmit.size);
    }
    // 1 ms of pacing credit at 1 Gbit/s covers all 30 blocks.
    assert_eq!(sizes.len() as u64, sender.stats().total_blocks);
    assert_eq!(batch.len(), 3 + sizes.iter().sum::<usize>());
    let (last, full) = sizes.split_last().unwrap();
    assert!(full.iter().all(|&size| size == 1400));
    assert!(*last < 1400);
    // Each segment opens on its own.
    let mut opener =
        PacketProtection::new(CipherLevel::Aes256Gcm, &KEY, SESSION, Role::Receiver).unwrap();
    let mut offset = 3;
    for size in sizes {
        let mut segment = batch[offset..offset + size].to_vec();
        opener.open(&mut segment).unwrap();
        offset += size;
    }
}
