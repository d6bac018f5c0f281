//! Loading and attaching the in-kernel XDP reflector.
//!
//! The object is embedded at build time when `cargo xtask build-ebpf` has run
//! (see `build.rs`); without it the agent is userspace-only.
//!
//! Attachment uses a BPF link (kernel >= 5.9), which lives exactly as long as
//! the file descriptor the agent holds: when the agent exits, however it
//! exits (SIGKILL included), the kernel detaches the program. A second agent
//! on an interface that already has a link-attached program is refused with
//! [`Error::InterfaceBusy`] instead of stacking programs.
//!
//! With `--ebpf-log` on, [`log`] forwards the program's debug log into
//! `tracing`; off, the log's ring buffer is sized to one page, since
//! nothing reads it.

use std::{collections::BTreeSet, fmt, time::Duration};

use aya::{
    Ebpf, EbpfLoader,
    maps::{
        Array, MapData, PerCpuArray,
        lpm_trie::{Key, LpmTrie},
    },
    programs::{ProgramError, TestRun, TestRunOptions, Xdp, XdpMode, xdp::XdpLinkId},
};
use ipnet::IpNet;
use llama_common::{
    ALLOW_V4_MAP, ALLOW_V6_MAP, AllowValue, CONFIG_MAP, COUNTERS_MAP, Counter,
    DEFAULT_RECENT_PROBES, LOG_RING_MAP, LogLevel, RECENT_MAP, ReflectorConfig, XDP_PROGRAM_NAME,
};
use tracing::{debug, warn};

pub mod log;
pub mod memlock;

use log::LogForwarder;

/// The embedded XDP object, if this agent was built with one.
pub fn embedded_object() -> Option<&'static [u8]> {
    #[cfg(llama_xdp_embedded)]
    {
        static OBJECT: &[u8] =
            aya::include_bytes_aligned!(concat!(env!("OUT_DIR"), "/llama-ebpf.o"));
        Some(OBJECT)
    }
    #[cfg(not(llama_xdp_embedded))]
    {
        None
    }
}

/// Why this agent has no XDP reflector at all (`None` when the object is
/// embedded), for the start-up line and the fallback reason.
pub fn unavailable_reason() -> Option<String> {
    if embedded_object().is_some() {
        None
    } else if cfg!(llama_xdp_unsupported_arch) {
        Some(format!(
            "XDP is not supported on {}: userspace reflector only",
            std::env::consts::ARCH
        ))
    } else {
        Some(
            "built without the XDP object (run `cargo xtask build-ebpf` before building): userspace reflector only"
                .to_owned(),
        )
    }
}

/// Errors of the XDP path. Each one means "use the userspace reflector here".
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("{}", unavailable_reason().unwrap_or_default())]
    NotEmbedded,
    #[error("loading the XDP object failed: {0}")]
    Load(#[from] aya::EbpfError),
    #[error("the XDP object has no program named {XDP_PROGRAM_NAME}")]
    MissingProgram,
    #[error("the XDP object has no map named {0}")]
    MissingMap(&'static str),
    #[error("BPF map access failed: {0}")]
    Map(#[from] aya::maps::MapError),
    #[error("the kernel rejected the XDP program: {0}")]
    Verifier(#[source] ProgramError),
    #[error("interface {0} does not exist")]
    UnknownInterface(String),
    #[error("{interface}: another XDP program is already attached (is a second agent running?)")]
    InterfaceBusy { interface: String },
    #[error("{interface}: attach in {mode} mode failed: {source}")]
    Attach {
        interface: String,
        mode: AttachMode,
        #[source]
        source: ProgramError,
    },
    #[error("{0} is not attached")]
    NotAttached(String),
    #[error("detaching from {interface} failed: {source}")]
    Detach {
        interface: String,
        #[source]
        source: ProgramError,
    },
    #[error("BPF_PROG_TEST_RUN failed: {0}")]
    TestRun(#[source] ProgramError),
}

/// What one BPF_PROG_TEST_RUN of the program did with a frame.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TestRunOutcome {
    /// The XDP action (`XDP_PASS` = 2, `XDP_TX` = 3, `XDP_DROP` = 1, ...).
    pub action: u32,
    /// The frame as the program left it (after the last repetition).
    pub output: Vec<u8>,
    /// Mean time per run as the kernel measured it.
    pub per_run: Duration,
}

/// How the program is attached to an interface.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum AttachMode {
    /// In the driver, before an skb is allocated (fastest; needs driver support).
    Native,
    /// Generic (skb) mode: works on every interface, after skb allocation.
    Generic,
}

impl AttachMode {
    fn aya(self) -> XdpMode {
        match self {
            AttachMode::Native => XdpMode::Driver,
            AttachMode::Generic => XdpMode::Skb,
        }
    }
}

impl fmt::Display for AttachMode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            AttachMode::Native => "native",
            AttachMode::Generic => "generic",
        })
    }
}

