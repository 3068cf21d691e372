//! `titorrent remove`, `admin` and `lock-limit`: the owner's and admins' say over who is in the group and how long a lock may last.

use super::files::authenticated;
use crate::state::StateDir;
use anyhow::{bail, Context};
use titorrent_tracker::calls;
use titorrent_tracker::proto::MemberId;
use crate::tracker_client::Connection;

/// The id of the member called `name`.
async fn member_named(conn: &mut Connection, name: &str) -> anyhow::Result<MemberId> {
    let ms = conn.call(calls::ListMembers).await?;
    let mut found = ms.iter().filter(|m| m.name == name);
    match (found.next(), found.next()) {
        (Some(m), None) => Ok(m.id),
        (Some(_), Some(_)) => bail!("more than one member is called {name:?}"),
        (None, _) => bail!("no member is called {name:?} (see titorrent members)"),
    }
}

pub async fn remove(st: &StateDir, name: &str) -> anyhow::Result<()> {
    let m = st.load()?;
    let mut conn = authenticated(st, &m).await?;
    let id = member_named(&mut conn, name).await?;
    conn.call(calls::RemoveMember { member: id }).await.with_context(|| format!("removing {name}"))?;
    println!("removed {name}: its key no longer works");
    Ok(())
}

pub async fn set_admin(st: &StateDir, name: &str, admin: bool) -> anyhow::Result<()> {
    let m = st.load()?;
    let mut conn = authenticated(st, &m).await?;
    let id = member_named(&mut conn, name).await?;
    conn.call(calls::SetAdmin { member: id, admin }).await.with_context(|| format!("changing {name}'s role"))?;
    println!("{name} is {}", if admin { "an admin" } else { "a member" });
    Ok(())
}

pub async fn lock_limit(st: &StateDir, limit: std::time::Duration) -> anyhow::Result<()> {
    let m = st.load()?;
    let mut conn = authenticated(st, &m).await?;
    let max_ms = limit.as_millis() as u64;
    conn.call(calls::SetLockLimit { max_ms }).await.context("setting the lock limit")?;
    if max_ms == 0 {
        println!("explicit locks last at most the tracker's maximum (one week)");
    } else {
        println!("explicit locks last at most {} s", limit.as_secs());
    }
    Ok(())
}
