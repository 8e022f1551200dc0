//! End-to-end transfers through the deterministic simulator: throughput over long lossy paths,
//! integrity under corruption and attack, flow control against a slow sink, and the adaptive
//! rate controller against a bottleneck and against random loss.

mod common;

use common::{run, AttackConfig, LinkConfig, SimConfig, SinkModel, StallConfig};
use slipstream_proto::{CipherLevel, RateLimits};
use std::time::Duration;

const GIB: u64 = 1 << 30;
const MIB: u64 = 1 << 20;
const GBIT_KBPS: u64 = 1_000_000;

fn millis(ms: u64) -> Duration {
    Duration::from_millis(ms)
}

fn report(name: &str, result: &common::SimResult) {
    eprintln!(
        "{name}: sender done {:?}, receiver done {:?}, goodput {:.1} Mbit/s, rtt {:?} (min {:?}), \
         retransmitted {} of {} blocks, dropped {:?}/{:?}, fwd {:?} losses, {} events",
        result.sender_complete_at,
        result.receiver_complete_at,
        result
            .sender_complete_at
            .map_or(0.0, |_| result.goodput_bps() / 1e6),
        result.sender.smoothed_rtt,
        result.sender.min_rtt,
        result.sender.blocks_retransmitted,
        result.sender.total_blocks,
        result.receiver.dropped,
        result.sender.dropped,
        (
            result.forward.random_losses,
            result.forward.queue_drops,
            result.forward.corrupted
        ),
        result.events,
    );
}

