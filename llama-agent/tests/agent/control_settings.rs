//! `llama-agent run` flags and environment (docs/agent.md): parsing through clap
//! and validation, plus the real binary refusing bad environment values.

use std::{net::SocketAddr, process::Command, time::Duration};

use clap::Parser;
use llama_agent::{
    reflector::{AllowSpec, Mode},
    settings::{RunArgs, Settings, SettingsError},
};

#[derive(Parser, Debug)]
struct Cli {
    #[command(flatten)]
    run: RunArgs,
}

fn parse(args: &[&str]) -> Result<Settings, SettingsError> {
    let mut argv = vec!["llama-agent"];
    argv.extend_from_slice(args);
    Cli::try_parse_from(argv)
        .expect("clap parse")
        .run
        .validate()
}

fn err(args: &[&str]) -> String {
    parse(args).expect_err("should be refused").to_string()
}

#[test]
fn a_full_command_line_becomes_typed_settings() {
    let s = parse(&[
        "-s",
        "http://llama.example.com:5000",
        "-g",
        "wan",
        "-i",
        "192.0.2.1",
        "-k",
        "600",
        "-t",
        "[location: Las Vegas, src_name: Office]",
        "--port",
        "8200",
        "--probe-name",
        "Las Vegas office",
        "--probe-shortname",
        "las1",
        "--register-interval",
        "90",
        "--poll-interval",
        "500ms",
        "--state-dir",
        "/tmp/llama-state",
        "--mode",
        "xdp-skb",
        "--interface",
        "eth0",
        "--interface",
        "eth1",
        "--allow",
        "10.0.0.0/8, 192.0.2.1",
        "--max-pps",
        "10000",
        "--api-bind",
        "127.0.0.1:9100",
        "-v",
    ])
    .unwrap();
    let servers: Vec<&str> = s.servers.iter().map(|u| u.as_str()).collect();
    assert_eq!(servers, ["http://llama.example.com:5000/"]);
    assert_eq!(s.group, "wan");
    assert_eq!(s.ip, Some("192.0.2.1".parse().unwrap()));
    assert_eq!(s.keepalive, Duration::from_secs(600));
    let tags: Vec<_> = s.tags.iter().collect();
    assert_eq!(
        tags,
        vec![("location", "Las Vegas"), ("src_name", "Office")]
    );
    assert_eq!(s.port, 8200);
    assert_eq!(
        (s.probe_name.as_str(), s.probe_shortname.as_str()),
        ("Las Vegas office", "las1")
    );
    assert_eq!(s.register_interval, Duration::from_secs(90));
    assert_eq!(s.poll_interval, Duration::from_millis(500));
    assert_eq!(
        s.state_dir.as_deref(),
        Some(std::path::Path::new("/tmp/llama-state"))
    );
    assert_eq!(s.reflector.mode, Mode::XdpSkb);
    assert_eq!(s.reflector.interfaces, ["eth0", "eth1"]);
    assert_eq!(s.reflector.port, 8200);
    assert_eq!(
        s.reflector.allow,
        AllowSpec::Static(vec![
            "10.0.0.0/8".parse().unwrap(),
            "192.0.2.1/32".parse().unwrap()
        ])
    );
    assert_eq!(s.reflector.max_pps, 10000);
    assert_eq!(s.api_bind, "127.0.0.1:9100".parse::<SocketAddr>().unwrap());
    assert!(s.verbose);
}

#[test]
fn defaults_follow_the_original() {
    let s = parse(&["--server", "http://127.0.0.1:5000"]).unwrap();
    assert_eq!(s.group, "default");
    assert_eq!(s.port, 8100);
    assert_eq!(s.keepalive, Duration::from_secs(300));
    assert_eq!(s.register_interval, Duration::from_secs(60));
    assert_eq!(s.poll_interval, Duration::from_secs(30));
    assert_eq!(s.reflector.mode, Mode::Auto);
    assert_eq!(s.reflector.allow, AllowSpec::Anyone);
    assert_eq!(
        s.reflector.max_pps,
        llama_common::DEFAULT_MAX_PPS,
        "a group of 1,000 at 8 probes/s each, with headroom"
    );
    assert!(s.tags.is_empty());
    assert_eq!(s.api_bind, "0.0.0.0:8100".parse::<SocketAddr>().unwrap());
    let host = llama_agent::settings::hostname().unwrap();
    assert_eq!(
        (s.probe_name.as_str(), s.probe_shortname.as_str()),
        (host.as_str(), host.as_str())
    );
}

