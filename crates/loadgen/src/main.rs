//! loadgen: load generator for presenced benchmarks.
//!
//! `loadgen raft` drives roster writes through the admin API of a running cluster
//! (spread over every node given, so most writes are forwarded to the leader) at
//! several concurrency levels and prints throughput and commit latency.
//!
//! `loadgen xmpp` is a standard XMPP c2s client load (presenced, Prosody, ejabberd);
//! `loadgen provision` creates its users (and the presence star's contacts) in a
//! presenced cluster through the admin API.

mod provision;
mod xmpp;

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use anyhow::Context;
use clap::{Parser, Subcommand};
use hdrhistogram::Histogram;
use presenced_proto::SECRET_HEADER;
use presenced_proto::admin::admin_client::AdminClient;
use presenced_proto::admin::{ContactEntry, RosterAddRequest, SetSettingRequest, UserAddRequest};
use tonic::metadata::MetadataValue;
use tonic::service::interceptor::InterceptedService;
use tonic::transport::Channel;

#[derive(Parser)]
#[command(name = "loadgen", about = "Load generator for presenced benchmarks")]
struct Args {
    #[command(subcommand)]
    cmd: Cmd,
}

#[derive(Subcommand)]
enum Cmd {
    /// Roster writes per second and commit latency through the admin API.
    Raft {
        /// Admin addresses of the nodes, comma separated.
        #[arg(long, default_value = "127.0.0.1:7201,127.0.0.1:7202,127.0.0.1:7203")]
        nodes: String,
        #[arg(long, env = "PRESENCED_SECRET")]
        secret: String,
        /// Concurrency levels to run, comma separated.
        #[arg(long, default_value = "1,16,64")]
        writers: String,
        /// Seconds per level.
        #[arg(long, default_value_t = 10)]
        seconds: u64,
        /// Send every write to the first node only (instead of round-robin over all).
        #[arg(long)]
        first_only: bool,
        /// Print the table as JSON lines too.
        #[arg(long)]
        json: bool,
    },
    /// XMPP c2s load (login storm, ping-pong messages, presence fan-out, idle memory).
    Xmpp(xmpp::XmppArgs),
    /// Create loadgen users (and the presence star's contacts) in presenced via admin gRPC.
    Provision(provision::ProvisionArgs),
}

pub(crate) type Client = AdminClient<InterceptedService<Channel, Secret>>;

#[derive(Clone)]
pub(crate) struct Secret(pub(crate) MetadataValue<tonic::metadata::Ascii>);

impl tonic::service::Interceptor for Secret {
    fn call(&mut self, mut r: tonic::Request<()>) -> Result<tonic::Request<()>, tonic::Status> {
        r.metadata_mut().insert(SECRET_HEADER, self.0.clone());
        Ok(r)
    }
}

/// The admin API's TLS, as presencectl finds it: `PRESENCECTL_CA` (the cluster's CA),
/// or `PRESENCECTL_PLAINTEXT=1` for a plain-text cluster.
fn admin_transport() -> anyhow::Result<presenced_tls::Transport> {
    if let Some(ca) = std::env::var_os("PRESENCECTL_CA").filter(|c| !c.is_empty()) {
        let m = presenced_tls::Material::load(presenced_tls::Paths {
            ca: ca.into(),
            cert: None,
        })
        .map_err(|e| anyhow::anyhow!("PRESENCECTL_CA: {e}"))?;
        return Ok(presenced_tls::Transport::Mutual(m));
    }
    if std::env::var("PRESENCECTL_PLAINTEXT").is_ok_and(|v| !v.is_empty() && v != "0") {
        return Ok(presenced_tls::Transport::Plaintext);
    }
    anyhow::bail!(
        "set PRESENCECTL_CA to the cluster's CA file (or PRESENCECTL_PLAINTEXT=1 for a plain-text cluster)"
    )
}

