//! Where an RTT starts: kernel send timestamps from the error queue
//! (`--tx-timestamps on`, the default) or the clock read before `sendto`
//! (`off`). Over a veth pair with the XDP reflector and over loopback with
//! the userspace reflector, (nearly) every reply is timed from the kernel's
//! send timestamp, and none with the switch off; sends refused by a
//! firewall (which use up a timestamp key) resynchronise the key count
//! without costing the other probes their kernel timestamps, in a batched
//! `sendmmsg` cut short in the middle too; and the switch
//! works on `llama-agent collect`, by flag and by environment, and parses on
//! `llama-agent run`.

use std::{
    net::SocketAddr,
    process::{Command, Stdio},
};

use clap::Parser;
use llama_agent::{
    collector::{Collector, summary::PathSummary, txstamp::TxTimestamps},
    config::{CollectorConfig, LoadOptions},
    settings::RunArgs,
};
use llama_testkit::{NetNs, TwoHosts, WAIT, http_get_ok, privileged, wait_for};

use crate::{
    collector_netns::nft_script,
    support::{
        publications::{next_publication, path},
        reflector::{Mode, start_reflector},
    },
};

fn config(yaml: &str) -> CollectorConfig {
    CollectorConfig::from_yaml(yaml, &LoadOptions::default()).expect("valid test config")
}

/// The `tx` label of `llama_collector_timestamp_source_info`.
fn tx_label(c: &Collector) -> String {
    let mut text = String::new();
    prometheus_client::encoding::text::encode(&mut text, &c.shared().metrics.registry)
        .expect("encodes");
    let line = text
        .lines()
        .find(|l| l.starts_with("llama_collector_timestamp_source_info{"))
        .unwrap_or_else(|| panic!("no timestamp source in {text}"));
    let tx = line.split("tx=\"").nth(1).expect("tx label");
    tx.split('"').next().expect("quoted").to_owned()
}

fn start_in(ns: &NetNs, cfg: CollectorConfig, tx: TxTimestamps) -> Collector {
    ns.run(move || Collector::start_with(cfg, tx))
        .expect("collector starts")
}

/// The second publication's summary of `dst` (the first covers a partial
/// interval).
fn second_summary(c: &Collector, dst: &str) -> PathSummary {
    let first = next_publication(c, 0, WAIT);
    let p = next_publication(c, first.interval_end, WAIT);
    path(&p, dst)
        .unwrap_or_else(|| panic!("no summary for {dst}: {p:?}"))
        .clone()
}

/// No loss, sane RTTs (positive, below the 1 s timeout), and every reply
/// counted under exactly one send clock.
fn assert_clean(s: &PathSummary) {
    assert!(s.sent >= 20, "{s:?}");
    assert_eq!((s.lost, s.late, s.duplicates), (0, 0, 0), "{s:?}");
    assert!(
        s.rtt_min_ms > 0.0 && s.rtt_max_ms < 1000.0,
        "implausible RTT {s:?}"
    );
    assert_eq!(s.tx_kernel + s.tx_fallback, s.sent - s.lost, "{s:?}");
}

/// At most one reply in 20 timed by the fallback clock.
fn assert_nearly_all_kernel(s: &PathSummary) {
    assert!(
        s.tx_fallback * 20 <= s.sent,
        "kernel {} fallback {}: {s:?}",
        s.tx_kernel,
        s.tx_fallback
    );
}

const VETH_CONFIG: &str = "
summarization: {interval: 1}
ports: {p: {ip: 0.0.0.0, port: 0, tos: 0, timeout: 1000}}
port_groups: {g: [{port: p, count: 2}]}
rate_limits: {r: {cps: 40}}
tests: [{targets: t, port_group: g, rate_limit: r}]
targets: {t: [{ip: 10.200.0.2, port: 8100}, {ip: 'fd00:11a:a::2', port: 8100}]}
";

