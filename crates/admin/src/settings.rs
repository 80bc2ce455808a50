//! Cluster settings: showing, setting and resetting them.

use presenced_model::settings::{self, Value};
use presenced_model::{Command, Reply};
use presenced_proto::admin::*;
use tonic::Status;

use crate::{AdminService, cluster, refusal};

fn setting_msg(def: &settings::SettingDef, value: Value) -> Setting {
    let default = presenced_model::Settings::default()
        .get(def.key)
        .expect("known key");
    Setting {
        key: def.key.to_string(),
        value: value.to_string(),
        default_value: default.to_string(),
        is_default: default == value,
        kind: def.kind.to_string(),
        help: def.help.to_string(),
    }
}

/// The setting as the state machine applied it (this node's replica may trail by a few
/// milliseconds, so the leader's reply is the answer, not a local read).
fn applied_setting(def: &settings::SettingDef, reply: Reply) -> Result<Setting, Status> {
    match reply {
        Reply::Setting { value, .. } => Ok(setting_msg(
            def,
            settings::parse_value(def, &value).map_err(refusal)?,
        )),
        other => Err(Status::internal(format!("unexpected reply {other:?}"))),
    }
}

pub(crate) async fn show(svc: &AdminService) -> Result<SettingsReply, Status> {
    let entries = svc
        .node
        .linearizable(|s| s.settings().entries())
        .await
        .map_err(cluster)?;
    Ok(SettingsReply {
        settings: entries
            .into_iter()
            .map(|(d, v, _)| setting_msg(d, v))
            .collect(),
    })
}

pub(crate) async fn set(svc: &AdminService, r: SetSettingRequest) -> Result<Setting, Status> {
    let SetSettingRequest { key, value } = r;
    // Validate here for a quick answer; apply validates again deterministically.
    let def = settings::resolve_key(&key).map_err(refusal)?;
    settings::parse_value(def, &value).map_err(refusal)?;
    let reply = svc
        .apply(Command::SetSetting {
            key: def.key.into(),
            value,
        })
        .await?;
    applied_setting(def, reply)
}

pub(crate) async fn reset(svc: &AdminService, r: KeyRequest) -> Result<Setting, Status> {
    let key = r.key;
    let def = settings::resolve_key(&key).map_err(refusal)?;
    let reply = svc
        .apply(Command::ResetSetting {
            key: def.key.into(),
        })
        .await?;
    applied_setting(def, reply)
}
