//! The broker's file-descriptor budget: every connected client (at most `max_connections`, which also
//! counts absent persistent sessions; those hold no socket) and every half-open connection holds a socket, and the daemon needs more for its spool, state files,
//! listeners, serial ports and the journal. At start the budget is compared with the process's limit
//! (`RLIMIT_NOFILE`, systemd's `LimitNOFILE`): the soft limit is raised to what is needed when the hard
//! limit allows, and otherwise the start is refused with what to change. Without it, ~4,090 silent
//! sockets exhausted `LimitNOFILE=4096`, every client was locked out and the retained snapshot failed with
//! "Too many open files".

use rustix::process::{getrlimit, setrlimit, Resource, Rlimit};

use super::BrokerSettings;

/// Descriptors kept for everything but client sockets: spool segments, state files, listeners, serial
/// ports and radios, the journal and the uplink.
pub const HEADROOM: u64 = 64;
/// Accepted connections that have not sent their CONNECT yet, at most (fewer when `max_connections` is
/// smaller).
pub const MAX_HALF_OPEN: usize = 256;

/// Half-open connections allowed with these settings.
pub fn max_half_open(settings: &BrokerSettings) -> usize {
    MAX_HALF_OPEN.min(settings.max_connections.max(1))
}

/// What the broker may hold open at most.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Budget {
    /// Connected clients, at most `max_connections`.
    pub connections: u64,
    pub half_open: u64,
}

impl Budget {
    pub fn of(settings: &BrokerSettings) -> Budget {
        Budget {
            connections: settings.max_connections.max(1) as u64,
            half_open: max_half_open(settings) as u64,
        }
    }

    /// Descriptors needed in all.
    pub fn needed(&self) -> u64 {
        self.connections + self.half_open + HEADROOM
    }
}

/// The limit is too low for the budget and cannot be raised.
#[derive(Debug, thiserror::Error)]
#[error("the broker may need {needed} file descriptors (max_connections = {connections}, {half_open} half-open connections, {HEADROOM} for files), but the process may open only {limit} (LimitNOFILE): lower [broker] max_connections, or raise LimitNOFILE in the systemd unit")]
pub struct DescriptorError {
    pub needed: u64,
    pub limit: u64,
    pub connections: u64,
    pub half_open: u64,
}

/// Checks the budget against `RLIMIT_NOFILE`, raising the soft limit when the hard one allows.
pub fn ensure_budget(budget: &Budget) -> Result<(), DescriptorError> {
    let needed = budget.needed();
    let current = getrlimit(Resource::Nofile);
    let soft = current.current.unwrap_or(u64::MAX);
    let hard = current.maximum.unwrap_or(u64::MAX);
    match decide(needed, soft, hard) {
        Decision::Enough => Ok(()),
        Decision::Raise => {
            let raised = Rlimit {
                current: Some(needed),
                maximum: current.maximum,
            };
            match setrlimit(Resource::Nofile, raised) {
                Ok(()) => {
                    log::info!("broker: file-descriptor limit raised from {soft} to {needed}");
                    Ok(())
                }
                Err(_) => Err(refusal(budget, soft)),
            }
        }
        Decision::Refuse => Err(refusal(budget, hard)),
    }
}

fn refusal(budget: &Budget, limit: u64) -> DescriptorError {
    DescriptorError {
        needed: budget.needed(),
        limit,
        connections: budget.connections,
        half_open: budget.half_open,
    }
}

#[derive(Debug, PartialEq, Eq)]
enum Decision {
    Enough,
    Raise,
    Refuse,
}

fn decide(needed: u64, soft: u64, hard: u64) -> Decision {
    if needed <= soft {
        Decision::Enough
    } else if needed <= hard {
        Decision::Raise
    } else {
        Decision::Refuse
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_default_settings_fit_the_units_limit() {
        let budget = Budget::of(&BrokerSettings::default());
        assert_eq!(budget.needed(), 1024 + 256 + HEADROOM);
        assert!(
            budget.needed() <= 4096,
            "systemd/sensorgate.service has LimitNOFILE=4096"
        );
    }

    #[test]
    fn raise_when_the_hard_limit_allows_else_refuse() {
        assert_eq!(decide(1600, 4096, 4096), Decision::Enough);
        assert_eq!(decide(1600, 1024, 4096), Decision::Raise);
        assert_eq!(decide(5000, 1024, 4096), Decision::Refuse);
    }

    #[test]
    fn the_refusal_says_what_to_change() {
        let budget = Budget {
            connections: 5000,
            half_open: 256,
        };
        let text = refusal(&budget, 4096).to_string();
        assert!(text.contains("max_connections = 5000"), "{text}");
        assert!(text.contains("LimitNOFILE"), "{text}");
    }
}
