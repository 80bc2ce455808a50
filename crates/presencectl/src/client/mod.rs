//! Where to connect and with which secret, the connection itself, and the mapping of
//! every failure onto one operator-facing line and an exit code.

mod errors;
mod target;
mod tls;

use std::future::Future;
use std::time::Duration;

use presenced_proto::SECRET_HEADER;
use presenced_proto::admin::admin_client::AdminClient;
use tonic::metadata::{Ascii, MetadataValue};
use tonic::service::Interceptor;
use tonic::service::interceptor::InterceptedService;
use tonic::transport::Channel;
use tonic::{Request, Status};

pub use errors::{CliError, EXIT_FAILURE, EXIT_UNAVAILABLE, error_chain};
pub use target::{Target, resolve_with};
pub use tls::{TlsFlags, resolve_tls};

/// How long to wait for the TCP/HTTP2 connection to a node.
pub const CONNECT_TIMEOUT: Duration = Duration::from_secs(2);

/// Client side of the cluster secret: add it to every request (when we have one; an
/// operator certificate authenticates on its own).
#[derive(Clone)]
pub struct AddSecret(Option<MetadataValue<Ascii>>);

impl Interceptor for AddSecret {
    fn call(&mut self, mut req: Request<()>) -> Result<Request<()>, Status> {
        if let Some(s) = &self.0 {
            req.metadata_mut().insert(SECRET_HEADER, s.clone());
        }
        Ok(req)
    }
}

pub type Admin = AdminClient<InterceptedService<Channel, AddSecret>>;

/// An open connection to one node's admin API.
pub struct Conn {
    client: Admin,
    node: String,
    timeout: Duration,
}

impl Conn {
    pub async fn connect(
        target: &Target,
        transport: &presenced_tls::Transport,
        timeout: Duration,
    ) -> Result<Conn, CliError> {
        let node = target.node.clone();
        let secret: Option<MetadataValue<Ascii>> = match target.secret.as_str() {
            "" => None,
            s => Some(s.parse().map_err(|_| {
                CliError::invalid("the cluster secret must be printable ASCII without spaces")
            })?),
        };
        let endpoint = presenced_tls::endpoint(&node)
            .map_err(CliError::invalid)?
            .connect_timeout(CONNECT_TIMEOUT)
            .tcp_nodelay(true);
        let channel = match tokio::time::timeout(
            CONNECT_TIMEOUT + Duration::from_millis(500),
            transport.connect(&endpoint, presenced_tls::Expect::AnyNode),
        )
        .await
        {
            Ok(Ok(ch)) => ch,
            Ok(Err(e)) => return Err(CliError::connect_failed(&node, error_chain(&e))),
            Err(_) => return Err(CliError::unreachable(&node, "connection timed out")),
        };
        let client = AdminClient::with_interceptor(channel, AddSecret(secret))
            .max_decoding_message_size(presenced_proto::MAX_MESSAGE_BYTES)
            .max_encoding_message_size(presenced_proto::MAX_MESSAGE_BYTES);
        Ok(Conn {
            client,
            node,
            timeout,
        })
    }

    pub fn node(&self) -> &str {
        &self.node
    }

    /// A read, with the default per-call timeout.
    pub async fn call<T, F, Fut>(&self, f: F) -> Result<T, CliError>
    where
        F: FnOnce(Admin) -> Fut,
        Fut: Future<Output = Result<tonic::Response<T>, Status>>,
    {
        self.invoke(self.timeout, false, f).await
    }

    /// A change, with the default per-call timeout.
    pub async fn change<T, F, Fut>(&self, f: F) -> Result<T, CliError>
    where
        F: FnOnce(Admin) -> Fut,
        Fut: Future<Output = Result<tonic::Response<T>, Status>>,
    {
        self.invoke(self.timeout, true, f).await
    }

    /// A change with an explicit timeout.
    pub async fn change_within<T, F, Fut>(&self, timeout: Duration, f: F) -> Result<T, CliError>
    where
        F: FnOnce(Admin) -> Fut,
        Fut: Future<Output = Result<tonic::Response<T>, Status>>,
    {
        self.invoke(timeout, true, f).await
    }

    /// One RPC; `f` gets its own handle on the (shared) channel. When a change is cut
    /// off on the client side (timeout, lost connection) the message says that it may
    /// or may not have been applied.
    async fn invoke<T, F, Fut>(&self, timeout: Duration, change: bool, f: F) -> Result<T, CliError>
    where
        F: FnOnce(Admin) -> Fut,
        Fut: Future<Output = Result<tonic::Response<T>, Status>>,
    {
        let (mut err, cut_off) = match tokio::time::timeout(timeout, f(self.client.clone())).await {
            Ok(Ok(reply)) => return Ok(reply.into_inner()),
            Ok(Err(status)) => {
                let transport = std::error::Error::source(&status).is_some();
                (CliError::from_status(&status, &self.node), transport)
            }
            Err(_) => {
                let msg = format!(
                    "node {} did not answer within {}s",
                    self.node,
                    timeout.as_secs_f64()
                );
                (
                    CliError::new(EXIT_UNAVAILABLE, "DEADLINE_EXCEEDED", msg),
                    true,
                )
            }
        };
        if change && cut_off && err.exit == EXIT_UNAVAILABLE {
            err.message.push_str(UNKNOWN_OUTCOME);
        }
        Err(err)
    }
}

/// Appended when a change was cut off before its answer arrived.
pub const UNKNOWN_OUTCOME: &str = "; the change may or may not have been applied";
