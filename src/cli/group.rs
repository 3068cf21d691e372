//! `titorrent create-group`, `invite`, `join`, `members` and `leave`: a member's place in a group.

use super::files::authenticated;
use super::InviteUrl;
use crate::state::{Membership, StateDir};
use crate::tracker_client::Connection;
use anyhow::{bail, Context};
use std::io::IsTerminal;
use std::path::Path;
use titorrent_tracker::calls::{self, GroupCreated};
use titorrent_tracker::proto::{Fingerprint, GroupId, MemberId};
use titorrent_tracker::tls::ClientTls;

/// Creates a group on the tracker at `tracker` with this member in it.
pub async fn create_group(
    st: &StateDir,
    tracker: &str,
    group: &str,
    tracker_key: Option<Fingerprint>,
    admin_token: &Path,
    member: &str,
) -> anyhow::Result<()> {
    let admin_token = std::fs::read_to_string(admin_token)
        .with_context(|| format!("reading the admin token from {}", admin_token.display()))?
        .trim()
        .to_string();
    let tls = ClientTls { identity: st.identity()?, pin: tracker_key };
    let mut conn = Connection::connect(tracker, &tls).await.with_context(|| format!("connecting to {tracker}"))?;
    let call = calls::CreateGroup { admin_token, group_name: group.to_string(), member_name: member.to_string(), peer_addr: None };
    let GroupCreated { group: g, member: m } = conn.call(call).await?;
    save_membership(st, tracker, conn.tracker_key(), group, member, g, m)?;
    println!("created group {group}; you are {member}");
    if tracker_key.is_none() {
        println!("pinned the tracker's key {} (compare it with what the tracker printed)", conn.tracker_key());
    }
    Ok(())
}

pub async fn invite(st: &StateDir, ttl_secs: u64, uses: u32) -> anyhow::Result<()> {
    let m = st.load()?;
    let mut conn = authenticated(st, &m).await?;
    let code = conn.call(calls::CreateInvite { ttl_ms: ttl_secs.saturating_mul(1000), uses }).await?.code;
    let tracker_key = m.tracker_key().map_err(anyhow::Error::msg)?;
    println!("{}", InviteUrl { tracker: m.tracker.clone(), group: m.group, code, tracker_key });
    Ok(())
}

pub async fn join(st: &StateDir, invite: &str, member_name: &str) -> anyhow::Result<()> {
    let inv = InviteUrl::parse(invite).map_err(|e| anyhow::anyhow!("invitation {invite:?}: {e}"))?;
    let tls = ClientTls { identity: st.identity()?, pin: Some(inv.tracker_key) };
    let mut conn = Connection::connect(&inv.tracker, &tls).await.with_context(|| format!("connecting to {}", inv.tracker))?;
    let group = GroupId(inv.group);
    let call = calls::Join { group, invite: inv.code.clone(), member_name: member_name.to_string(), peer_addr: None };
    let member = conn.call(call).await?.member;
    let group_name = match conn.call(calls::Authenticate { group, member, peer_addr: None }).await {
        Ok(a) => a.group_name,
        Err(_) => format!("group-{}", inv.group),
    };
    save_membership(st, &inv.tracker, inv.tracker_key, &group_name, member_name, group, member)?;
    println!("joined {group_name} as {member_name}");
    Ok(())
}

pub async fn members(st: &StateDir) -> anyhow::Result<()> {
    let m = st.load()?;
    let mut conn = authenticated(st, &m).await?;
    for mem in conn.call(calls::ListMembers).await? {
        let addr = mem.peer_addr.map(|a| a.to_string()).unwrap_or_else(|| "-".into());
        println!("{}  {}  {}", mem.name, if mem.online { "online" } else { "offline" }, addr);
    }
    Ok(())
}

pub async fn leave(st: StateDir, yes: bool) -> anyhow::Result<()> {
    let m = st.load()?;
    if !yes {
        if !std::io::stdin().is_terminal() {
            bail!("leaving {} is permanent: run again with --yes", m.group_name);
        }
        eprint!("Leave group {:?} as {:?} for good? Type the group name to confirm: ", m.group_name, m.member_name);
        let mut answer = String::new();
        std::io::stdin().read_line(&mut answer)?;
        if answer.trim() != m.group_name {
            bail!("not confirmed: still a member of {}", m.group_name);
        }
    }
    let mut conn = authenticated(&st, &m).await?;
    conn.call(calls::Leave).await.context("leaving")?;
    let member_file = st.root().join("member.toml");
    std::fs::remove_file(&member_file).with_context(|| format!("left, but cannot remove {}", member_file.display()))?;
    println!("left {} as {}; {} holds no membership any more", m.group_name, m.member_name, st.root().display());
    Ok(())
}

/// Writes the membership a create-group or join got.
pub fn save_membership(
    st: &StateDir,
    tracker: &str,
    tracker_key: Fingerprint,
    group_name: &str,
    member_name: &str,
    group: GroupId,
    member: MemberId,
) -> anyhow::Result<()> {
    st.save(&Membership {
        tracker: tracker.to_string(),
        group: group.0,
        group_name: group_name.to_string(),
        member: member.0,
        member_name: member_name.to_string(),
        tracker_key: Some(tracker_key.to_string()),
    })?;
    Ok(())
}

