//! presenced: one node of a presenced cluster.
//!
//! `presenced --config FILE` opens the node's data directory, starts Raft, and serves
//! the inter-node gRPC port, the admin gRPC port (presencectl) and the HTTP port
//! (/health, /metrics). Client protocol adapters plug in beside these.

mod cluster_tls;
mod config;
mod http;

use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;

use anyhow::Context;
use clap::Parser;
use presenced_cluster::ClusterNode;
use tokio::net::TcpListener;
use tracing_subscriber::EnvFilter;

// glibc malloc showed up at ~13% of a node's CPU under write load. jemalloc is as fast
// as mimalloc was here (Raft writes and c2s ping-pong within the noise) and holds far
// less: a node's RSS at rest 31 MiB against 75-86 MiB, and 18 KiB against 25 KiB per
// idle session summed over a 3-node cluster (docs/benchmarks.md, issue 11). Its settings
// are compiled in from .cargo/config.toml (freed pages go back within a second);
// `_RJEM_MALLOC_CONF` overrides them at run time.
#[global_allocator]
static GLOBAL: tikv_jemallocator::Jemalloc = tikv_jemallocator::Jemalloc;

#[derive(Parser)]
#[command(
    name = "presenced",
    version,
    about = "A clustered IM and presence server node"
)]
struct Args {
    /// The node's TOML configuration file.
    #[arg(long, short)]
    config: PathBuf,
    /// Override the config's data_dir (used by scripts/cluster to keep data in its run folder).
    #[arg(long)]
    data_dir: Option<PathBuf>,
    /// Check the configuration and exit.
    #[arg(long)]
    check: bool,
}

fn main() -> ExitCode {
    let args = Args::parse();
    let (mut cfg, secret) = match config::load(&args.config) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("presenced: {e}");
            return ExitCode::from(2);
        }
    };
    if let Some(d) = args.data_dir {
        cfg.data_dir = d;
    }
    if args.check {
        println!("config {} is valid", args.config.display());
        return ExitCode::SUCCESS;
    }
    let filter = EnvFilter::try_from_default_env()
        .or_else(|_| EnvFilter::try_new(format!("openraft=warn,{}", cfg.log_level)))
        .unwrap_or_else(|_| EnvFilter::new("info"));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    match cfg.log_format {
        config::LogFormat::Text => builder.init(),
        config::LogFormat::Json => builder.json().init(),
    }
    let mut rt = tokio::runtime::Builder::new_multi_thread();
    if cfg.worker_threads > 0 {
        rt.worker_threads(cfg.worker_threads);
    }
    let rt = match rt.enable_all().thread_name("presenced").build() {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("presenced: cannot start runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    match rt.block_on(run(cfg, secret)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            tracing::error!("{e:#}");
            eprintln!("presenced: {e:#}");
            ExitCode::FAILURE
        }
    }
}

