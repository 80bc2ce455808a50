//! Failures: one operator-facing line, the gRPC code name and the process exit code.

use std::fmt;

use tonic::{Code, Status};

pub const EXIT_FAILURE: u8 = 1;
pub const EXIT_INVALID: u8 = 2;
pub const EXIT_NOT_FOUND: u8 = 3;
pub const EXIT_REFUSED: u8 = 4;
pub const EXIT_UNAVAILABLE: u8 = 5;
pub const EXIT_UNAUTHENTICATED: u8 = 6;

/// A failure, ready to be shown: one line of text, the gRPC code name it corresponds
/// to, and the process exit code.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CliError {
    pub exit: u8,
    pub code: &'static str,
    pub message: String,
}

impl CliError {
    pub fn new(exit: u8, code: &'static str, message: impl Into<String>) -> Self {
        CliError {
            exit,
            code,
            message: one_line(&message.into()),
        }
    }

    /// Bad input detected locally (exit 2).
    pub fn invalid(message: impl Into<String>) -> Self {
        Self::new(EXIT_INVALID, "INVALID_ARGUMENT", message)
    }

    /// Something was refused by a limit or a rule (exit 4).
    pub fn refused(message: impl Into<String>) -> Self {
        Self::new(EXIT_REFUSED, "FAILED_PRECONDITION", message)
    }

    /// One refused roster entry, with the exit code its refusal code deserves: an
    /// unknown user is "not found" (3), a malformed name "bad input" (2), a limit or
    /// rule "refused" (4).
    pub fn refused_entry(refusal_code: &str, message: impl Into<String>) -> Self {
        match refusal_code {
            "unknown_user" | "unknown_contact" | "not_in_roster" => {
                Self::new(EXIT_NOT_FOUND, "NOT_FOUND", message)
            }
            "bad_value" | "self_contact" | "unknown_setting" => {
                Self::new(EXIT_INVALID, "INVALID_ARGUMENT", message)
            }
            _ => Self::refused(message),
        }
    }

    /// The node cannot be reached at all (exit 5).
    pub fn unreachable(node: &str, detail: impl fmt::Display) -> Self {
        Self::new(
            EXIT_UNAVAILABLE,
            "UNAVAILABLE",
            format!("cannot reach node {node}: {detail}"),
        )
    }

    /// The connection failed: a TLS refusal either way is an authentication failure
    /// (exit 6), anything else means the node cannot be reached (exit 5).
    pub fn connect_failed(node: &str, chain: String) -> Self {
        let tls = [
            "certificate",
            "Certificate",
            "UnknownIssuer",
            "received fatal alert",
        ]
        .iter()
        .any(|k| chain.contains(k));
        if tls {
            return Self::new(
                EXIT_UNAUTHENTICATED,
                "TLS",
                format!(
                    "TLS with node {node} failed: {chain} (the node must hold a certificate of the CA \
                     given with --ca; an operator certificate must be of that CA too)"
                ),
            );
        }
        Self::unreachable(node, chain)
    }

    /// A gRPC status returned by (or on the way to) `node`.
    pub fn from_status(status: &Status, node: &str) -> Self {
        let code = status.code();
        if code == Code::Unauthenticated {
            return Self::new(
                EXIT_UNAUTHENTICATED,
                code_name(code),
                format!("wrong cluster secret (node {node} refused it)"),
            );
        }
        // Statuses made up on the client side from a transport failure carry the
        // underlying error as their source; statuses sent by the server never do.
        let transport = std::error::Error::source(status).is_some();
        if transport && matches!(code, Code::Unavailable | Code::Unknown | Code::Cancelled) {
            let mut detail = status.message().to_string();
            if let Some(src) = std::error::Error::source(status) {
                let chain = error_chain(src);
                if !detail.contains(&chain) {
                    detail = if detail.is_empty() {
                        chain
                    } else {
                        format!("{detail}: {chain}")
                    };
                }
            }
            return Self::unreachable(node, detail);
        }
        let message = if status.message().trim().is_empty() {
            format!("node {node} answered {}", code_name(code))
        } else {
            status.message().to_string()
        };
        Self::new(exit_code(code), code_name(code), message)
    }
}

impl fmt::Display for CliError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.message)
    }
}