#[test]
fn json_tags_and_allow_peers() {
    let s = parse(&[
        "-s",
        "http://h",
        "-t",
        r#"{"location": "Las Vegas, NV", "rack": 4}"#,
        "--allow",
        "peers",
    ])
    .unwrap();
    let tags: Vec<_> = s.tags.iter().collect();
    assert_eq!(tags, vec![("location", "Las Vegas, NV"), ("rack", "4")]);
    assert_eq!(s.reflector.allow, AllowSpec::Peers);
}

#[test]
fn https_servers_and_a_ca_file_are_accepted() {
    let s = parse(&[
        "-s",
        "https://llama.example.com:5443/llama",
        "--ca-cert",
        "/etc/llama/ca.pem",
        "--probe-name",
        "n",
        "--probe-shortname",
        "n",
    ])
    .unwrap();
    assert_eq!(s.servers.len(), 1);
    assert_eq!(s.servers[0].scheme(), "https");
    assert_eq!(
        s.ca_cert.as_deref(),
        Some(std::path::Path::new("/etc/llama/ca.pem"))
    );
}

#[test]
fn a_server_list_keeps_its_order() {
    let s = parse(&[
        "-s",
        "http://a.example:5000, https://b.example/llama ,http://192.0.2.7:5000",
        "--probe-name",
        "n",
        "--probe-shortname",
        "n",
    ])
    .unwrap();
    let servers: Vec<&str> = s.servers.iter().map(|u| u.as_str()).collect();
    assert_eq!(
        servers,
        [
            "http://a.example:5000/",
            "https://b.example/llama",
            "http://192.0.2.7:5000/"
        ]
    );
    let control = s.control_config(None).unwrap();
    assert_eq!(control.servers, s.servers);
}

#[test]
fn standalone_config_needs_no_server() {
    let file = tempfile::NamedTempFile::new().unwrap();
    let s = parse(&["-c", file.path().to_str().unwrap()]).unwrap();
    assert!(s.servers.is_empty());
    assert_eq!(s.config.as_deref(), Some(file.path()));
}

#[test]
fn bad_values_are_refused_with_one_clear_message() {
    let cases: &[(&[&str], &str)] = &[
        (&[], "give --server / LLAMA_SERVER"),
        (
            &["-s", "llama.example.com:5000"],
            "has no http:// or https:// scheme",
        ),
        (&["-s", "localhost"], "has no http:// or https:// scheme"),
        (&["-s", "http://"], "is not a valid URL"),
        (&["-s", "http://h/?x=1"], "takes no ?query"),
        (&["-s", "http://a,,http://b"], "has an empty entry"),
        (&["-s", "http://a,"], "has an empty entry"),
        (
            &["-s", "http://a, b:5000"],
            "\"b:5000\" has no http:// or https:// scheme",
        ),
        (&["-s", "http://a,http://a/"], "lists http://a/ twice"),
        (
            &["-s", "http://h", "-k", "0"],
            "--keepalive / LLAMA_KEEPALIVE must be at least 1 second",
        ),
        (
            &["-s", "http://h", "-k", "60"],
            "must be longer than the registration interval (60s)",
        ),
        (
            &["-s", "http://h", "-t", "[location: Las Vegas, Office]"],
            "tag \"Office\" has no ':'",
        ),
        (
            &["-s", "http://h", "-t", "{\"a\": [1]}"],
            "must be a string, number or boolean",
        ),
        (
            &["-s", "http://h", "-t", "[version: 9]"],
            "tag \"version\" is reserved",
        ),
        (
            &["-s", "http://h", "--mode", "turbo"],
            "\"turbo\" is not a mode: use auto, xdp, xdp-skb or userspace",
        ),
        (
            &["-s", "http://h", "--poll-interval", "0"],
            "--poll-interval \"0\" is not a duration",
        ),
        (
            &["-s", "http://h", "--register-interval", "1d"],
            "--register-interval \"1d\" is not a duration",
        ),
        (
            &["-s", "http://h", "--interface", "a/b"],
            "is not an interface name",
        ),
        (
            &["-s", "http://h", "--interface", "averyveryverylongname"],
            "is not an interface name",
        ),
        (
            &["-s", "http://h", "--allow", "10.0.0.0/33"],
            "\"10.0.0.0/33\" is neither `peers` nor a CIDR",
        ),
        (
            &["-s", "http://h", "--allow", " "],
            "is neither `peers` nor a CIDR",
        ),
        (
            &["-s", "http://h", "-g", " "],
            "--group / LLAMA_GROUP must not be empty",
        ),
        (
            &["-s", "http://h", "--probe-name", ""],
            "--probe-name / PROBE_NAME must not be empty",
        ),
        (
            &["-s", "http://h", "--port", "0"],
            "--port / LLAMA_PORT must not be 0",
        ),
        (
            &["-s", "http://h", "--max-pps", "0"],
            "--max-pps / LLAMA_MAX_PPS must be at least 1",
        ),
        (
            &["-c", "/nonexistent/collector.yaml"],
            "is not a readable file",
        ),
    ];
    for (args, want) in cases {
        let got = err(args);
        assert!(
            got.contains(want),
            "{args:?}: {got:?} does not contain {want:?}"
        );
    }
}

