//! Unit tests of the guard.

use super::*;

fn cfg() -> GuardConfig {
    GuardConfig {
        max_connections: 5,
        max_unauthenticated_per_ip: 2,
        auth_failures_per_ip: 3,
        auth_failures_per_account: 4,
        auth_failure_window: Duration::from_secs(60),
        auth_block: Duration::from_secs(60),
        auth_concurrency: 1,
        auth_queue: 2,
    }
}

fn ip(s: &str) -> IpAddr {
    s.parse().unwrap()
}

#[test]
fn the_caps_refuse_and_release() {
    let g = Guard::new(cfg());
    let a1 = g.admit(ip("10.0.0.1")).unwrap();
    let mut a2 = g.admit(ip("10.0.0.1")).unwrap();
    assert_eq!(
        g.admit(ip("10.0.0.1")).err(),
        Some(Refused::PerIpUnauthenticated)
    );
    // Authenticated connections do not count against their address.
    a2.authenticated();
    let a3 = g.admit(ip("10.0.0.1")).unwrap();
    let b1 = g.admit(ip("10.0.0.2")).unwrap();
    let _b2 = g.admit(ip("10.0.0.2")).unwrap();
    assert_eq!(g.admit(ip("10.0.0.3")).err(), Some(Refused::MaxConnections));
    drop(a1);
    drop(b1);
    let _c = g.admit(ip("10.0.0.3")).unwrap();
    drop(a3);
    drop(a2);
    assert_eq!(g.open.load(Ordering::Relaxed), 2);
    assert!(
        lock(&g.unauth).get(&ip("10.0.0.1")).is_none(),
        "entries go at zero"
    );
}

#[test]
fn ipv6_addresses_count_per_64() {
    assert_eq!(ip_key(ip("2001:db8:1:2:aaaa::1")), ip("2001:db8:1:2::"));
    assert_eq!(ip_key(ip("::ffff:192.0.2.7")), ip("192.0.2.7"));
    let g = Guard::new(cfg());
    let _a = g.admit(ip("2001:db8:1:2::1")).unwrap();
    let _b = g.admit(ip("2001:db8:1:2::2")).unwrap();
    assert_eq!(
        g.admit(ip("2001:db8:1:2::3")).err(),
        Some(Refused::PerIpUnauthenticated)
    );
    assert!(g.admit(ip("2001:db8:1:3::1")).is_ok());
}

#[test]
fn an_address_is_blocked_after_its_failures() {
    let g = Guard::new(cfg());
    let bad = ip("10.0.0.9");
    for user in ["a", "b"] {
        assert_eq!(g.check(bad, Some(user)), Ok(()));
        assert_eq!(g.failed(bad, Some(user), None), Blocks::default());
    }
    assert!(g.failed(bad, Some("c"), None).ip);
    assert_eq!(g.check(bad, None), Err(Refused::AuthIpBlocked));
    assert_eq!(g.check(ip("10.0.0.10"), Some("a")), Ok(()));
}

#[test]
fn a_throttled_account_refuses_only_the_addresses_that_failed_for_it() {
    let g = Guard::new(cfg());
    let attackers = ["10.1.0.1", "10.1.0.2", "10.1.0.3", "10.1.0.4"];
    let mut blocked = false;
    for a in attackers {
        blocked |= g.failed(ip(a), Some("alice"), None).account;
    }
    assert!(blocked, "the fourth failure throttles the account");
    for a in attackers {
        assert_eq!(
            g.check(ip(a), Some("alice")),
            Err(Refused::AuthAccountThrottled)
        );
        assert_eq!(
            g.check(ip(a), Some("bob")),
            Ok(()),
            "other accounts are not affected"
        );
    }
    // The owner, elsewhere, still tries (and logs in).
    assert_eq!(g.check(ip("10.9.9.9"), Some("alice")), Ok(()));
    g.succeeded(ip("10.1.0.1"), "alice", None);
    assert_eq!(g.check(ip("10.1.0.1"), Some("alice")), Ok(()));
}