/// One loaded copy of the XDP reflector, attachable to several interfaces.
/// Dropping it detaches from every interface.
pub struct XdpReflector {
    ebpf: Ebpf,
    config: ReflectorConfig,
    attached: Vec<(String, AttachMode, XdpLinkId)>,
    /// The loop guard's table as this loader created it: every config
    /// written gets this mask and seed, whatever the caller passed.
    recent_mask: u32,
    recent_seed: u32,
    /// Reads the program's debug log while `--ebpf-log` is on.
    log: Option<LogForwarder>,
}

impl fmt::Debug for XdpReflector {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("XdpReflector")
            .field(
                "attached",
                &self
                    .attached
                    .iter()
                    .map(|(i, m, _)| (i, m))
                    .collect::<Vec<_>>(),
            )
            .finish()
    }
}

impl XdpReflector {
    /// Loads the embedded object into the kernel (maps created, program
    /// verified) with `config` in effect. Nothing is attached yet.
    pub fn load(config: ReflectorConfig) -> Result<Self, Error> {
        Self::load_with(config, DEFAULT_RECENT_PROBES)
    }

    /// Like [`XdpReflector::load`], with room for `recent_probes` answered
    /// probes in the loop guard's table (at least 1).
    pub fn load_with(config: ReflectorConfig, recent_probes: u32) -> Result<Self, Error> {
        let object = embedded_object().ok_or(Error::NotEmbedded)?;
        Self::load_object_with(object, config, recent_probes)
    }

    /// Like [`XdpReflector::load`] with an explicit object (tests, tools).
    pub fn load_object(object: &[u8], config: ReflectorConfig) -> Result<Self, Error> {
        Self::load_object_with(object, config, DEFAULT_RECENT_PROBES)
    }

    /// [`XdpReflector::load_with`] with an explicit object.
    pub fn load_object_with(
        object: &[u8],
        config: ReflectorConfig,
        recent_probes: u32,
    ) -> Result<Self, Error> {
        memlock::ensure_once();
        let slots = recent_slots(recent_probes);
        let mut loader = EbpfLoader::new();
        loader.map_max_entries(RECENT_MAP, slots);
        let logging = config.log_level != LogLevel::Off as u8;
        if !logging {
            // Nobody reads the log: one page instead of aya-log's 128 KiB.
            loader.map_max_entries(LOG_RING_MAP, page_size());
        }
        let mut ebpf = loader.load(object)?;
        let program: &mut Xdp = ebpf
            .program_mut(XDP_PROGRAM_NAME)
            .ok_or(Error::MissingProgram)?
            .try_into()
            .map_err(Error::Verifier)?;
        program.load().map_err(Error::Verifier)?;
        let mut config = config;
        let log = if logging {
            match LogForwarder::start(&mut ebpf) {
                Ok(forwarder) => Some(forwarder),
                Err(e) => {
                    // Nobody would read the lines: the program writes none.
                    warn!(
                        "--ebpf-log: cannot read the XDP program's log ({e}); continuing without it"
                    );
                    config.log_level = LogLevel::Off as u8;
                    None
                }
            }
        } else {
            None
        };
        let mut reflector = Self {
            ebpf,
            config,
            attached: Vec::new(),
            recent_mask: slots - 1,
            recent_seed: random_seed(),
            log,
        };
        reflector.set_config(config)?;
        Ok(reflector)
    }