#[test]
fn unparsable_numbers_are_refused_by_clap() {
    for args in [["-k", "-1"], ["--port", "70000"], ["-i", "not-an-ip"]] {
        let argv = ["llama-agent", "-s", "http://h", args[0], args[1]];
        assert!(Cli::try_parse_from(argv).is_err(), "{args:?}");
    }
}

/// Run the real binary with `env` and no flags; it must refuse to start.
fn refused_by_binary(env: &[(&str, &str)]) -> String {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_llama-agent"));
    cmd.arg("run").env_clear().env("RUST_BACKTRACE", "1");
    for (k, v) in env {
        cmd.env(k, v);
    }
    let out = cmd.output().unwrap();
    assert_eq!(out.status.code(), Some(2), "{env:?}: {out:?}");
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    // One line, no backtrace, even with RUST_BACKTRACE set.
    assert_eq!(stderr.trim().lines().count(), 1, "{stderr}");
    stderr
}

#[test]
fn bad_environment_values_are_refused_by_the_binary() {
    let cases: &[(&[(&str, &str)], &str)] = &[
        (
            &[("LLAMA_SERVER", "llama:5000")],
            "--server / LLAMA_SERVER \"llama:5000\" has no http:// or https:// scheme",
        ),
        (
            &[("LLAMA_SERVER", "http://h"), ("LLAMA_KEEPALIVE", "0")],
            "LLAMA_KEEPALIVE must be at least 1",
        ),
        (
            &[("LLAMA_SERVER", "http://h"), ("LLAMA_TAGS", "[a b]")],
            "LLAMA_TAGS \"[a b]\": tag \"a b\" has no ':'",
        ),
        (
            &[
                ("LLAMA_SERVER", "http://h"),
                ("LLAMA_REFLECTOR_MODE", "fast"),
            ],
            "\"fast\" is not a mode",
        ),
        (
            &[("LLAMA_SERVER", "http://h"), ("LLAMA_MAX_PROBE_RATE", "0")],
            "--max-probe-rate / LLAMA_MAX_PROBE_RATE must be a finite number greater than 0",
        ),
        (
            &[("LLAMA_SERVER", "http://h"), ("LLAMA_MAX_TIMEOUT", "0s")],
            "--max-timeout / LLAMA_MAX_TIMEOUT \"0s\" is not a duration",
        ),
        (
            &[
                ("LLAMA_SERVER", "http://h"),
                ("LLAMA_REGISTRATION_TOKEN_FILE", "/nonexistent/token"),
            ],
            "cannot read the registration token file",
        ),
        (&[], "nothing to do"),
    ];
    for (env, want) in cases {
        let stderr = refused_by_binary(env);
        assert!(
            stderr.contains(want),
            "{env:?}: {stderr:?} does not contain {want:?}"
        );
    }
}