async fn run(cfg: config::Config, secret: String) -> anyhow::Result<()> {
    let metrics = metrics_exporter_prometheus::PrometheusBuilder::new()
        .set_buckets(&[
            0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0,
        ])
        .context("metrics buckets")?
        // A count of events per frame, not seconds: the router sends at most 512.
        .set_buckets_for_metric(
            metrics_exporter_prometheus::Matcher::Full("presenced_peer_batch_events".into()),
            &[1.0, 2.0, 4.0, 8.0, 16.0, 32.0, 64.0, 128.0, 256.0, 512.0],
        )
        .context("metrics buckets")?
        .install_recorder()
        .context("metrics recorder")?;
    // Bind everything first: a port in use stops the node before it touches Raft.
    let bind = |name: &'static str, addr| async move {
        TcpListener::bind(addr)
            .await
            .with_context(|| format!("listen.{name}: cannot bind {addr}"))
    };
    let cluster_l = bind("cluster", cfg.listen.cluster).await?;
    let admin_l = bind("admin", cfg.listen.admin).await?;
    let http_l = bind("http", cfg.listen.http).await?;
    let xmpp_l = bind("xmpp", cfg.listen.xmpp).await?;
    let xmpps_l = match cfg.listen.xmpps {
        Some(a) => Some(bind("xmpps", a).await?),
        None => None,
    };
    std::fs::create_dir_all(&cfg.data_dir)
        .with_context(|| format!("data_dir: cannot create {}", cfg.data_dir.display()))?;

    // Peers are dialled from this node's cluster address (unless it listens on all).
    if !cfg.listen.cluster.ip().is_unspecified() {
        presenced_tls::set_outbound_source(cfg.listen.cluster.ip());
    }
    let transport = cfg
        .cluster_tls
        .transport(cfg.node_id, &cfg.domain, &cfg.advertise())?;
    let node = ClusterNode::start(cfg.cluster(secret.clone(), transport.clone()))
        .await
        .map_err(|e| anyhow::anyhow!("{e}"))?;
    let router = presenced_router::Router::start(node.clone(), cfg.router(secret));
    let (xmpp_cfg, certs) = cfg.xmpp();
    let xmpp = presenced_xmpp::Xmpp::new(router.clone(), xmpp_cfg, &certs)?;
    tracing::info!(
        node = cfg.node_id,
        domain = %cfg.domain,
        cluster = %cfg.listen.cluster,
        admin = %cfg.listen.admin,
        http = %cfg.listen.http,
        xmpp = %cfg.listen.xmpp,
        cert = %xmpp.cert_path.display(),
        "presenced started"
    );

    let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
    let stopped = |mut rx: tokio::sync::watch::Receiver<bool>| async move {
        let _ = rx.wait_for(|s| *s).await;
    };
    // Handshakes run off the accept loop; every socket has no delay (small RPCs must not
    // wait for Nagle + delayed ACK). Inter-node listeners demand a node certificate; the
    // admin listener lets a certificate-less presencectl in to present the secret.
    use presenced_tls::ClientAuth;
    let grpc = node
        .grpc()
        .add_service(router.peer_service())
        .serve_with_incoming_shutdown(
            transport.incoming(cluster_l, ClientAuth::Required, "cluster"),
            stopped(stop_rx.clone()),
        );
    let admin = tonic::transport::Server::builder()
        .add_service(presenced_admin::server(node.clone(), {
            let r = router.clone();
            Arc::new(move |payload: &str| r.offline_readable(payload))
        }))
        .serve_with_incoming_shutdown(
            transport.incoming(admin_l, ClientAuth::Optional, "admin"),
            stopped(stop_rx.clone()),
        );
    let web = axum::serve(http_l, http::router(node.clone(), metrics))
        .with_graceful_shutdown(stopped(stop_rx.clone()));

    let c2s = {
        let x = xmpp.clone();
        tokio::spawn(async move { x.serve(xmpp_l, false).await })
    };
    let c2s_tls = xmpps_l.map(|l| {
        let x = xmpp.clone();
        tokio::spawn(async move { x.serve(l, true).await })
    });
    let servers = tokio::spawn(async move {
        tokio::select! {
            r = grpc => r.context("cluster gRPC server"),
            r = admin => r.context("admin gRPC server"),
            r = web => r.context("HTTP server"),
        }
    });
    let fatal = {
        let n = node.clone();
        async move { n.stopped_fatally().await }
    };
    let res = tokio::select! {
        _ = shutdown_signal() => { tracing::info!("shutting down"); Ok(()) }
        r = servers => r.context("server task").and_then(|r| r),
        why = fatal => Err(anyhow::anyhow!(
            "replication stopped: {why}; fix the cause (a full disk: free space) and start the \
             node again; if its data is damaged, wipe it and re-add the node (docs/scale.md)"
        )),
    };
    let _ = stop_tx.send(true);
    c2s.abort();
    if let Some(t) = c2s_tls {
        t.abort();
    }
    shutdown(node).await;
    res
}

async fn shutdown(node: Arc<ClusterNode>) {
    let _ = tokio::time::timeout(std::time::Duration::from_secs(5), node.shutdown()).await;
}

async fn shutdown_signal() {
    use tokio::signal::unix::{SignalKind, signal};
    let mut term = signal(SignalKind::terminate()).expect("SIGTERM handler");
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {}
        _ = term.recv() => {}
    }
}