#[test]
fn failures_outside_the_window_are_forgotten() {
    let mut r = Record::new(Instant::now());
    let w = Duration::from_millis(10);
    assert!(!r.fail(Instant::now(), 2, w, w));
    std::thread::sleep(Duration::from_millis(20));
    assert!(!r.fail(Instant::now(), 2, w, w), "the window restarted");
    assert!(r.fail(Instant::now(), 2, w, w));
}

#[test]
fn the_cap_stays_below_the_open_file_limit() {
    assert_eq!(connection_cap(0, Some(20_000)), (18_000, None));
    assert_eq!(connection_cap(5_000, Some(20_000)), (5_000, None));
    assert_eq!(connection_cap(50_000, Some(20_000)), (18_000, Some(20_000)));
    assert_eq!(connection_cap(0, Some(1024)), (896, None));
    assert_eq!(connection_cap(0, None), (10_000, None));
}

/// Run one verification per entry of `who` (the class of its address), started 5 ms
/// apart, each taking 50 ms; the order they ran in (by index), and the refused.
async fn run_verifications(g: &Arc<Guard>, who: &[Class]) -> (Vec<usize>, Vec<usize>) {
    let running = Arc::new(AtomicUsize::new(0));
    let order = Arc::new(Mutex::new(Vec::new()));
    let mut tasks = Vec::new();
    for (i, class) in who.iter().enumerate() {
        let (g, running, order) = (g.clone(), running.clone(), order.clone());
        let mut attempt = Attempt {
            guard: g.clone(),
            key: ip("10.0.0.1"),
            account: format!("u{i}"),
            counted: false,
            class: *class,
        };
        tasks.push(tokio::spawn(async move {
            g.verify(&mut attempt, move || {
                assert_eq!(running.fetch_add(1, Ordering::SeqCst), 0, "one at a time");
                lock(&order).push(i);
                std::thread::sleep(Duration::from_millis(50));
                running.fetch_sub(1, Ordering::SeqCst);
            })
            .await
        }));
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    let mut busy = Vec::new();
    for (i, t) in tasks.into_iter().enumerate() {
        match t.await.unwrap() {
            Ok(()) => {}
            Err(Refused::AuthBusy) => busy.push(i),
            Err(e) => panic!("{e:?}"),
        }
    }
    let order = lock(&order).clone();
    (order, busy)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn verifications_are_bounded_and_the_excess_refused() {
    let g = Guard::new(cfg());
    // One runs, two wait, the other three are refused.
    let (order, busy) = run_verifications(&g, &[Class::Suspect; 6]).await;
    assert_eq!(order, vec![0, 1, 2]);
    assert_eq!(busy, vec![3, 4, 5]);
    assert_eq!(lock(&g.pool.st).running, 0, "every slot came back");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn clean_addresses_go_before_suspect_ones() {
    let g = Guard::new(cfg());
    // 0 runs; 1 and 2 (suspect) wait; 3 (clean) finds the line full and takes the
    // place of 2, then runs before 1.
    let s = Class::Suspect;
    let (order, busy) = run_verifications(&g, &[s, s, s, Class::Clean]).await;
    assert_eq!(order, vec![0, 3, 1]);
    assert_eq!(busy, vec![2]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn addresses_that_logged_in_go_before_a_burst_of_fresh_ones() {
    let g = Guard::new(cfg());
    // A burst from fresh addresses fills the line with clean attempts (none has
    // failed yet); one from an address that just logged in takes the newest one's
    // place and runs next.
    let c = Class::Clean;
    let (order, busy) = run_verifications(&g, &[c, c, c, Class::Trusted]).await;
    assert_eq!(order, vec![0, 3, 1]);
    assert_eq!(busy, vec![2]);
}

#[test]
fn a_successful_login_makes_its_address_trusted() {
    let g = Guard::new(cfg());
    let a = ip("10.3.0.1");
    assert_eq!(g.begin(a, "x").unwrap().class, Class::Clean);
    g.succeeded(a, "x", None);
    assert_eq!(g.begin(a, "x").unwrap().class, Class::Trusted);
}

#[test]
fn a_burst_of_attempts_from_one_address_is_not_refused_for_being_under_way() {
    let g = Guard::new(cfg());
    let a = ip("10.2.0.1");
    // A NAT after a restart: many logins at once from a fresh address (budget 3).
    let storm: Vec<_> = (0..10)
        .map(|i| g.begin(a, &format!("u{i}")).unwrap())
        .collect();
    assert!(storm.iter().all(|at| at.class == Class::Clean));
    drop(storm);
    let after = g.begin(a, "v").unwrap();
    assert_eq!(after.class, Class::Clean, "nothing failed");
}

#[test]
fn attempts_being_decided_count_against_the_address() {
    let g = Guard::new(cfg());
    let a = ip("10.2.0.2");
    let mut at: Vec<_> = (0..5)
        .map(|i| g.begin(a, &format!("u{i}")).unwrap())
        .collect();
    // Three decided at once take the budget of three until their outcome is known.
    for x in &mut at[..3] {
        g.decide(x).unwrap();
    }
    assert_eq!(g.decide(&mut at[3]).err(), Some(Refused::AuthIpBlocked));
    assert_eq!(g.begin(a, "w").err(), Some(Refused::AuthIpBlocked));
    // Deciding again does not count twice, nor refuse what was admitted.
    g.decide(&mut at[0]).unwrap();
    // One fails, two succeed: one of three spent, so the other two may be decided.
    let mut it = at.drain(..);
    g.failed(a, Some("u0"), it.next());
    g.succeeded(a, "u1", it.next());
    g.succeeded(a, "u2", it.next());
    for (i, mut x) in it.enumerate() {
        g.decide(&mut x).unwrap();
        g.failed(a, Some(&format!("u{}", i + 3)), Some(x));
    }
    // Three verified failures: the address is blocked.
    assert_eq!(g.begin(a, "w").err(), Some(Refused::AuthIpBlocked));
}

#[test]
fn an_attempt_begun_before_the_budget_ran_out_is_refused_when_decided() {
    let g = Guard::new(cfg());
    let a = ip("10.2.0.3");
    let mut late = g.begin(a, "late").unwrap();
    for i in 0..3 {
        let mut x = g.begin(a, &format!("u{i}")).unwrap();
        g.decide(&mut x).unwrap();
        g.failed(a, Some(&format!("u{i}")), Some(x));
    }
    assert_eq!(g.decide(&mut late).err(), Some(Refused::AuthIpBlocked));
}

#[test]
fn a_trusted_address_logs_in_many_at_once_until_it_fails() {
    let g = Guard::new(cfg());
    let a = ip("10.4.0.1");
    let mut x = g.begin(a, "x").unwrap();
    g.decide(&mut x).unwrap();
    g.succeeded(a, "x", None);
    drop(x);
    // Trusted and clean: its attempts being decided do not count.
    let mut storm: Vec<_> = (0..10)
        .map(|i| g.begin(a, &format!("u{i}")).unwrap())
        .collect();
    assert!(storm.iter().all(|at| at.class == Class::Trusted));
    for at in &mut storm {
        g.decide(at).unwrap();
    }
    // A failure: those being decided count against the budget again.
    g.failed(a, Some("u0"), None);
    assert_eq!(g.begin(a, "w").err(), Some(Refused::AuthIpBlocked));
    drop(storm);
    assert!(
        g.begin(a, "w").is_ok(),
        "one failure of three, none being decided"
    );
}

#[tokio::test]
async fn a_failing_accept_backs_off_instead_of_spinning() {
    let mut calls = 0;
    let t0 = std::time::Instant::now();
    let v = accept_with_backoff(|| {
        calls += 1;
        let n = calls;
        async move {
            if n <= 5 {
                Err(std::io::Error::from_raw_os_error(
                    rustix::io::Errno::MFILE.raw_os_error(),
                ))
            } else {
                Ok(n)
            }
        }
    })
    .await;
    assert_eq!(v, 6);
    // 10 + 20 + 40 + 80 + 160 ms of back-off for five failures.
    assert!(
        t0.elapsed() >= Duration::from_millis(300),
        "{:?}",
        t0.elapsed()
    );
}
