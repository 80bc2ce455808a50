//! Forwarding against a stand-in leader: the stream with its numbered replies and
//! in-band errors, and the unary fallback for a leader without `ProposeStream`.

use std::pin::Pin;
use std::time::{Duration, Instant};

use futures::Stream;
use presenced_model::{Command, Outcome, Reply};
use presenced_proto::raft::cluster_server::{Cluster, ClusterServer};
use presenced_proto::raft::{
    MembershipReply, MembershipRequest, NodeStatusReply, NodeStatusRequest, ProposeReply,
    ProposeRequest, ReadIndexReply, ReadIndexRequest,
};
use tonic::{Request, Response, Status, Streaming};

use super::Link;
use crate::node::{ClusterConfig, ClusterError, ClusterNode};

/// A leader that answers every proposal `Ok(Done)` at index 7, except a command
/// setting `bad`, which it refuses as invalid; with `streams: false` it is a leader of
/// an earlier release.
struct FakeLeader {
    streams: bool,
}

fn answer(r: &ProposeRequest) -> ProposeReply {
    let cmd: Command = crate::format::unwire(r.format, &r.command).expect("a command");
    let bad = matches!(&cmd, Command::SetSetting { key, .. } if key == "bad");
    let outcome: Outcome = Ok(Reply::Done);
    ProposeReply {
        outcome: crate::format::wire(&outcome).unwrap(),
        log_index: 7,
        format: crate::format::WIRE,
        id: r.id,
        error_code: if bad {
            tonic::Code::InvalidArgument as i32
        } else {
            0
        },
        error_message: if bad {
            "no such setting".into()
        } else {
            String::new()
        },
    }
}

type Replies = Pin<Box<dyn Stream<Item = Result<ProposeReply, Status>> + Send>>;

#[tonic::async_trait]
impl Cluster for FakeLeader {
    type ProposeStreamStream = Replies;

    async fn propose(&self, r: Request<ProposeRequest>) -> Result<Response<ProposeReply>, Status> {
        let reply = answer(&r.into_inner());
        if reply.error_code != 0 {
            return Err(Status::invalid_argument(reply.error_message));
        }
        Ok(Response::new(reply))
    }

    async fn propose_stream(
        &self,
        r: Request<Streaming<ProposeRequest>>,
    ) -> Result<Response<Replies>, Status> {
        if !self.streams {
            return Err(Status::unimplemented("no ProposeStream here"));
        }
        let rx = r.into_inner();
        let out = futures::stream::unfold(rx, |mut rx| async move {
            match rx.message().await {
                Ok(Some(m)) => Some((Ok(answer(&m)), rx)),
                _ => None,
            }
        });
        Ok(Response::new(Box::pin(out)))
    }

    async fn read_index(
        &self,
        _: Request<ReadIndexRequest>,
    ) -> Result<Response<ReadIndexReply>, Status> {
        Err(Status::unimplemented("not here"))
    }

    async fn node_status(
        &self,
        _: Request<NodeStatusRequest>,
    ) -> Result<Response<NodeStatusReply>, Status> {
        Err(Status::unimplemented("not here"))
    }

    async fn change_membership(
        &self,
        _: Request<MembershipRequest>,
    ) -> Result<Response<MembershipReply>, Status> {
        Err(Status::unimplemented("not here"))
    }
}

async fn fake_leader(streams: bool) -> String {
    let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = l.local_addr().unwrap().to_string();
    let incoming =
        futures::stream::unfold(
            l,
            |l| async move { Some((l.accept().await.map(|(s, _)| s), l)) },
        );
    tokio::spawn(
        tonic::transport::Server::builder()
            .add_service(ClusterServer::new(FakeLeader { streams }))
            .serve_with_incoming(incoming),
    );
    addr
}

async fn follower(dir: &std::path::Path) -> std::sync::Arc<ClusterNode> {
    ClusterNode::start(ClusterConfig {
        node_id: 1,
        advertise: "127.0.0.1:1".into(),
        data_dir: dir.join("node1"),
        secret: "forward-test-secret-0123456789".into(),
        transport: presenced_tls::Transport::Plaintext,
        domain: "example.test".into(),
        raft: Default::default(),
        cache_bytes: 1 << 20,
        timeout: Duration::from_secs(5),
    })
    .await
    .expect("node starts")
}

fn set(key: &str) -> Command {
    Command::SetSetting {
        key: key.into(),
        value: "1".into(),
    }
}

/// A good proposal gets the leader's outcome and index, a refused one its error.
async fn good_and_bad(node: &ClusterNode, addr: &str, deadline: Instant) {
    let ok = node
        .forward_propose(&set("a"), 2, addr.into(), deadline)
        .await;
    assert_eq!(ok.unwrap(), (Ok(Reply::Done), 7));
    let e = node
        .forward_propose(&set("bad"), 2, addr.into(), deadline)
        .await;
    assert!(
        matches!(&e, Err(ClusterError::Invalid(m)) if m == "no such setting"),
        "{e:?}"
    );
}

#[tokio::test]
async fn proposals_go_on_the_stream_and_errors_come_back_in_band() {
    let dir = tempfile::tempdir().unwrap();
    let node = follower(dir.path()).await;
    let addr = fake_leader(true).await;
    let deadline = Instant::now() + Duration::from_secs(5);
    good_and_bad(&node, &addr, deadline).await;
    // Several at once share the one stream, each answered by its own reply.
    let cmd = set("b");
    let calls = (0..20).map(|_| node.forward_propose(&cmd, 2, addr.clone(), deadline));
    for r in futures::future::join_all(calls).await {
        assert_eq!(r.unwrap().1, 7);
    }
    let links = node.forwarding.links.lock().unwrap();
    assert_eq!(links.len(), 1, "one stream to the leader");
    assert!(matches!(links.values().next(), Some(Link::Stream(_))));
    assert!(
        links.values().all(|l| match l {
            Link::Stream(l) => l.waiting.lock().unwrap().is_empty(),
            Link::Unary => false,
        }),
        "no waiter left behind"
    );
}

#[tokio::test]
async fn a_leader_without_the_stream_gets_unary_calls() {
    let dir = tempfile::tempdir().unwrap();
    let node = follower(dir.path()).await;
    let addr = fake_leader(false).await;
    let deadline = Instant::now() + Duration::from_secs(5);
    good_and_bad(&node, &addr, deadline).await;
    let links = node.forwarding.links.lock().unwrap();
    assert!(matches!(links.get(&(2, addr)), Some(Link::Unary)));
    assert_eq!(links.len(), 1);
}

#[tokio::test]
async fn a_leader_that_is_not_there_means_ask_again() {
    let dir = tempfile::tempdir().unwrap();
    let node = follower(dir.path()).await;
    // A port nobody listens on: the proposal certainly never left this node.
    let addr = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap().to_string()
    };
    let deadline = Instant::now() + Duration::from_secs(2);
    let e = node.forward_propose(&set("a"), 2, addr, deadline).await;
    assert!(matches!(e, Err(ClusterError::NotLeader)), "{e:?}");
}
