//! `loadgen provision`: users for `loadgen xmpp` in a presenced cluster, through the
//! admin API (the XMPP server has no in-band registration). With `--star-contacts K`
//! users 0..K get `<prefix>star` as an approved contact (they see its presence), the
//! same as `presencectl roster import`.

use std::sync::Arc;
use std::time::Instant;

use anyhow::Context;
use presenced_proto::admin::{ContactEntry, RosterAddRequest, SetSettingRequest, UserAddRequest};
use tokio::sync::Semaphore;
use tokio::task::JoinSet;

#[derive(clap::Args)]
pub struct ProvisionArgs {
    /// Admin gRPC address of any node.
    #[arg(long, default_value = "127.0.0.1:7201")]
    admin: String,
    #[arg(long, env = "PRESENCED_SECRET")]
    secret: String,
    /// Users <prefix>0 .. <prefix>N-1 (and <prefix>star).
    #[arg(long, default_value_t = 1000)]
    users: usize,
    #[arg(long, default_value = "lg")]
    prefix: String,
    /// Password; `{user}` is replaced by the user name.
    #[arg(long, default_value = "loadgen-pw")]
    password: String,
    /// The cluster's domain (contacts are JIDs).
    #[arg(long, default_value = "example.test")]
    domain: String,
    /// Users 0..K see <prefix>star (approved subscription).
    #[arg(long, default_value_t = 0)]
    star_contacts: usize,
    /// Admin calls in flight.
    #[arg(long, default_value_t = 16)]
    concurrency: usize,
}

pub async fn run(a: ProvisionArgs) -> anyhow::Result<()> {
    let secret = crate::Secret(a.secret.parse().context("secret must be ASCII")?);
    let admin = crate::connect(&a.admin, &secret).await?;
    let start = Instant::now();
    let sem = Arc::new(Semaphore::new(a.concurrency.max(1)));
    let mut set = JoinSet::new();
    let names: Vec<String> = std::iter::once(format!("{}star", a.prefix))
        .chain((0..a.users.max(a.star_contacts)).map(|i| format!("{}{i}", a.prefix)))
        .collect();
    for name in names.clone() {
        let (mut c, sem) = (admin.clone(), sem.clone());
        let password = a.password.replace("{user}", &name);
        set.spawn(async move {
            let _p = sem.acquire().await.expect("semaphore open");
            match c
                .user_add(UserAddRequest {
                    name: name.clone(),
                    password,
                })
                .await
            {
                Ok(_) => Ok(true),
                Err(s) if s.code() == tonic::Code::AlreadyExists => Ok(false),
                Err(s) => Err(anyhow::anyhow!("creating {name}: {}", s.message())),
            }
        });
    }
    let (mut created, mut existed) = (0, 0);
    while let Some(r) = set.join_next().await {
        if r?? { created += 1 } else { existed += 1 }
    }
    eprintln!(
        "users: {created} created, {existed} existed ({:.1} s)",
        start.elapsed().as_secs_f64()
    );
    if a.star_contacts > 0 {
        let mut c = admin.clone();
        if a.star_contacts >= 200 {
            c.settings_set(SetSettingRequest {
                key: "max_watchers".into(),
                value: "unlimited".into(),
            })
            .await
            .context("setting max_watchers")?;
        }
        let star = format!("{}star@{}", a.prefix, a.domain);
        let mut refused = 0;
        for chunk in (0..a.star_contacts).collect::<Vec<_>>().chunks(100) {
            let entries = chunk
                .iter()
                .map(|i| ContactEntry {
                    user: format!("{}{i}", a.prefix),
                    contact: star.clone(),
                    name: String::new(),
                    group: String::new(),
                })
                .collect();
            let r = c
                .roster_add(RosterAddRequest { entries })
                .await
                .context("roster add")?;
            for f in &r.get_ref().refused {
                if refused < 3 {
                    eprintln!(
                        "refused: {} -> {}: {} {}",
                        f.user, f.contact, f.code, f.reason
                    );
                }
                refused += 1;
            }
        }
        eprintln!(
            "roster: {} contacts of {star} provisioned, {refused} refused ({:.1} s)",
            a.star_contacts,
            start.elapsed().as_secs_f64()
        );
    }
    Ok(())
}
