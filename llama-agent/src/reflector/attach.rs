//! Starting the reflector on a set of interfaces: the userspace reflector
//! always (it serves loopback, unusual probes and whatever XDP passes up),
//! plus the XDP program where the mode asks for it and the kernel allows it.
//!
//! `auto` tries, per interface, native (driver) mode, then generic (skb)
//! mode, then leaves the interface to userspace, and logs one line per
//! interface with what it got and why. `xdp` and `xdp-skb` insist on their
//! mode and fail the start otherwise; `userspace` never loads the program.
//!
//! Lifetime: the program is attached through BPF links owned by this
//! process. [`Reflector::shutdown`] (SIGINT/SIGTERM) detaches them; if the
//! process dies any other way, SIGKILL included, the kernel closes the link
//! fds and the program is gone with it. A second agent on an interface
//! that already has a link is refused (`InterfaceBusy`) instead of stacking
//! a program: in `auto` it falls back to userspace and says so loudly.

use std::{fmt, io, str::FromStr};

use ipnet::IpNet;
use llama_common::{Counter, LogLevel, ReflectorConfig};
use tracing::{info, warn};

use super::{
    allowlist::{AllowSpec, Allowlist},
    drops::DropLog,
    interfaces,
    userspace::{ReflectorHandle, ReflectorOptions, ReflectorStats, UserspaceReflector},
};
use crate::xdp::{self, AttachMode, XdpReflector};

/// How the reflector may run on the selected interfaces.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Mode {
    /// XDP native, else XDP generic, else userspace, per interface.
    Auto,
    /// XDP in native (driver) mode only; failing to attach is an error.
    Xdp,
    /// XDP in generic (skb) mode only; failing to attach is an error.
    XdpSkb,
    /// No XDP: the userspace reflector answers everything.
    Userspace,
}

impl Mode {
    const ALL: [Mode; 4] = [Mode::Auto, Mode::Xdp, Mode::XdpSkb, Mode::Userspace];

    /// The flag spelling.
    pub fn as_str(self) -> &'static str {
        match self {
            Mode::Auto => "auto",
            Mode::Xdp => "xdp",
            Mode::XdpSkb => "xdp-skb",
            Mode::Userspace => "userspace",
        }
    }
}

impl fmt::Display for Mode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for Mode {
    type Err = ();

    /// The flag spelling, in any letter case.
    fn from_str(s: &str) -> Result<Self, ()> {
        let s = s.trim();
        Self::ALL
            .into_iter()
            .find(|m| m.as_str().eq_ignore_ascii_case(s))
            .ok_or(())
    }
}

/// What an interface got.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Outcome {
    /// The XDP program is attached in this mode.
    Xdp(AttachMode),
    /// Probes on this interface are answered by the userspace reflector.
    Userspace { reason: String },
}

impl fmt::Display for Outcome {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Outcome::Xdp(mode) => write!(f, "xdp {mode}"),
            Outcome::Userspace { reason } => write!(f, "userspace ({reason})"),
        }
    }
}

/// Everything needed to start.
#[derive(Clone, Debug)]
pub struct ReflectorSetup {
    pub mode: Mode,
    /// Interfaces for XDP; empty = the default-route interfaces.
    pub interfaces: Vec<String>,
    pub port: u16,
    /// 0 = unlimited. XDP and userspace each enforce it on the probes they
    /// answer.
    pub max_pps: u32,
    pub allow: AllowSpec,
    /// Loop guard: answers per probe (at least 1).
    pub answers_per_probe: u32,
    /// Loop guard: answered probes remembered, XDP and userspace each.
    pub recent_probes: u32,
    /// The XDP program's debug log level and its lines per second and CPU.
    pub ebpf_log: LogLevel,
    pub ebpf_log_rate: u32,
}

/// Why the reflector could not start.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    #[error("userspace reflector on port {port}: {source}")]
    Userspace {
        port: u16,
        #[source]
        source: io::Error,
    },
    #[error("--mode {mode}: {source}")]
    Xdp {
        mode: Mode,
        #[source]
        source: xdp::Error,
    },
    #[error(
        "--mode {0} needs at least one interface, and none carries a default route; pass --interface"
    )]
    NoInterface(Mode),
}