#[test]
fn xdp_path_rtts_start_at_kernel_send_timestamps_unless_switched_off() {
    if !privileged(
        "collector_txstamp::xdp_path_rtts_start_at_kernel_send_timestamps_unless_switched_off",
    ) {
        return;
    }
    let hosts = TwoHosts::new().expect("two hosts");
    let xdp = start_reflector(&hosts.right, Mode::Xdp, &hosts.veth.b, 8100);

    let c = start_in(&hosts.left, config(VETH_CONFIG), TxTimestamps::On);
    // IPv4 and IPv6 (one dual-stack socket: IPv4-mapped and native).
    for dst in ["10.200.0.2", "fd00:11a:a::2"] {
        let s = second_summary(&c, dst);
        assert_clean(&s);
        assert_nearly_all_kernel(&s);
    }
    let m = &c.shared().metrics;
    assert_eq!(m.send_errors.get(), 0);
    assert_eq!(m.tx_resyncs.get(), 0);
    assert_eq!(tx_label(&c), "so_timestamping_tx");
    c.shutdown();
    assert!(xdp.xdp_reflected() >= 40, "answered by XDP");

    let c = start_in(&hosts.left, config(VETH_CONFIG), TxTimestamps::Off);
    for dst in ["10.200.0.2", "fd00:11a:a::2"] {
        let s = second_summary(&c, dst);
        assert_clean(&s);
        assert_eq!(s.tx_kernel, 0, "switched off: {s:?}");
    }
    assert_eq!(c.shared().metrics.tx_unmatched.get(), 0);
    assert_eq!(tx_label(&c), "user_clock");
}

#[test]
fn loopback_userspace_reflector_gets_kernel_send_timestamps() {
    if !privileged("collector_txstamp::loopback_userspace_reflector_gets_kernel_send_timestamps") {
        return;
    }
    let ns = NetNs::new().expect("netns");
    let _refl = start_reflector(&ns, Mode::Userspace, "lo", 8100);
    let cfg = config(
        "
summarization: {interval: 1}
ports: {p: {ip: 127.0.0.1, port: 0, tos: 0, timeout: 1000}}
port_groups: {g: [{port: p, count: 2}]}
rate_limits: {r: {cps: 40}}
tests: [{targets: t, port_group: g, rate_limit: r}]
targets: {t: [{ip: 127.0.0.1, port: 8100}]}
",
    );
    let c = start_in(&ns, cfg, TxTimestamps::On);
    let s = second_summary(&c, "127.0.0.1");
    assert_clean(&s);
    assert_nearly_all_kernel(&s);
}

#[test]
fn refused_sends_resync_the_key_count_and_keep_kernel_timing() {
    if !privileged("collector_txstamp::refused_sends_resync_the_key_count_and_keep_kernel_timing") {
        return;
    }
    let hosts = TwoHosts::new().expect("two hosts");
    let _refl = start_reflector(&hosts.right, Mode::Xdp, &hosts.veth.b, 8100);
    // Probes to port 8199 are refused on the way out (sendto fails with
    // EPERM after the kernel has used a timestamp key for them).
    nft_script(
        &hosts.left,
        "table inet llt {
  chain out { type filter hook output priority 0; policy accept;
    udp dport 8199 drop
  }
}
",
    );
    // One socket probes both targets, alternating.
    let cfg = config(
        "
summarization: {interval: 1}
ports: {p: {ip: 0.0.0.0, port: 0, tos: 0, timeout: 1000}}
port_groups: {g: [{port: p, count: 1}]}
rate_limits: {r: {cps: 40}}
tests: [{targets: t, port_group: g, rate_limit: r}]
targets: {t: [{ip: 10.200.0.2, port: 8100}, {ip: 10.200.0.2, port: 8199}]}
",
    );
    let c = start_in(&hosts.left, cfg, TxTimestamps::On);
    let s = second_summary(&c, "10.200.0.2");
    // The refused probes are send errors, not sent (nor lost); the others
    // are answered and timed by the kernel.
    assert!(s.send_errors >= 20, "{s:?}");
    assert_clean(&s);
    assert_nearly_all_kernel(&s);
    let m = &c.shared().metrics;
    assert!(m.tx_resyncs.get() >= 20, "one resync per refused send");
}

/// Addresses of [`a_batch_cut_short_resyncs_the_keys_and_books_the_rest`]:
/// answered ones, one always refused by the firewall, one refused every
/// other attempt, one without a route.
const CUT_ANSWERED: std::ops::Range<u8> = 10..20;
const CUT_REFUSED: &str = "10.200.0.20";
const CUT_FLAKY: &str = "10.200.0.21";
const CUT_UNREACHABLE: &str = "10.200.0.22";

