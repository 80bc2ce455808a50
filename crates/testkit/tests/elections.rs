//! Elections after a pre-vote (`crates/cluster/src/node/election.rs`), on a real
//! 3-node cluster in this process.

use std::time::{Duration, Instant};

use presenced_cluster::PreVoteRequest;
use presenced_testkit::TestCluster;

async fn leader(c: &TestCluster, skip: Option<usize>) -> usize {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        if let Some(i) = (0..c.nodes.len())
            .filter(|i| Some(*i) != skip)
            .find(|i| c.nodes[*i].node.is_leader())
        {
            return i;
        }
        assert!(Instant::now() < deadline, "no leader within 10 s");
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pre_votes_are_refused_while_the_leader_speaks() {
    let c = TestCluster::start(3).await;
    c.user("alice").await;
    let l = leader(&c, None).await;
    let f: Vec<usize> = (0..3).filter(|i| *i != l).collect();
    let ask = |candidate| PreVoteRequest {
        candidate,
        last_log_id: None,
    };
    let a = c.nodes[f[0]]
        .node
        .answer_pre_vote(ask(c.nodes[f[1]].id))
        .await;
    assert!(!a.granted && a.reason.contains("a leader spoke"), "{a:?}");
    let a = c.nodes[l].node.answer_pre_vote(ask(c.nodes[f[1]].id)).await;
    assert!(!a.granted && a.reason.contains("this node leads"), "{a:?}");
    // A healthy cluster holds no elections.
    tokio::time::sleep(Duration::from_secs(1)).await;
    assert_eq!(leader(&c, None).await, l);
    assert!(c.nodes.iter().all(|n| n.node.elections_started() == 0));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dead_leader_is_replaced_by_the_pre_vote_driver() {
    let mut c = TestCluster::start(3).await;
    c.user("alice").await;
    let l = leader(&c, None).await;
    let t = Instant::now();
    c.stop(l).await;
    let new = leader(&c, Some(l)).await;
    let took = t.elapsed();
    // The driver stood first (openraft's own timer would be 300 ms later at least),
    // and the cluster writes again.
    assert!(
        c.nodes[new].node.elections_started() >= 1,
        "node {} leads, but not by an election its driver started",
        c.nodes[new].id
    );
    assert!(took < Duration::from_secs(3), "a new leader after {took:?}");
    let out = c.nodes[new]
        .node
        .write(presenced_model::Command::SetSetting {
            key: "presence.max_contact_list_size".into(),
            value: "10".into(),
        })
        .await
        .expect("the majority writes again");
    assert!(out.is_ok(), "{out:?}");
}