/// A running reflector: the userspace part and, where attached, XDP.
#[derive(Debug)]
pub struct Reflector {
    xdp: Option<XdpReflector>,
    userspace: ReflectorHandle,
    outcomes: Vec<(String, Outcome)>,
    drop_log: DropLog,
}

impl Reflector {
    /// Starts as `setup` says, logging one line per interface.
    pub fn start(setup: &ReflectorSetup) -> Result<Self, StartError> {
        let allowlist = match &setup.allow {
            AllowSpec::Anyone => None,
            // Fail closed until the control loop hands over the membership.
            AllowSpec::Peers => Some(Allowlist::default()),
            AllowSpec::Static(list) => Some(Allowlist::new(list.clone())),
        };
        let mut options = ReflectorOptions::new(setup.port);
        options.max_pps = setup.max_pps;
        options.allowlist = allowlist.clone();
        options.answers_per_probe = setup.answers_per_probe;
        options.recent_probes = setup.recent_probes;
        let userspace =
            UserspaceReflector::spawn(options).map_err(|source| StartError::Userspace {
                port: setup.port,
                source,
            })?;

        let interfaces = if setup.interfaces.is_empty() {
            interfaces::default_route_interfaces()
        } else {
            setup.interfaces.clone()
        };
        let mut reflector = Self {
            xdp: None,
            userspace,
            outcomes: Vec::new(),
            drop_log: DropLog::default(),
        };
        if interfaces.is_empty() {
            if matches!(setup.mode, Mode::Xdp | Mode::XdpSkb) {
                return Err(StartError::NoInterface(setup.mode));
            }
            info!("no interface carries a default route: userspace reflector only");
            return Ok(reflector);
        }
        if setup.mode == Mode::Userspace {
            for iface in interfaces {
                reflector.record(
                    iface,
                    Outcome::Userspace {
                        reason: "--mode userspace".to_owned(),
                    },
                );
            }
            return Ok(reflector);
        }

        let config = ReflectorConfig::new(setup.port)
            .with_max_pps(setup.max_pps)
            .with_allowlist(allowlist.is_some())
            .with_answers_per_probe(setup.answers_per_probe)
            .with_log(setup.ebpf_log, setup.ebpf_log_rate);
        let mut program = match XdpReflector::load_with(config, setup.recent_probes) {
            Ok(p) => p,
            Err(source) if setup.mode == Mode::Auto => {
                for iface in interfaces {
                    reflector.record(
                        iface,
                        Outcome::Userspace {
                            reason: format!("XDP unavailable: {source}"),
                        },
                    );
                }
                return Ok(reflector);
            }
            Err(source) => {
                return Err(StartError::Xdp {
                    mode: setup.mode,
                    source,
                });
            }
        };
        if let Some(list) = &allowlist {
            program
                .set_allowlist(list.prefixes())
                .map_err(|source| StartError::Xdp {
                    mode: setup.mode,
                    source,
                })?;
        }
        let required = match setup.mode {
            Mode::Xdp => Some(AttachMode::Native),
            Mode::XdpSkb => Some(AttachMode::Generic),
            Mode::Auto | Mode::Userspace => None,
        };
        for iface in interfaces {
            let outcome = match required {
                None => attach_auto(&mut program, &iface),
                Some(mode) => {
                    // Dropping `program` on the error path detaches the
                    // interfaces attached so far.
                    program
                        .attach(&iface, mode)
                        .map_err(|source| StartError::Xdp {
                            mode: setup.mode,
                            source,
                        })?;
                    Outcome::Xdp(mode)
                }
            };
            reflector.record(iface, outcome);
        }
        if program.attachments().next().is_some() {
            reflector.xdp = Some(program);
        }
        Ok(reflector)
    }

    fn record(&mut self, iface: String, outcome: Outcome) {
        match &outcome {
            Outcome::Xdp(_) => info!("{iface}: {outcome}"),
            Outcome::Userspace { .. } => warn!("{iface}: {outcome}"),
        }
        self.outcomes.push((iface, outcome));
    }

