//! Owners between the kernel's ids and the file table's names (NFSv4's
//! rule, see `proto::Owner`): a uid or gid is carried as its name in this
//! machine's user and group databases, or as its decimal digits when it has
//! none; a name is this machine's id for it, digits are that id, and an
//! empty or unknown name is the mounting user's (or group's). Lookups are
//! cached: the databases are asked once per id and name.

use parking_lot::Mutex;
use std::collections::HashMap;
use std::ffi::{CStr, CString};
use titorrent_tracker::proto::Owner;

pub struct Owners {
    /// The mounting user and group: what an unknown name becomes.
    uid: u32,
    gid: u32,
    cache: Mutex<Cache>,
}

#[derive(Default)]
struct Cache {
    user_names: HashMap<u32, String>,
    group_names: HashMap<u32, String>,
    uids: HashMap<String, u32>,
    gids: HashMap<String, u32>,
}

#[derive(Clone, Copy)]
enum Db {
    User,
    Group,
}

impl Owners {
    pub fn new(uid: u32, gid: u32) -> Owners {
        Owners { uid, gid, cache: Mutex::default() }
    }

    /// The owner a file made by `uid`/`gid` gets.
    pub fn owner(&self, uid: u32, gid: u32) -> Owner {
        Owner { user: self.user_name(uid), group: self.group_name(gid) }
    }

    pub fn user_name(&self, uid: u32) -> String {
        if let Some(n) = self.cache.lock().user_names.get(&uid) {
            return n.clone();
        }
        let n = name_of(Db::User, uid).unwrap_or_else(|| uid.to_string());
        self.cache.lock().user_names.insert(uid, n.clone());
        n
    }

    pub fn group_name(&self, gid: u32) -> String {
        if let Some(n) = self.cache.lock().group_names.get(&gid) {
            return n.clone();
        }
        let n = name_of(Db::Group, gid).unwrap_or_else(|| gid.to_string());
        self.cache.lock().group_names.insert(gid, n.clone());
        n
    }

    /// This machine's uid and gid for an owner.
    pub fn ids(&self, o: &Owner) -> (u32, u32) {
        (self.id(Db::User, &o.user), self.id(Db::Group, &o.group))
    }

    fn id(&self, db: Db, name: &str) -> u32 {
        let fallback = match db {
            Db::User => self.uid,
            Db::Group => self.gid,
        };
        if name.is_empty() {
            return fallback;
        }
        if let Some(id) = {
            let c = self.cache.lock();
            match db {
                Db::User => c.uids.get(name).copied(),
                Db::Group => c.gids.get(name).copied(),
            }
        } {
            return id;
        }
        let id = id_of(db, name).or_else(|| digits(name)).unwrap_or(fallback);
        let mut c = self.cache.lock();
        match db {
            Db::User => c.uids.insert(name.to_string(), id),
            Db::Group => c.gids.insert(name.to_string(), id),
        };
        id
    }
}

/// An id written as its decimal digits (no sign, no leading zero).
fn digits(name: &str) -> Option<u32> {
    let ok = name.bytes().all(|b| b.is_ascii_digit()) && (name == "0" || !name.starts_with('0'));
    ok.then(|| name.parse().ok()).flatten()
}

/// A buffer size for the reentrant lookups; grown on ERANGE.
const BUF: usize = 1024;

fn name_of(db: Db, id: u32) -> Option<String> {
    let mut buf = vec![0u8; BUF];
    loop {
        let (rc, name) = match db {
            Db::User => {
                // SAFETY: zeroed passwd is a valid out-parameter; buf outlives the call and
                // the name pointer is read before buf changes.
                let mut pw: libc::passwd = unsafe { std::mem::zeroed() };
                let mut out: *mut libc::passwd = std::ptr::null_mut();
                let rc = unsafe { libc::getpwuid_r(id, &mut pw, buf.as_mut_ptr().cast(), buf.len(), &mut out) };
                (rc, (rc == 0 && !out.is_null()).then(|| unsafe { CStr::from_ptr(pw.pw_name) }.to_string_lossy().into_owned()))
            }
            Db::Group => {
                // SAFETY: as above, for group.
                let mut gr: libc::group = unsafe { std::mem::zeroed() };
                let mut out: *mut libc::group = std::ptr::null_mut();
                let rc = unsafe { libc::getgrgid_r(id, &mut gr, buf.as_mut_ptr().cast(), buf.len(), &mut out) };
                (rc, (rc == 0 && !out.is_null()).then(|| unsafe { CStr::from_ptr(gr.gr_name) }.to_string_lossy().into_owned()))
            }
        };
        if rc == libc::ERANGE && buf.len() < 1 << 20 {
            buf.resize(buf.len() * 4, 0);
            continue;
        }
        // A name that could not travel (too long, odd characters) goes as digits.
        return name.filter(|n| titorrent_tracker::proto::validate_owner(&Owner { user: n.clone(), group: String::new() }).is_ok());
    }
}

fn id_of(db: Db, name: &str) -> Option<u32> {
    let c = CString::new(name).ok()?;
    let mut buf = vec![0u8; BUF];
    loop {
        let (rc, id) = match db {
            Db::User => {
                // SAFETY: as in `name_of`.
                let mut pw: libc::passwd = unsafe { std::mem::zeroed() };
                let mut out: *mut libc::passwd = std::ptr::null_mut();
                let rc = unsafe { libc::getpwnam_r(c.as_ptr(), &mut pw, buf.as_mut_ptr().cast(), buf.len(), &mut out) };
                (rc, (rc == 0 && !out.is_null()).then_some(pw.pw_uid))
            }
            Db::Group => {
                // SAFETY: as in `name_of`.
                let mut gr: libc::group = unsafe { std::mem::zeroed() };
                let mut out: *mut libc::group = std::ptr::null_mut();
                let rc = unsafe { libc::getgrnam_r(c.as_ptr(), &mut gr, buf.as_mut_ptr().cast(), buf.len(), &mut out) };
                (rc, (rc == 0 && !out.is_null()).then_some(gr.gr_gid))
            }
        };
        if rc == libc::ERANGE && buf.len() < 1 << 20 {
            buf.resize(buf.len() * 4, 0);
            continue;
        }
        return id;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_known_here_digits_as_ids_and_unknown_names_the_mounting_user() {
        let o = Owners::new(1234, 5678);
        assert_eq!(o.owner(0, 0), Owner { user: "root".into(), group: "root".into() });
        assert_eq!(o.ids(&Owner { user: "root".into(), group: "root".into() }), (0, 0));
        // An id without a name travels as digits and comes back as itself.
        let none = 3_999_999_999u32;
        assert_eq!(o.user_name(none), none.to_string());
        assert_eq!(o.ids(&Owner { user: none.to_string(), group: none.to_string() }), (none, none));
        // Unknown names, empty names (older entries) and odd digits: the mounting user.
        assert_eq!(o.ids(&Owner { user: "no-such-user-here".into(), group: "no-such-group".into() }), (1234, 5678));
        assert_eq!(o.ids(&Owner::default()), (1234, 5678));
        assert_eq!(o.ids(&Owner { user: "007".into(), group: "-1".into() }), (1234, 5678));
    }
}