/// Above `BATCHED_PPS` the probes due in one turn leave in one `sendmmsg`;
/// a firewall refusing one in the middle cuts the batch short after the
/// datagrams before it. The accepted ones are booked with their keys, the
/// keys are resynchronised (the refused datagram used one), and the rest
/// are retried: a refused datagram tried again alone is a send error, one
/// that goes through on the retry is sent and timed by the kernel like the
/// others. The flaky address makes retries succeed: without the resync
/// after the cut, every later timestamp would be taken by the probe after
/// its own. A destination without a route also stops a batch; its probes
/// are the path's loss (and only its), a firewall's refusal is not.
#[test]
fn a_batch_cut_short_resyncs_the_keys_and_books_the_rest() {
    if !privileged("collector_txstamp::a_batch_cut_short_resyncs_the_keys_and_books_the_rest") {
        return;
    }
    let hosts = TwoHosts::new().expect("two hosts");
    let answered: Vec<String> = CUT_ANSWERED.map(|i| format!("10.200.0.{i}")).collect();
    for a in answered
        .iter()
        .map(String::as_str)
        .chain([CUT_REFUSED, CUT_FLAKY, CUT_UNREACHABLE])
    {
        hosts
            .right
            .add_addr(&hosts.veth.b, &format!("{a}/24"))
            .expect("add address");
    }
    hosts
        .left
        .ip(&[
            "route",
            "add",
            "unreachable",
            &format!("{CUT_UNREACHABLE}/32"),
        ])
        .expect("unreachable route");
    let _refl = start_reflector(&hosts.right, Mode::Xdp, &hosts.veth.b, 8100);
    // Refused on the way out (EPERM, after the datagram used a timestamp
    // key): every probe to one address, every other attempt to another.
    nft_script(
        &hosts.left,
        &format!(
            "table inet llt {{
  chain out {{ type filter hook output priority 0; policy accept;
    ip daddr {CUT_REFUSED} drop
    ip daddr {CUT_FLAKY} numgen inc mod 2 0 drop
  }}
}}
"
        ),
    );
    // One socket, 13 addresses in slot order, 10,400 probes/s: batched, a
    // few probes per 250 µs turn, so the refused ones fall mid-batch.
    // Each refused address sits between answered ones (after the always
    // refused one, whose retry fails too, the flaky one would always be
    // tried alone).
    let some = |r: std::ops::Range<usize>| answered[r].iter().map(String::as_str);
    let order: Vec<&str> = some(0..5)
        .chain([CUT_FLAKY])
        .chain(some(5..8))
        .chain([CUT_UNREACHABLE])
        .chain(some(8..10))
        .chain([CUT_REFUSED])
        .collect();
    let targets: Vec<String> = order
        .iter()
        .map(|a| format!("{{ip: {a}, port: 8100}}"))
        .collect();
    let cfg = config(&format!(
        "
summarization: {{interval: 1}}
ports: {{p: {{ip: 0.0.0.0, port: 0, tos: 0, timeout: 1000}}}}
port_groups: {{g: [{{port: p, count: 1}}]}}
rate_limits: {{r: {{cps: 800}}}}
tests: [{{targets: t, port_group: g, rate_limit: r}}]
targets: {{t: [{}]}}
",
        targets.join(", ")
    ));
    let c = start_in(&hosts.left, cfg, TxTimestamps::On);
    let first = next_publication(&c, 0, WAIT);
    let p = next_publication(&c, first.interval_end, WAIT);
    let m = &c.shared().metrics;
    for a in &answered {
        let s = path(&p, a).unwrap_or_else(|| panic!("no summary for {a}: {p:?}"));
        assert_eq!(s.send_errors, 0, "{s:?}");
        assert_clean(s);
        assert_nearly_all_kernel(s);
    }
    // Every attempt refused: send errors, neither sent nor lost (a local
    // refusal is not the path's loss).
    let refused = path(&p, CUT_REFUSED).unwrap_or_else(|| panic!("no summary: {p:?}"));
    assert!(refused.send_errors >= 100, "{refused:?}");
    assert_eq!((refused.sent, refused.lost), (0, 0), "{refused:?}");
    // Refused and retried: sent on the retry, answered, timed by the kernel.
    let flaky = path(&p, CUT_FLAKY).unwrap_or_else(|| panic!("no summary: {p:?}"));
    assert!(
        flaky.sent > flaky.send_errors,
        "refusals cut batches short and went through on the retry: {flaky:?}"
    );
    assert_clean(flaky);
    assert_nearly_all_kernel(flaky);
    // No route: every probe a send error and the path's loss.
    let unreachable = path(&p, CUT_UNREACHABLE).unwrap_or_else(|| panic!("no summary: {p:?}"));
    assert!(unreachable.lost >= 100, "{unreachable:?}");
    assert_eq!(unreachable.sent, unreachable.lost, "{unreachable:?}");
    assert_eq!(unreachable.send_errors, unreachable.lost, "{unreachable:?}");
    // One resync per send error, and more for the cuts whose retry went
    // through.
    assert!(m.send_errors.get() >= refused.send_errors);
    assert!(
        m.tx_resyncs.get() > m.send_errors.get(),
        "resyncs {} send errors {}",
        m.tx_resyncs.get(),
        m.send_errors.get()
    );
    c.shutdown();
}