    /// What each interface got.
    pub fn outcomes(&self) -> &[(String, Outcome)] {
        &self.outcomes
    }

    /// The UDP port the userspace reflector listens on.
    pub fn port(&self) -> u16 {
        self.userspace.port()
    }

    /// Replaces the allowlist on both paths (`None` = answer everyone).
    /// XDP gets the new prefixes before the switch flips, so no allowed
    /// probe is dropped in between.
    pub fn set_allowlist(&mut self, allow: Option<&[IpNet]>) -> Result<(), xdp::Error> {
        if let Some(program) = &mut self.xdp {
            if let Some(list) = allow {
                program.set_allowlist(list)?;
            }
            let config = program.config().with_allowlist(allow.is_some());
            program.set_config(config)?;
        }
        self.userspace
            .set_allowlist(allow.map(|l| Allowlist::new(l.to_vec())));
        Ok(())
    }

    /// Changes the rate limit on both paths (0 = unlimited).
    pub fn set_max_pps(&mut self, max_pps: u32) -> Result<(), xdp::Error> {
        if let Some(program) = &mut self.xdp {
            program.set_config(program.config().with_max_pps(max_pps))?;
        }
        self.userspace.set_max_pps(max_pps);
        Ok(())
    }

    /// The XDP program's counters (summed over CPUs), if it is attached.
    pub fn xdp_counters(&self) -> Option<Vec<(Counter, u64)>> {
        self.xdp.as_ref().and_then(|p| p.counters().ok())
    }

    /// Logs the drops of either path that are news (see [`DropLog`]); call
    /// every [`super::drops::POLL_EVERY`].
    pub fn log_drops(&mut self) {
        let mut counters: Vec<(&str, u64)> = self
            .xdp_counters()
            .unwrap_or_default()
            .into_iter()
            .map(|(c, n)| (c.name(), n))
            .collect();
        counters.extend(self.userspace_stats().named());
        self.drop_log.log(&counters, std::time::Instant::now());
    }

    /// The userspace reflector's counters.
    pub fn userspace_stats(&self) -> ReflectorStats {
        self.userspace.stats()
    }

    /// Detaches XDP from every interface and stops userspace; returns the
    /// final counters of both.
    pub fn shutdown(mut self) -> (Option<Vec<(Counter, u64)>>, ReflectorStats) {
        let counters = self.xdp_counters();
        if let Some(mut program) = self.xdp.take() {
            let attached: Vec<String> = program.attachments().map(|(i, _)| i.to_owned()).collect();
            for iface in attached {
                match program.detach(&iface) {
                    Ok(()) => info!("{iface}: xdp detached"),
                    Err(e) => {
                        warn!("{iface}: detach failed ({e}); the link goes away with this process")
                    }
                }
            }
        }
        (counters, self.userspace.stop())
    }
}

/// Native, then generic; the reason for userspace names both failures.
fn attach_auto(program: &mut XdpReflector, iface: &str) -> Outcome {
    // veth drops natively XDP_TX'ed frames unless its peer runs an XDP
    // program too, which a container's agent cannot see or arrange: take
    // generic mode there, which needs nothing from the peer.
    let native = match interfaces::driver(iface) {
        Ok(driver) if driver == "veth" => {
            Err("veth: native XDP_TX needs a program on the peer".to_owned())
        }
        _ => program
            .attach(iface, AttachMode::Native)
            .map_err(|e| e.to_string()),
    };
    let native_err = match native {
        Ok(()) => return Outcome::Xdp(AttachMode::Native),
        Err(e) => e,
    };
    match program.attach(iface, AttachMode::Generic) {
        Ok(()) => Outcome::Xdp(AttachMode::Generic),
        Err(xdp::Error::InterfaceBusy { .. }) => Outcome::Userspace {
            reason: "attach failed: another XDP program is attached — is a second agent running?"
                .to_owned(),
        },
        Err(e) => Outcome::Userspace {
            reason: format!("attach failed: native: {native_err}; generic: {e}"),
        },
    }
}