pub(crate) async fn connect(addr: &str, secret: &Secret) -> anyhow::Result<Client> {
    let ep = presenced_tls::endpoint(addr)
        .map_err(|e| anyhow::anyhow!(e))?
        .tcp_nodelay(true)
        .connect_timeout(Duration::from_secs(2));
    let ch = admin_transport()?
        .connect(&ep, presenced_tls::Expect::AnyNode)
        .await
        .with_context(|| format!("cannot reach {addr}"))?;
    Ok(AdminClient::with_interceptor(ch, secret.clone()))
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    match Args::parse().cmd {
        Cmd::Raft {
            nodes,
            secret,
            writers,
            seconds,
            first_only,
            json,
        } => {
            let secret = Secret(secret.parse().context("secret must be ASCII")?);
            let mut addrs: Vec<String> = nodes
                .split(',')
                .map(|s| s.trim().to_string())
                .filter(|s| !s.is_empty())
                .collect();
            if first_only {
                addrs.truncate(1);
            }
            let levels: Vec<usize> = writers
                .split(',')
                .map(|s| s.trim().parse())
                .collect::<Result<_, _>>()?;
            raft_bench(&addrs, &secret, &levels, Duration::from_secs(seconds), json).await
        }
        Cmd::Xmpp(a) => xmpp::run(a).await,
        Cmd::Provision(a) => provision::run(a).await,
    }
}

async fn raft_bench(
    addrs: &[String],
    secret: &Secret,
    levels: &[usize],
    dur: Duration,
    json: bool,
) -> anyhow::Result<()> {
    let mut admin = connect(&addrs[0], secret).await?;
    admin
        .settings_set(SetSettingRequest {
            key: "max_contact_list_size".into(),
            value: "unlimited".into(),
        })
        .await
        .context("setting max_contact_list_size")?;
    let max = levels.iter().copied().max().unwrap_or(1);
    for w in 0..max {
        let r = admin
            .user_add(UserAddRequest {
                name: format!("lg{w}"),
                password: "loadgen-pw".into(),
            })
            .await;
        if let Err(s) = r {
            anyhow::ensure!(
                s.code() == tonic::Code::AlreadyExists,
                "creating lg{w}: {}",
                s.message()
            );
        }
    }
    // One channel per node, shared by the writers using it (HTTP/2 multiplexes).
    let mut clients = Vec::new();
    for a in addrs {
        clients.push(connect(a, secret).await?);
    }
    let run_id = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)?
        .as_millis();
    println!("| writers | writes/s | p50 ms | p99 ms | p999 ms | errors |");
    println!("|--------:|---------:|-------:|-------:|--------:|-------:|");
    for &n in levels {
        let seq = Arc::new(AtomicU64::new(0));
        let errors = Arc::new(AtomicU64::new(0));
        let start = Instant::now();
        let deadline = start + dur;
        let mut tasks = Vec::new();
        for w in 0..n {
            let mut c = clients[w % clients.len()].clone();
            let (seq, errors) = (seq.clone(), errors.clone());
            tasks.push(tokio::spawn(async move {
                let mut h =
                    Histogram::<u64>::new_with_bounds(1, 60_000_000, 3).expect("histogram bounds");
                while Instant::now() < deadline {
                    let i = seq.fetch_add(1, Ordering::Relaxed);
                    let req = RosterAddRequest {
                        entries: vec![ContactEntry {
                            user: format!("lg{w}"),
                            contact: format!("r{run_id}n{n}i{i}@bench.example"),
                            name: String::new(),
                            group: String::new(),
                        }],
                    };
                    let t = Instant::now();
                    match c.roster_add(req).await {
                        Ok(r) if r.get_ref().refused.is_empty() => {
                            h.record(t.elapsed().as_micros().max(1) as u64)
                                .expect("in bounds");
                        }
                        _ => {
                            errors.fetch_add(1, Ordering::Relaxed);
                        }
                    }
                }
                h
            }));
        }
        let mut all = Histogram::<u64>::new_with_bounds(1, 60_000_000, 3)?;
        for t in tasks {
            all.add(t.await?)?;
        }
        let secs = start.elapsed().as_secs_f64();
        let rate = all.len() as f64 / secs;
        let q = |p: f64| all.value_at_quantile(p) as f64 / 1000.0;
        println!(
            "| {n:7} | {rate:8.0} | {:6.2} | {:6.2} | {:7.2} | {:6} |",
            q(0.5),
            q(0.99),
            q(0.999),
            errors.load(Ordering::Relaxed)
        );
        if json {
            println!(
                "{}",
                serde_json::json!({"writers": n, "writes_per_sec": rate, "p50_ms": q(0.5), "p99_ms": q(0.99),
                                   "p999_ms": q(0.999), "errors": errors.load(Ordering::Relaxed), "nodes": addrs})
            );
        }
    }
    Ok(())
}
