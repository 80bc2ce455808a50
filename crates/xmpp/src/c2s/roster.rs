//! Rosters (RFC 6121 §2) and roster versioning (XEP-0237): get, set with the
//! validation of §2.3.3, remove, and pushes.

use presenced_router::RosterView;

use super::iq::Req;
use super::*;

pub(super) fn roster_item(i: &RosterItem) -> Element {
    let mut e = Element::new("item", NS_ROSTER)
        .with_attr("jid", i.jid.clone())
        .with_attr("name", i.name.clone())
        .with_attr("subscription", i.subscription.as_str());
    if i.ask {
        e.set_attr("ask", "subscribe");
    }
    for g in &i.groups {
        e.push(Element::new("group", NS_ROSTER).with_text(g.clone()));
    }
    e
}

/// What a roster set asks for, once it passed RFC 6121 §2.3.3.
enum SetRequest {
    Remove(String),
    Update {
        jid: String,
        name: Option<String>,
        groups: Vec<String>,
    },
}

fn parse_set(q: &Element) -> Result<SetRequest, RouteError> {
    let items: Vec<&Element> = q.elements().filter(|i| i.name == "item").collect();
    let [item] = items.as_slice() else {
        return Err(RouteError::BadRequest(format!(
            "a roster set carries exactly one item, not {}",
            items.len()
        )));
    };
    let Some(jid) = item.attr("jid") else {
        return Err(RouteError::BadRequest("a roster item needs a jid".into()));
    };
    if item.attr("subscription") == Some("remove") {
        return Ok(SetRequest::Remove(jid.to_string()));
    }
    let mut groups: Vec<String> = Vec::new();
    for g in item.elements().filter(|g| g.name == "group") {
        let name = g.text();
        if name.is_empty() {
            return Err(RouteError::NotAcceptable("a group name is empty".into()));
        }
        if groups.contains(&name) {
            return Err(RouteError::BadRequest(format!(
                "group {name:?} is listed twice"
            )));
        }
        groups.push(name);
    }
    Ok(SetRequest::Update {
        jid: jid.to_string(),
        name: item.attr("name").map(str::to_string),
        groups,
    })
}

impl Conn {
    fn roster_get(&mut self, s: &Session, req: Req<'_>) {
        s.roster_requested();
        let known = req.payload.attr("ver").and_then(|v| v.parse::<u64>().ok());
        let q = match s.roster() {
            // XEP-0237: nothing changed; pushes follow.
            RosterView { version, .. } if known == Some(version) => None,
            RosterView { version, items } => {
                let mut q = Element::new("query", NS_ROSTER).with_attr("ver", version.to_string());
                for item in &items {
                    q.push(roster_item(item));
                }
                Some(q)
            }
        };
        self.out.push(&iq_result(req.iq, q));
    }

    async fn roster_set(&mut self, s: &Session, req: Req<'_>) {
        let res = match parse_set(req.payload) {
            Err(e) => Err(e),
            Ok(SetRequest::Remove(j)) => match self.parse_jid(&j) {
                Ok(a) => s.roster_remove(&a).await,
                Err(e) => Err(e),
            },
            Ok(SetRequest::Update { jid, name, groups }) => match self.parse_jid(&jid) {
                Ok(a) => s.roster_set(&a, name, groups).await,
                Err(e) => Err(e),
            },
        };
        match res {
            Ok(()) => self.out.push(&iq_result(req.iq, None)),
            Err(e) => self.out.push(&iq_error(req.iq, route_error(&e))),
        }
    }

    /// A roster push (RFC 6121 §2.1.6).
    pub(super) fn roster_push(
        &mut self,
        s: &Session,
        jid: String,
        item: Option<Box<RosterItem>>,
        version: u64,
    ) {
        let item_el = match item {
            Some(i) => roster_item(&i),
            None => Element::new("item", NS_ROSTER)
                .with_attr("jid", jid)
                .with_attr("subscription", "remove"),
        };
        let q = Element::new("query", NS_ROSTER)
            .with_attr("ver", version.to_string())
            .with_child(item_el);
        let iq = Element::new("iq", NS_CLIENT)
            .with_attr("type", "set")
            .with_attr("id", format!("push-{version}"))
            .with_attr("to", self.full_jid(s))
            .with_child(q);
        self.out.push(&iq);
    }
}

pub(super) const FEATURE: Feature = Feature {
    server: &[NS_ROSTER, NS_ROSTERVER],
    account: &[],
    iqs: &[IqRoute {
        name: "query",
        ns: NS_ROSTER,
        scope: Scope::Own,
        get_only: false,
        handler: |c, s, req| {
            Box::pin(async move {
                if req.is_get() {
                    c.roster_get(s, req);
                } else {
                    c.roster_set(s, req).await;
                }
                Ok(())
            })
        },
    }],
};