    /// Changes the run-time settings; takes effect on the next packet. The
    /// loop guard's table mask and seed are the loader's, not `config`'s;
    /// the log level stays off unless the log was set up at load.
    pub fn set_config(&mut self, mut config: ReflectorConfig) -> Result<(), Error> {
        config.recent_mask = self.recent_mask;
        config.recent_seed = self.recent_seed;
        if self.log.is_none() {
            config.log_level = LogLevel::Off as u8;
        }
        let map = self
            .ebpf
            .map_mut(CONFIG_MAP)
            .ok_or(Error::MissingMap(CONFIG_MAP))?;
        let mut array: Array<_, ReflectorConfig> = Array::try_from(map)?;
        array.set(0, config, 0)?;
        self.config = config;
        Ok(())
    }

    /// The settings in effect.
    pub fn config(&self) -> ReflectorConfig {
        self.config
    }

    /// Replaces the allowlist tries' contents with `prefixes`. Whether the list is enforced is the config's
    /// [`llama_common::FLAG_ALLOWLIST`]; fill the list before switching it on
    /// so no legitimate probe is dropped in between. Prefixes added before
    /// stale ones are removed, for the same reason.
    pub fn set_allowlist(&mut self, prefixes: &[IpNet]) -> Result<(), Error> {
        let mut v4 = BTreeSet::new();
        let mut v6 = BTreeSet::new();
        // The LPM trie wants host bits cleared so that equal prefixes are
        // equal keys.
        for net in prefixes {
            match net.trunc() {
                IpNet::V4(n) => v4.insert((n.prefix_len(), n.network().octets())),
                IpNet::V6(n) => v6.insert((n.prefix_len(), n.network().octets())),
            };
        }
        self.sync_trie::<4>(ALLOW_V4_MAP, &v4)?;
        self.sync_trie::<16>(ALLOW_V6_MAP, &v6)
    }

    fn sync_trie<const N: usize>(
        &mut self,
        name: &'static str,
        wanted: &BTreeSet<(u8, [u8; N])>,
    ) -> Result<(), Error> {
        let map = self.ebpf.map_mut(name).ok_or(Error::MissingMap(name))?;
        let mut trie: LpmTrie<&mut MapData, [u8; N], AllowValue> = LpmTrie::try_from(map)?;
        for (len, data) in wanted {
            trie.insert(&Key::new(u32::from(*len), *data), 1, 0)?;
        }
        let stale: Vec<Key<[u8; N]>> = trie
            .keys()
            .filter_map(Result::ok)
            .filter(|k| {
                let len = u8::try_from(k.prefix_len()).unwrap_or(u8::MAX);
                !wanted.contains(&(len, k.data()))
            })
            .collect();
        for key in stale {
            trie.remove(&key)?;
        }
        Ok(())
    }

    /// Runs the loaded program once (or `repeat` times on the same buffer,
    /// see the notes on `repeat` in the benchmark) over `frame` with
    /// BPF_PROG_TEST_RUN. Counters and the rate limiter see these runs.
    pub fn test_run(&self, frame: &[u8], repeat: u32) -> Result<TestRunOutcome, Error> {
        let program: &Xdp = self
            .ebpf
            .program(XDP_PROGRAM_NAME)
            .ok_or(Error::MissingProgram)?
            .try_into()
            .map_err(Error::Verifier)?;
        // XDP may not grow the frame here, but leave room anyway: the kernel
        // reports ENOSPC rather than truncating when the buffer is short.
        let mut output = vec![0u8; frame.len() + 256];
        let result = program
            .test_run(TestRunOptions {
                data_in: Some(frame),
                data_out: Some(&mut output),
                repeat: repeat.max(1),
                ..TestRunOptions::default()
            })
            .map_err(Error::TestRun)?;
        output.truncate(result.data_size_out as usize);
        Ok(TestRunOutcome {
            action: result.return_value,
            output,
            per_run: result.duration,
        })
    }