/// A `SIM_*` knob of the debug tools, or its default.
fn env(name: &str, default: u64) -> u64 {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

/// Prints the sender's rate and the bottleneck queue every `step` × 100 ms (debug tools).
fn print_timeline(result: &common::SimResult, step: usize) {
    for (index, bucket) in result
        .forward
        .queue_buckets
        .iter()
        .enumerate()
        .step_by(step.max(1))
    {
        let t = Duration::from_millis(index as u64 * 100);
        eprintln!(
            "{:>5}ms rate {:>6.1} Mbit/s queue mean {:>6}us max {:>6}us",
            t.as_millis(),
            result.mean_rate_bps(t, t + millis(100)) / 1e6,
            bucket.0 / bucket.1.max(1),
            bucket.2
        );
    }
}

/// A 1 Gbit/s bottleneck (datagram bytes) with a 20 ms drop-tail buffer, like a real access link.
fn gigabit_link(one_way: Duration, loss: f64) -> LinkConfig {
    LinkConfig {
        loss,
        jitter: Duration::from_micros(500),
        rate_bps: Some(1_000_000_000),
        buffer: millis(20),
        ..LinkConfig::ideal(one_way)
    }
}

#[test]
fn one_gib_over_200ms_rtt_with_2_percent_loss_keeps_90_percent_goodput() {
    let mut config = SimConfig::new(GIB, GBIT_KBPS, millis(100));
    config.forward = gigabit_link(millis(100), 0.02);
    config.backward = LinkConfig {
        loss: 0.02,
        ..LinkConfig::ideal(millis(100))
    };
    let result = run(config);
    report("1GiB/200ms/2%", &result);
    result.assert_data_intact();
    let goodput = result.goodput_bps();
    assert!(goodput >= 0.9e9, "goodput {goodput}");
    // Retransmissions stay close to the real loss (2%), plus the tail copies.
    let retransmit_ratio =
        result.sender.blocks_retransmitted as f64 / result.sender.total_blocks as f64;
    assert!(retransmit_ratio < 0.03, "retransmitted {retransmit_ratio}");
}

#[test]
fn one_gib_without_delay_or_loss_keeps_90_percent_goodput_and_never_retransmits() {
    let mut config = SimConfig::new(GIB, GBIT_KBPS, Duration::ZERO);
    config.forward = gigabit_link(Duration::ZERO, 0.0);
    let result = run(config);
    report("1GiB/0ms/0%", &result);
    result.assert_data_intact();
    let goodput = result.goodput_bps();
    assert!(goodput >= 0.9e9, "goodput {goodput}");
    assert_eq!(result.sender.blocks_retransmitted, 0);
    assert_eq!(result.forward.queue_drops, 0);
}

#[test]
fn aes256_transfer_survives_corruption_forgery_reordering_and_replay() {
    let mut config = SimConfig::new(64 * MIB, 400_000, millis(20));
    config.cipher = CipherLevel::Aes256Gcm;
    config.forward = LinkConfig {
        loss: 0.01,
        corrupt: 0.02,
        duplicate: 0.01,
        reorder: 0.02,
        reorder_delay: millis(3),
        jitter: millis(1),
        ..LinkConfig::ideal(millis(20))
    };
    config.backward = LinkConfig {
        corrupt: 0.02,
        duplicate: 0.01,
        ..LinkConfig::ideal(millis(20))
    };
    config.attack = AttackConfig {
        replay: 0.01,
        forge: 0.01,
    };
    let result = run(config);
    report("aes256/corrupt", &result);
    result.assert_data_intact();
    assert!(result.sender_complete_at.is_some());
    let receiver_drops = result.receiver.dropped;
    // Every corrupted or forged datagram that arrived was dropped and counted.
    assert!(
        receiver_drops.authentication_failed
            + receiver_drops.malformed
            + receiver_drops.wrong_session
            >= result.forgeries_injected,
        "{receiver_drops:?}"
    );
    assert!(receiver_drops.authentication_failed > 0);
    assert!(receiver_drops.replayed > 0, "{receiver_drops:?}");
    assert!(result.replays_injected > 0);
    // Corrupted ACKs are dropped too.
    assert!(result.sender.dropped.total() > 0);
}

#[test]
fn every_cipher_level_transfers_intact() {
    for cipher in [
        CipherLevel::None,
        CipherLevel::AuthenticatedOnly,
        CipherLevel::Aes128Gcm,
        CipherLevel::Aes256Gcm,
    ] {
        let mut config = SimConfig::new(4 * MIB + 12_345, 200_000, millis(5));
        config.cipher = cipher;
        config.forward.loss = 0.05;
        config.backward.loss = 0.05;
        let result = run(config);
        report(&format!("{cipher:?}"), &result);
        result.assert_data_intact();
        assert!(result.sender_complete_at.is_some());
    }
}

#[test]
fn slow_sink_slows_the_sender_without_losing_data() {
    // The sink stores 40 Mbit/s while the path and rate allow 400 Mbit/s.
    let mut config = SimConfig::new(32 * MIB, 400_000, millis(25));
    config.transport.initial_window = MIB;
    config.sink = SinkModel::Slow {
        capacity: MIB,
        drain_bps: 40_000_000,
    };
    config.forward.loss = 0.01;
    let result = run(config);
    report("slow sink", &result);
    result.assert_data_intact();
    assert_eq!(
        result.sink.overflows, 0,
        "the sink was offered more than it allowed"
    );
    assert!(result.sink.max_buffered <= MIB);
    let elapsed = result.sender_complete_at.expect("complete");
    // 32 MiB at 40 Mbit/s needs 6.7 s; flow control must hold the sender to about that pace.
    assert!(elapsed >= Duration::from_secs_f64(6.5), "{elapsed:?}");
    assert!(elapsed <= Duration::from_secs_f64(8.0), "{elapsed:?}");
    // Flow control, not loss, limited the sender: little was sent twice.
    let sent_ratio = result.sender.bytes_sent as f64 / (32 * MIB) as f64;
    assert!(sent_ratio < 1.05, "sent {sent_ratio} times the data");
}

#[test]
fn adaptive_rate_converges_to_a_smaller_bottleneck_with_bounded_queueing() {
    // Target 400 Mbit/s, bottleneck 100 Mbit/s with a 60 ms buffer, RTT 60 ms.
    let mut config = SimConfig::new(96 * MIB, 400_000, millis(30));
    config.forward = LinkConfig {
        rate_bps: Some(100_000_000),
        buffer: millis(60),
        jitter: Duration::from_micros(300),
        ..LinkConfig::ideal(millis(30))
    };
    let result = run(config);
    report("bottleneck", &result);
    result.assert_data_intact();
    let elapsed = result.sender_complete_at.expect("complete");
    let goodput = result.goodput_bps();
    assert!(goodput >= 85e6, "goodput {goodput}");
    let settled = Duration::from_secs(2);
    let mean_rate = result.mean_rate_bps(settled, elapsed);
    assert!(
        (85e6..=115e6).contains(&mean_rate),
        "mean rate after settling {mean_rate}"
    );
    let mean_queue = result.forward.mean_queue_delay(settled, elapsed);
    let max_queue = result.forward.max_queue_delay_between(settled, elapsed);
    eprintln!("queue after settling: mean {mean_queue:?}, max {max_queue:?}");
    assert!(
        mean_queue <= millis(20),
        "mean queueing delay {mean_queue:?}"
    );
    assert!(max_queue < millis(60), "max queueing delay {max_queue:?}");
    let drops_after_start = result.forward.queue_drops;
    eprintln!("queue drops {drops_after_start}");
}

#[test]
fn random_loss_alone_does_not_lower_the_rate() {
    // 300 Mbit/s target on a 500 Mbit/s path with 2% random loss both ways and jitter.
    let mut config = SimConfig::new(128 * MIB, 300_000, millis(40));
    config.forward = LinkConfig {
        loss: 0.02,
        jitter: millis(2),
        rate_bps: Some(500_000_000),
        buffer: millis(50),
        ..LinkConfig::ideal(millis(40))
    };
    config.backward = LinkConfig {
        loss: 0.02,
        jitter: millis(2),
        ..LinkConfig::ideal(millis(40))
    };
    let result = run(config);
    report("random loss", &result);
    result.assert_data_intact();
    assert_eq!(result.min_rate_bps(), 300_000_000, "the rate was lowered");
    let goodput = result.goodput_bps();
    assert!(goodput >= 0.9 * 300e6, "goodput {goodput}");
}

/// Both hosts are descheduled now and then (up to 8 ms, every 20 ms on average, as on a busy
/// 2-core machine running both servers) and the sender's timer ticks every millisecond. The
/// pacer makes up for lost time and the controller does not take late ACKs for a queue, so the
/// rate stays near the bottleneck instead of collapsing.
#[test]
fn descheduled_hosts_keep_the_rate_near_the_bottleneck() {
    for one_way in [Duration::ZERO, millis(50)] {
        let mut config = SimConfig::new(256 * MIB, GBIT_KBPS, one_way);
        // 1 Gbit/s of IP packets (1472-byte datagrams + 28 bytes of headers), 50 ms buffer.
        config.forward = LinkConfig {
            rate_bps: Some(1_000_000_000 * 1472 / 1500),
            buffer: millis(50),
            ..LinkConfig::ideal(one_way)
        };
        let stalls = |seed| {
            Some(StallConfig {
                mean_interval: millis(20),
                max_duration: millis(8),
                seed,
            })
        };
        config.sender_stalls = stalls(7);
        config.receiver_stalls = stalls(8);
        config.sender_timer_tick = Some(millis(1));
        let result = run(config);
        report(&format!("descheduled, one-way {one_way:?}"), &result);
        result.assert_data_intact();
        let goodput = result.goodput_bps();
        assert!(goodput >= 800e6, "one-way {one_way:?}: goodput {goodput}");
        let elapsed = result.sender_complete_at.expect("complete");
        let lowest = result
            .rate_samples
            .iter()
            .filter(|(at, _)| *at >= millis(500) && *at < elapsed)
            .map(|&(_, rate)| rate)
            .min()
            .unwrap_or(0);
        assert!(
            lowest >= 400_000_000,
            "one-way {one_way:?}: rate fell to {lowest}"
        );
    }
}

#[test]
fn rate_limit_changes_apply_and_limits_take_the_minimum() {
    let limits = RateLimits {
        transfer_kbps: Some(200_000),
        destination_kbps: Some(50_000),
        server_kbps: Some(80_000),
    };
    let mut config = SimConfig::new(8 * MIB, 0, millis(10));
    config.limits = limits;
    let result = run(config);
    report("limits", &result);
    result.assert_data_intact();
    assert_eq!(result.sender.rate_limit_bps, 50_000_000);
    let goodput = result.goodput_bps();
    assert!((40e6..=50e6).contains(&goodput), "goodput {goodput}");
}

#[test]
fn rate_limit_changes_at_runtime_take_effect() {
    // 200 Mbit/s, lowered to 50 after 1 s, raised to 300 after 3 s.
    let mut config = SimConfig::new(96 * MIB, 200_000, millis(20));
    config.rate_changes = vec![
        (Duration::from_secs(1), RateLimits::transfer(50_000)),
        (Duration::from_secs(3), RateLimits::transfer(300_000)),
    ];
    let result = run(config);
    report("rate changes", &result);
    result.assert_data_intact();
    let mean = |from: f64, to: f64| {
        result.mean_rate_bps(Duration::from_secs_f64(from), Duration::from_secs_f64(to)) / 1e6
    };
    assert!((mean(0.2, 1.0) - 200.0).abs() < 1.0, "{}", mean(0.2, 1.0));
    assert!((mean(1.1, 3.0) - 50.0).abs() < 1.0, "{}", mean(1.1, 3.0));
    assert!((mean(3.1, 3.5) - 300.0).abs() < 1.0, "{}", mean(3.1, 3.5));
    assert_eq!(result.sender.rate_limit_bps, 300_000_000);
}

#[test]
fn empty_and_one_byte_transfers_complete() {
    for len in [0, 1, 1437, 1438, 1439] {
        let result = run(SimConfig::new(len, 10_000, millis(10)));
        result.assert_data_intact();
        assert!(result.sender_complete_at.is_some(), "len {len}");
    }
}

/// Tool, not a check: prints rate and queue over time for one bottleneck (SIM_* env vars).
#[test]
#[ignore]
fn debug_bottleneck_timeline() {
    let mut config = SimConfig::new(
        env("SIM_MIB", 96) * MIB,
        env("SIM_TARGET_KBPS", 400_000),
        millis(env("SIM_ONE_WAY_MS", 30)),
    );
    config.forward = LinkConfig {
        rate_bps: Some(env("SIM_LINK_BPS", 100_000_000)),
        buffer: millis(env("SIM_BUFFER_MS", 60)),
        jitter: Duration::from_micros(300),
        ..LinkConfig::ideal(millis(env("SIM_ONE_WAY_MS", 30)))
    };
    let result = run(config);
    report("bottleneck", &result);
    print_timeline(&result, env("SIM_STEP", 2) as usize);
}

/// Tool, not a check: the 1 GiB / 200 ms / 2 % case under other seeds.
#[test]
#[ignore]
fn debug_seed_sweep() {
    for seed in 2..6 {
        let mut config = SimConfig::new(GIB, GBIT_KBPS, millis(100));
        config.seed = seed;
        config.forward = gigabit_link(millis(100), 0.02);
        config.backward = LinkConfig {
            loss: 0.02,
            ..LinkConfig::ideal(millis(100))
        };
        let result = run(config);
        report(&format!("seed {seed}"), &result);
    }
}

/// Tool, not a check: prints goodput, retransmissions and queueing for harder paths.
#[test]
#[ignore]
fn debug_scenarios() {
    struct Scenario {
        name: &'static str,
        size: u64,
        target_kbps: u64,
        one_way_ms: u64,
        loss: f64,
        ack_loss: f64,
        jitter_ms: u64,
        link_bps: Option<u64>,
        buffer_ms: u64,
    }
    let scenarios = [
        Scenario {
            name: "500M link, 1G target, 1% loss, 100ms",
            size: 256 * MIB,
            target_kbps: 1_000_000,
            one_way_ms: 50,
            loss: 0.01,
            ack_loss: 0.01,
            jitter_ms: 1,
            link_bps: Some(500_000_000),
            buffer_ms: 50,
        },
        Scenario {
            name: "heavy jitter 5ms",
            size: 128 * MIB,
            target_kbps: 300_000,
            one_way_ms: 40,
            loss: 0.0,
            ack_loss: 0.0,
            jitter_ms: 5,
            link_bps: Some(500_000_000),
            buffer_ms: 50,
        },
        Scenario {
            name: "10% ack loss",
            size: 128 * MIB,
            target_kbps: 300_000,
            one_way_ms: 40,
            loss: 0.02,
            ack_loss: 0.10,
            jitter_ms: 1,
            link_bps: None,
            buffer_ms: 50,
        },
        Scenario {
            name: "1s RTT 5% loss",
            size: 256 * MIB,
            target_kbps: 500_000,
            one_way_ms: 500,
            loss: 0.05,
            ack_loss: 0.05,
            jitter_ms: 1,
            link_bps: Some(1_000_000_000),
            buffer_ms: 50,
        },
        Scenario {
            name: "30% loss 1s RTT",
            size: 64 * MIB,
            target_kbps: 200_000,
            one_way_ms: 500,
            loss: 0.30,
            ack_loss: 0.30,
            jitter_ms: 1,
            link_bps: None,
            buffer_ms: 50,
        },
        Scenario {
            name: "1 Mbit/s",
            size: MIB,
            target_kbps: 1_000,
            one_way_ms: 50,
            loss: 0.01,
            ack_loss: 0.01,
            jitter_ms: 1,
            link_bps: None,
            buffer_ms: 50,
        },
        Scenario {
            name: "10M bottleneck, 1G target, 300ms",
            size: 32 * MIB,
            target_kbps: 1_000_000,
            one_way_ms: 150,
            loss: 0.0,
            ack_loss: 0.0,
            jitter_ms: 1,
            link_bps: Some(10_000_000),
            buffer_ms: 100,
        },
        Scenario {
            name: "LAN 2G target 1G link 0.1ms",
            size: 512 * MIB,
            target_kbps: 2_000_000,
            one_way_ms: 0,
            loss: 0.0,
            ack_loss: 0.0,
            jitter_ms: 0,
            link_bps: Some(1_000_000_000),
            buffer_ms: 5,
        },
        Scenario {
            name: "LAN 2G target 1G link 1ms buffer",
            size: 512 * MIB,
            target_kbps: 2_000_000,
            one_way_ms: 0,
            loss: 0.0,
            ack_loss: 0.0,
            jitter_ms: 0,
            link_bps: Some(1_000_000_000),
            buffer_ms: 1,
        },
        Scenario {
            name: "40% loss 100ms",
            size: 64 * MIB,
            target_kbps: 200_000,
            one_way_ms: 50,
            loss: 0.40,
            ack_loss: 0.10,
            jitter_ms: 1,
            link_bps: None,
            buffer_ms: 50,
        },
    ];
    for scenario in scenarios {
        let mut config = SimConfig::new(
            scenario.size,
            scenario.target_kbps,
            millis(scenario.one_way_ms),
        );
        config.forward = LinkConfig {
            loss: scenario.loss,
            jitter: millis(scenario.jitter_ms),
            rate_bps: scenario.link_bps,
            buffer: millis(scenario.buffer_ms),
            ..LinkConfig::ideal(millis(scenario.one_way_ms))
        };
        config.backward = LinkConfig {
            loss: scenario.ack_loss,
            jitter: millis(scenario.jitter_ms),
            ..LinkConfig::ideal(millis(scenario.one_way_ms))
        };
        config.time_limit = Duration::from_secs(600);
        let result = run(config);
        result.assert_data_intact();
        let elapsed = result.sender_complete_at.unwrap();
        eprintln!(
            "{:<40} goodput {:>7.1} Mbit/s, mean rate 2nd half {:>7.1}, retrans {:.3}, queue drops {}, mean queue {:?}, max queue {:?}",
            scenario.name,
            result.goodput_bps() / 1e6,
            result.mean_rate_bps(elapsed / 2, elapsed) / 1e6,
            result.sender.blocks_retransmitted as f64 / result.sender.total_blocks as f64,
            result.forward.queue_drops,
            result.forward.mean_queue_delay(elapsed / 2, elapsed),
            result.forward.max_queue_delay_between(elapsed / 2, elapsed),
        );
    }
}

#[test]
fn randomized_small_transfers_always_complete_intact() {
    const LOSS_MAX: f64 = 0.5;
    use rand::rngs::StdRng;
    use rand::{Rng, SeedableRng};
    let mut rng = StdRng::seed_from_u64(2024);
    for seed in 0..300 {
        let size = rng.gen_range(0..400_000u64);
        let rate_kbps = rng.gen_range(1_000..200_000u64);
        let one_way = Duration::from_micros(rng.gen_range(0..80_000));
        let mut config = SimConfig::new(size, rate_kbps, one_way);
        config.seed = seed;
        config.max_datagram_size = rng.gen_range(200..=1472);
        config.cipher = match rng.gen_range(0..4) {
            0 => CipherLevel::None,
            1 => CipherLevel::AuthenticatedOnly,
            2 => CipherLevel::Aes128Gcm,
            _ => CipherLevel::Aes256Gcm,
        };
        config.transport.max_ack_datagram_size = rng.gen_range(80..=1400);
        config.transport.ack_every_packets = rng.gen_range(1..=256);
        config.transport.tail_copies = rng.gen_bool(0.5);
        if rng.gen_bool(0.3) {
            // A slow sink with a small window.
            let window = rng.gen_range(2_000..2_000_000u64);
            config.transport.initial_window = window;
            config.sink = SinkModel::Slow {
                capacity: window + rng.gen_range(0..window),
                drain_bps: rng.gen_range(500_000..100_000_000),
            };
        }
        let impaired = |rng: &mut StdRng, cipher: CipherLevel| LinkConfig {
            loss: rng.gen_range(0.0..LOSS_MAX),
            duplicate: rng.gen_range(0.0..0.05),
            reorder: rng.gen_range(0.0..0.1),
            reorder_delay: Duration::from_micros(rng.gen_range(0..20_000)),
            jitter: Duration::from_micros(rng.gen_range(0..5_000)),
            // Without a tag, a flipped bit would be delivered as data: corrupt only with one.
            corrupt: if cipher == CipherLevel::None {
                0.0
            } else {
                rng.gen_range(0.0..0.05)
            },
            rate_bps: rng
                .gen_bool(0.5)
                .then(|| rng.gen_range(1_000_000..300_000_000)),
            buffer: Duration::from_micros(rng.gen_range(1_000..100_000)),
            ..LinkConfig::ideal(one_way)
        };
        config.forward = impaired(&mut rng, config.cipher);
        config.backward = impaired(&mut rng, config.cipher);
        config.time_limit = Duration::from_secs(300);
        let description = format!("{config:?}");
        let result = run(config);
        assert!(
            result.sender_complete_at.is_some() && result.receiver_complete_at.is_some(),
            "seed {seed} did not complete: {description}"
        );
        result.assert_data_intact();
    }
}

#[test]
fn two_transfers_share_a_bottleneck_without_starving() {
    for seed in 1..=3 {
        share_a_bottleneck(seed);
    }
}

fn share_a_bottleneck(seed: u64) {
    // Two 400 Mbit/s targets through one 100 Mbit/s bottleneck; the second joins after 1 s.
    let mut config = SimConfig::new(48 * MIB, 400_000, millis(20));
    config.seed = seed;
    config.forward = LinkConfig {
        rate_bps: Some(100_000_000),
        buffer: millis(50),
        jitter: Duration::from_micros(300),
        ..LinkConfig::ideal(millis(20))
    };
    config.extra_flows = vec![common::ExtraFlow {
        total_len: 48 * MIB,
        limits: RateLimits::transfer(400_000),
        start_at: Duration::from_secs(1),
    }];
    let result = run(config);
    report("shared: first", &result);
    result.assert_data_intact();
    let second = &result.extra[0];
    let first_done = result.sender_complete_at.expect("first completes");
    let second_done = second.sender_complete_at.expect("second completes");
    eprintln!("second done {second_done:?}, first done {first_done:?}");
    // While both run, each gets a fair share of the 100 Mbit/s.
    let both_from = Duration::from_secs(2);
    let both_to = first_done.min(second_done);
    let mean = |samples: &[(Duration, u64)]| {
        let rates: Vec<u64> = samples
            .iter()
            .filter(|(time, _)| *time >= both_from && *time < both_to)
            .map(|&(_, rate)| rate)
            .collect();
        rates.iter().sum::<u64>() as f64 / rates.len().max(1) as f64
    };
    let first_rate = mean(&result.rate_samples);
    let second_rate = mean(&second.rate_samples);
    eprintln!("while sharing: first {first_rate:.0} bit/s, second {second_rate:.0} bit/s");
    // Not perfectly fair (see README): the controller's increase is multiplicative, so a
    // split, once made, tends to stay. But neither flow starves.
    let share = first_rate / (first_rate + second_rate);
    assert!((0.15..=0.85).contains(&share), "first flow share {share}");
    assert!(first_rate + second_rate <= 120e6);
    // Together they keep the bottleneck busy.
    let total_bits = 2.0 * 48.0 * MIB as f64 * 8.0;
    let aggregate = total_bits / first_done.max(second_done).as_secs_f64();
    assert!(aggregate >= 80e6, "aggregate goodput {aggregate}");
}

/// Tool, not a check: a 1 Gbit/s path like the WAN benchmark's (50 ms buffer) between two hosts
/// that are descheduled now and then, with a 1 ms sender timer; prints the rate over time.
#[test]
#[ignore]
fn debug_starved_hosts() {
    let one_way = millis(env("SIM_ONE_WAY_MS", 50));
    let loss = env("SIM_LOSS_PERMILLE", 0) as f64 / 1000.0;
    let mut config = SimConfig::new(env("SIM_MIB", 512) * MIB, GBIT_KBPS, one_way);
    config.seed = env("SIM_SEED", 1);
    config.forward = LinkConfig {
        loss,
        // 1 Gbit/s of IP packets: 1472-byte datagrams plus 28 bytes of IP and UDP headers.
        rate_bps: Some(env("SIM_LINK_BPS", 1_000_000_000 * 1472 / 1500)),
        buffer: millis(50),
        ..LinkConfig::ideal(one_way)
    };
    let stalls = |seed| {
        Some(StallConfig {
            mean_interval: millis(env("SIM_STALL_EVERY_MS", 20)),
            max_duration: Duration::from_micros(env("SIM_STALL_MAX_US", 8000)),
            seed,
        })
    };
    config.sender_stalls = stalls(7);
    config.receiver_stalls = stalls(8);
    config.sender_timer_tick = Some(millis(1));
    let result = run(config);
    report("starved", &result);
    print_timeline(&result, env("SIM_STEP", 5) as usize);
}
