//! Tracks whether requests of one kind are succeeding, so the loops log once
//! per state change ("registration failing: connection refused" … "registered
//! again after 12 failures") instead of once per attempt: with the server down
//! for an hour, one line, not hundreds.

use std::time::{Duration, Instant};

/// A change worth one log line.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Transition {
    /// The first success ever.
    FirstSuccess,
    /// Success after failing `failures` times for `down_for`.
    Recovered { failures: u64, down_for: Duration },
    /// Started failing (from success or from the start), with this kind of error.
    Failing { kind: String },
    /// Still failing, but differently (e.g. unreachable → HTTP 500 as the
    /// server comes back half-way): worth telling the operator.
    FailingDifferently { kind: String },
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum State {
    Unknown,
    Ok,
    Failing {
        kind: String,
        since: Instant,
        failures: u64,
    },
}

/// The state of one request kind.
#[derive(Debug)]
pub struct Health {
    state: State,
}

impl Default for Health {
    fn default() -> Self {
        Self::new()
    }
}

impl Health {
    /// Nothing observed yet.
    pub fn new() -> Self {
        Self {
            state: State::Unknown,
        }
    }

    /// Record a success; returns the transition to log, if any.
    pub fn success(&mut self) -> Option<Transition> {
        let previous = std::mem::replace(&mut self.state, State::Ok);
        match previous {
            State::Unknown => Some(Transition::FirstSuccess),
            State::Ok => None,
            State::Failing {
                since, failures, ..
            } => Some(Transition::Recovered {
                failures,
                down_for: since.elapsed(),
            }),
        }
    }

    /// Record a failure of `kind` (a short, stable description such as
    /// `unreachable` or `HTTP 500`, never a per-attempt detail); returns the
    /// transition to log, if any.
    pub fn failure(&mut self, kind: &str) -> Option<Transition> {
        match &mut self.state {
            State::Failing {
                kind: current,
                failures,
                ..
            } => {
                *failures += 1;
                if current == kind {
                    None
                } else {
                    kind.clone_into(current);
                    Some(Transition::FailingDifferently {
                        kind: kind.to_owned(),
                    })
                }
            }
            State::Unknown | State::Ok => {
                self.state = State::Failing {
                    kind: kind.to_owned(),
                    since: Instant::now(),
                    failures: 1,
                };
                Some(Transition::Failing {
                    kind: kind.to_owned(),
                })
            }
        }
    }

    /// True while the last observation was a failure.
    pub fn is_failing(&self) -> bool {
        matches!(self.state, State::Failing { .. })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_transition_per_state_change() {
        let mut h = Health::new();
        assert_eq!(h.success(), Some(Transition::FirstSuccess));
        assert_eq!(h.success(), None);
        assert_eq!(
            h.failure("unreachable"),
            Some(Transition::Failing {
                kind: "unreachable".into()
            })
        );
        for _ in 0..50 {
            assert_eq!(h.failure("unreachable"), None);
        }
        assert!(h.is_failing());
        assert_eq!(
            h.failure("HTTP 500"),
            Some(Transition::FailingDifferently {
                kind: "HTTP 500".into()
            })
        );
        assert_eq!(h.failure("HTTP 500"), None);
        match h.success() {
            Some(Transition::Recovered { failures, .. }) => assert_eq!(failures, 53),
            other => panic!("expected Recovered, got {other:?}"),
        }
        assert_eq!(h.success(), None);
        assert!(!h.is_failing());
    }

    #[test]
    fn failing_from_the_start_is_one_transition() {
        let mut h = Health::new();
        assert!(matches!(
            h.failure("timeout"),
            Some(Transition::Failing { .. })
        ));
        assert_eq!(h.failure("timeout"), None);
        assert!(matches!(
            h.success(),
            Some(Transition::Recovered { failures: 2, .. })
        ));
    }
}