/// The exit code for a gRPC status code.
pub fn exit_code(code: Code) -> u8 {
    match code {
        Code::InvalidArgument => EXIT_INVALID,
        Code::NotFound => EXIT_NOT_FOUND,
        Code::FailedPrecondition | Code::AlreadyExists => EXIT_REFUSED,
        Code::Unavailable | Code::DeadlineExceeded => EXIT_UNAVAILABLE,
        Code::Unauthenticated => EXIT_UNAUTHENTICATED,
        _ => EXIT_FAILURE,
    }
}

/// The canonical (upper snake case) name of a gRPC status code.
pub fn code_name(code: Code) -> &'static str {
    match code {
        Code::Ok => "OK",
        Code::Cancelled => "CANCELLED",
        Code::Unknown => "UNKNOWN",
        Code::InvalidArgument => "INVALID_ARGUMENT",
        Code::DeadlineExceeded => "DEADLINE_EXCEEDED",
        Code::NotFound => "NOT_FOUND",
        Code::AlreadyExists => "ALREADY_EXISTS",
        Code::PermissionDenied => "PERMISSION_DENIED",
        Code::ResourceExhausted => "RESOURCE_EXHAUSTED",
        Code::FailedPrecondition => "FAILED_PRECONDITION",
        Code::Aborted => "ABORTED",
        Code::OutOfRange => "OUT_OF_RANGE",
        Code::Unimplemented => "UNIMPLEMENTED",
        Code::Internal => "INTERNAL",
        Code::Unavailable => "UNAVAILABLE",
        Code::DataLoss => "DATA_LOSS",
        Code::Unauthenticated => "UNAUTHENTICATED",
    }
}

/// Collapse a possibly multi-line message onto one line.
fn one_line(s: &str) -> String {
    let parts: Vec<&str> = s.lines().map(str::trim).filter(|l| !l.is_empty()).collect();
    parts.join("; ")
}

/// "outer: inner: innermost", skipping links that repeat the previous one.
pub fn error_chain(e: &(dyn std::error::Error + 'static)) -> String {
    let mut parts: Vec<String> = Vec::new();
    let mut cur: Option<&(dyn std::error::Error + 'static)> = Some(e);
    while let Some(err) = cur {
        let s = err.to_string();
        if !s.is_empty() && parts.last().is_none_or(|p| !p.contains(&s)) {
            parts.push(s);
        }
        cur = err.source();
    }
    parts.join(": ")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn status_codes_map_to_exit_codes() {
        let cases = [
            (Code::InvalidArgument, 2),
            (Code::NotFound, 3),
            (Code::FailedPrecondition, 4),
            (Code::AlreadyExists, 4),
            (Code::Unavailable, 5),
            (Code::DeadlineExceeded, 5),
            (Code::Unauthenticated, 6),
            (Code::Internal, 1),
            (Code::Unknown, 1),
            (Code::PermissionDenied, 1),
            (Code::Cancelled, 1),
        ];
        for (code, exit) in cases {
            assert_eq!(exit_code(code), exit, "{code:?}");
            let e = CliError::from_status(&Status::new(code, "the message"), "h:1");
            assert_eq!(e.exit, exit, "{code:?}");
            assert_eq!(e.code, code_name(code));
        }
    }

    #[test]
    fn status_messages() {
        let e = CliError::from_status(&Status::not_found("unknown user bob"), "h:1");
        assert_eq!(
            (e.exit, e.code, e.message.as_str()),
            (3, "NOT_FOUND", "unknown user bob")
        );
        let e = CliError::from_status(
            &Status::unauthenticated("wrong or missing cluster secret"),
            "h:1",
        );
        assert_eq!(e.message, "wrong cluster secret (node h:1 refused it)");
        let e = CliError::from_status(&Status::unavailable("no leader\nretry later"), "h:1");
        assert_eq!((e.exit, e.message.as_str()), (5, "no leader; retry later"));
        let e = CliError::from_status(&Status::internal(""), "h:1");
        assert_eq!(
            (e.exit, e.message.as_str()),
            (1, "node h:1 answered INTERNAL")
        );
    }

    #[test]
    fn transport_failures_name_the_node() {
        let io = std::io::Error::new(std::io::ErrorKind::ConnectionRefused, "connection refused");
        let mut st = Status::unavailable("transport error");
        st.set_source(std::sync::Arc::new(io));
        let e = CliError::from_status(&st, "h:1");
        assert_eq!(e.exit, 5);
        assert_eq!(
            e.message,
            "cannot reach node h:1: transport error: connection refused"
        );
    }
}