/// `llama-agent collect` with the switch from a flag or the environment:
/// the published `tx_kernel` / `tx_fallback` follow it.
#[test]
fn collect_subcommand_switch_by_flag_and_environment() {
    if !privileged("collector_txstamp::collect_subcommand_switch_by_flag_and_environment") {
        return;
    }
    let ns = NetNs::new().expect("netns");
    let _refl = start_reflector(&ns, Mode::Userspace, "lo", 8100);
    let dir = tempfile::tempdir().expect("temp dir");
    let file = dir.path().join("collector.yaml");
    std::fs::write(
        &file,
        "
summarization: {interval: 1}
api: {bind: 127.0.0.1:5000}
ports: {p: {ip: 127.0.0.1, port: 0, tos: 0, timeout: 1000}}
port_groups: {g: [{port: p, count: 1}]}
rate_limits: {r: {cps: 20}}
tests: [{targets: t, port_group: g, rate_limit: r}]
targets: {t: [{ip: 127.0.0.1, port: 8100}]}
",
    )
    .expect("write config");
    let cases: [(&[&str], Option<&str>, bool); 3] = [
        (&["--tx-timestamps", "off"], None, false),
        (&[], Some("off"), false),
        (&[], None, true),
    ];
    for (flags, env, kernel) in cases {
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_llama-agent"));
        cmd.args(["collect", "--config"])
            .arg(&file)
            .args(["--api-bind", "127.0.0.1:5002"])
            .args(flags)
            .env_remove("APP_CONFIG")
            .env_remove("LLAMA_TX_TIMESTAMPS")
            .stdout(Stdio::null())
            .stderr(Stdio::null());
        if let Some(v) = env {
            cmd.env("LLAMA_TX_TIMESTAMPS", v);
        }
        let _child = ns.spawn(cmd).expect("spawn collector");
        let addr: SocketAddr = "127.0.0.1:5002".parse().expect("literal");
        // A full interval with replies in it.
        let fields = wait_for("a summary with replies", WAIT, || {
            let body = ns.run(move || http_get_ok(addr, "/influxdata"))?;
            let v: serde_json::Value = serde_json::from_str(&body).ok()?;
            let f = v.get(0)?.get("fields")?.clone();
            (f["sent"].as_f64()? >= 10.0).then_some(f)
        });
        let (k, fb) = (
            fields["tx_kernel"].as_f64().expect("tx_kernel"),
            fields["tx_fallback"].as_f64().expect("tx_fallback"),
        );
        let sent = fields["sent"].as_f64().expect("sent");
        assert_eq!(k + fb, sent, "{flags:?} {env:?}: {fields}");
        if kernel {
            assert!(fb * 20.0 <= sent, "{flags:?} {env:?}: {fields}");
        } else {
            assert_eq!(k, 0.0, "{flags:?} {env:?}: {fields}");
        }
    }
}

#[derive(Parser, Debug)]
struct Cli {
    #[command(flatten)]
    run: RunArgs,
}

#[test]
fn run_subcommand_takes_the_switch() {
    let parse = |args: &[&str]| {
        let mut argv = vec!["llama-agent", "-s", "http://h"];
        argv.extend_from_slice(args);
        Cli::try_parse_from(argv).map(|c| c.run.validate().expect("valid").tx_timestamps)
    };
    assert_eq!(parse(&[]).expect("default"), TxTimestamps::On);
    assert_eq!(
        parse(&["--tx-timestamps", "off"]).expect("off"),
        TxTimestamps::Off
    );
    assert_eq!(
        parse(&["--tx-timestamps", "on"]).expect("on"),
        TxTimestamps::On
    );
    let err = parse(&["--tx-timestamps", "maybe"]).expect_err("refused");
    assert!(err.to_string().contains("maybe"), "{err}");
}
