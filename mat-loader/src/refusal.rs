//! Why the daemon said no: one error type for every request, with the protocol's stable codes.

use serde::{Deserialize, Serialize};

/// The stable error codes of the protocol (`{"error": {"code": ...}}`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Code {
    BadRequest,
    LineTooLong,
    NotRoot,
    PoolExhausted,
    UnknownPort,
    /// The interface exists but is not a VM port (a bridge, a bridge's uplink, not a tap).
    NotVmPort,
    InvalidMac,
    InvalidIp,
    MacInUse,
    PortBound,
    NotBound,
    /// A MAC to decode that is not in the outside pool.
    NotInPool,
    /// Too many connections at once; try again.
    Busy,
    Internal,
}

impl Code {
    /// The code as the protocol spells it.
    pub fn as_str(self) -> &'static str {
        match self {
            Code::BadRequest => "bad_request",
            Code::LineTooLong => "line_too_long",
            Code::NotRoot => "not_root",
            Code::PoolExhausted => "pool_exhausted",
            Code::UnknownPort => "unknown_port",
            Code::NotVmPort => "not_vm_port",
            Code::InvalidMac => "invalid_mac",
            Code::InvalidIp => "invalid_ip",
            Code::MacInUse => "mac_in_use",
            Code::PortBound => "port_bound",
            Code::NotBound => "not_bound",
            Code::NotInPool => "not_in_pool",
            Code::Busy => "busy",
            Code::Internal => "internal",
        }
    }
}

/// A refusal: what the daemon answers instead of a result. A refused request changed nothing.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("{message}")]
pub struct Refusal {
    pub code: Code,
    pub message: String,
}

impl Refusal {
    pub fn new(code: Code, message: impl Into<String>) -> Self {
        Self {
            code,
            message: message.into(),
        }
    }

    pub fn internal(e: impl std::fmt::Display) -> Self {
        Self::new(Code::Internal, e.to_string())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_match_the_wire() {
        for c in [
            Code::BadRequest,
            Code::LineTooLong,
            Code::NotRoot,
            Code::PoolExhausted,
            Code::UnknownPort,
            Code::NotVmPort,
            Code::InvalidMac,
            Code::InvalidIp,
            Code::MacInUse,
            Code::PortBound,
            Code::NotBound,
            Code::NotInPool,
            Code::Busy,
            Code::Internal,
        ] {
            assert_eq!(serde_json::to_value(c).unwrap(), c.as_str());
        }
    }
}