#[test]
fn environment_values_are_read() {
    // Through the binary too, since the test process's environment is shared
    // by parallel tests: a valid environment gets past validation, so the
    // agent starts and logs its start-up line; SIGTERM then stops it cleanly.
    let dir = tempfile::tempdir().unwrap();
    let mut child = Command::new(env!("CARGO_BIN_EXE_llama-agent"))
        .env_clear()
        .env("LLAMA_SERVER", "http://127.0.0.1:9")
        .env("LLAMA_GROUP", "envgroup")
        .env("LLAMA_TAGS", "[location: Las Vegas]")
        .env("PROBE_NAME", "env probe")
        .env("PROBE_SHORTNAME", "envp")
        .env("LLAMA_STATE_DIR", dir.path())
        .env("LLAMA_INTERFACES", "lo,eth0")
        .env("LLAMA_REGISTRATION_TOKEN", "envsecret")
        .env("RUST_LOG", "info")
        .stderr(std::process::Stdio::null())
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let stdout = child.stdout.take().unwrap();
    let mut first = String::new();
    std::io::BufRead::read_line(&mut std::io::BufReader::new(stdout), &mut first).unwrap();
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(child.id() as i32),
        nix::sys::signal::Signal::SIGTERM,
    )
    .unwrap();
    let status = child.wait().unwrap();
    assert!(status.success(), "{status:?}");
    for want in [
        "llama-agent starting",
        "group=envgroup",
        "envp",
        "env probe",
        "lo,eth0",
        "http://127.0.0.1:9/",
    ] {
        assert!(first.contains(want), "{first:?} lacks {want:?}");
    }
    assert!(
        !first.contains("envsecret"),
        "the token was logged: {first}"
    );
}

#[test]
fn limits_and_the_registration_token() {
    let s = parse(&["-s", "http://h"]).unwrap();
    assert_eq!(s.limits, llama_agent::config::Limits::default());
    assert_eq!(s.limits.max_probe_rate, 40_000.0);
    assert_eq!(s.limits.max_targets, 5_000);
    assert!(s.registration_token.is_none());

    let s = parse(&[
        "-s",
        "http://h",
        "--max-probe-rate",
        "100",
        "--max-target-rate",
        "10",
        "--max-targets",
        "7",
        "--max-sockets",
        "2",
        "--max-timeout",
        "1500ms",
        "--registration-token",
        "flag-secret",
    ])
    .unwrap();
    assert_eq!(s.limits.max_probe_rate, 100.0);
    assert_eq!(s.limits.max_target_rate, 10.0);
    assert_eq!(s.limits.max_targets, 7);
    assert_eq!(s.limits.max_sockets, 2);
    assert_eq!(s.limits.max_timeout, Duration::from_millis(1500));
    assert_eq!(
        s.registration_token.as_ref().unwrap().expose(),
        "flag-secret"
    );
    // Settings are debug-printed; the secret is not.
    assert!(!format!("{s:?}").contains("flag-secret"));

    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("token");
    std::fs::write(&file, "file-secret\n").unwrap();
    let s = parse(&[
        "-s",
        "http://h",
        "--registration-token-file",
        file.to_str().unwrap(),
    ])
    .unwrap();
    assert_eq!(s.registration_token.unwrap().expose(), "file-secret");
    std::fs::write(&file, "\n").unwrap();
    assert!(
        err(&[
            "-s",
            "http://h",
            "--registration-token-file",
            file.to_str().unwrap()
        ])
        .contains("the registration token is empty")
    );
    // Both at once is a usage error.
    let both = Cli::try_parse_from([
        "llama-agent",
        "-s",
        "http://h",
        "--registration-token",
        "a",
        "--registration-token-file",
        "/x",
    ]);
    assert!(both.is_err());
    assert!(
        err(&["-s", "http://h", "--max-targets", "0"])
            .contains("--max-targets / LLAMA_MAX_TARGETS must be at least 1")
    );
}