    /// Attaches to `interface` in exactly `mode` (no silent fallback: the
    /// caller decides what to try next and logs it).
    pub fn attach(&mut self, interface: &str, mode: AttachMode) -> Result<(), Error> {
        let program = self.program()?;
        let link = program
            .attach(interface, mode.aya())
            .map_err(|source| match &source {
                ProgramError::UnknownInterface { .. } => {
                    Error::UnknownInterface(interface.to_owned())
                }
                ProgramError::SyscallError(e) if e.io_error.raw_os_error() == Some(libc::EBUSY) => {
                    Error::InterfaceBusy {
                        interface: interface.to_owned(),
                    }
                }
                _ if is_busy(&source) => Error::InterfaceBusy {
                    interface: interface.to_owned(),
                },
                _ => Error::Attach {
                    interface: interface.to_owned(),
                    mode,
                    source,
                },
            })?;
        debug!(interface, %mode, "xdp attached");
        self.attached.push((interface.to_owned(), mode, link));
        Ok(())
    }

    /// Detaches from `interface`.
    pub fn detach(&mut self, interface: &str) -> Result<(), Error> {
        let pos = self
            .attached
            .iter()
            .position(|(i, _, _)| i == interface)
            .ok_or_else(|| Error::NotAttached(interface.to_owned()))?;
        let (interface, _, link) = self.attached.remove(pos);
        self.program()?
            .detach(link)
            .map_err(|source| Error::Detach {
                interface: interface.clone(),
                source,
            })?;
        debug!(interface, "xdp detached");
        Ok(())
    }

    /// Interfaces the program is attached to, with the mode of each.
    pub fn attachments(&self) -> impl Iterator<Item = (&str, AttachMode)> {
        self.attached.iter().map(|(i, m, _)| (i.as_str(), *m))
    }

    /// Counter totals over all CPUs, in [`Counter::ALL`] order.
    pub fn counters(&self) -> Result<Vec<(Counter, u64)>, Error> {
        let map = self
            .ebpf
            .map(COUNTERS_MAP)
            .ok_or(Error::MissingMap(COUNTERS_MAP))?;
        let array: PerCpuArray<_, u64> = PerCpuArray::try_from(map)?;
        Counter::ALL
            .iter()
            .map(|&c| Ok((c, array.get(&(c as u32), 0)?.iter().sum())))
            .collect()
    }

    fn program(&mut self) -> Result<&mut Xdp, Error> {
        self.ebpf
            .program_mut(XDP_PROGRAM_NAME)
            .ok_or(Error::MissingProgram)?
            .try_into()
            .map_err(Error::Verifier)
    }
}

/// The ring buffer size for an unused log: one page (the smallest a BPF
/// ring buffer can be).
fn page_size() -> u32 {
    // SAFETY: sysconf has no preconditions.
    let size = unsafe { libc::sysconf(libc::_SC_PAGESIZE) };
    u32::try_from(size).unwrap_or(4096)
}

/// Slots of the loop guard's table for `--recent-probes`: the next power of
/// two (the program masks the hash), at least 1, at most 2^31.
fn recent_slots(recent_probes: u32) -> u32 {
    recent_probes.clamp(1, 1 << 31).next_power_of_two()
}

/// A random per-load seed for the table's hash (std's randomly keyed
/// SipHash, so no extra dependency).
fn random_seed() -> u32 {
    use std::hash::{BuildHasher, Hasher};
    let mut h = std::collections::hash_map::RandomState::new().build_hasher();
    h.write_u64(u64::from(std::process::id()));
    h.finish() as u32
}

/// The netlink fallback reports an occupied interface as a wrapped EBUSY.
fn is_busy(error: &ProgramError) -> bool {
    let mut source: Option<&(dyn std::error::Error + 'static)> = Some(error);
    while let Some(e) = source {
        if let Some(io) = e.downcast_ref::<std::io::Error>()
            && matches!(io.raw_os_error(), Some(libc::EBUSY) | Some(libc::EEXIST))
        {
            return true;
        }
        source = e.source();
    }
    false
}
