//! Runs a test body under an overall deadline, and keeps a register of the
//! processes and mounts each running scenario owns so that a scenario past
//! its deadline can be cleaned up from outside (its own thread may be stuck
//! in a FUSE call that only killing the daemon can end).

use crate::mounts;
use std::cell::Cell;
use std::path::PathBuf;
use std::process::Child;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc;
use std::sync::{Arc, Mutex, Weak};
use std::time::Duration;

static NEXT_ID: AtomicU64 = AtomicU64::new(1);
static REGISTER: Mutex<Vec<Entry>> = Mutex::new(Vec::new());

thread_local! {
    /// The scenario the current thread's body belongs to.
    static SCOPE: Cell<Option<u64>> = const { Cell::new(None) };
}

struct Entry {
    id: u64,
    scope: u64,
    what: Resource,
}

enum Resource {
    Process { name: String, child: Weak<Mutex<Child>>, log: PathBuf },
    Mount(PathBuf),
}

/// Keeps a process or mount in the register while alive; dropping it
/// removes the entry (the owner has cleaned up itself).
#[must_use]
pub struct Registered(Option<u64>);

impl Drop for Registered {
    fn drop(&mut self) {
        if let Some(id) = self.0 {
            lock_register().retain(|e| e.id != id);
        }
    }
}

fn lock_register() -> std::sync::MutexGuard<'static, Vec<Entry>> {
    // A panic while holding the lock leaves the Vec consistent: keep going.
    REGISTER.lock().unwrap_or_else(|p| p.into_inner())
}

fn register(what: Resource) -> Registered {
    let Some(scope) = SCOPE.with(Cell::get) else {
        return Registered(None);
    };
    let id = NEXT_ID.fetch_add(1, Ordering::Relaxed);
    lock_register().push(Entry { id, scope, what });
    Registered(Some(id))
}

pub(crate) fn register_process(name: &str, child: &Arc<Mutex<Child>>, log: PathBuf) -> Registered {
    register(Resource::Process { name: name.to_string(), child: Arc::downgrade(child), log })
}

pub(crate) fn register_mount(path: PathBuf) -> Registered {
    register(Resource::Mount(path))
}

/// Runs `body` on its own thread and fails the test if it has not finished
/// within `timeout`, after killing (SIGKILL) every process the body started
/// through this harness and lazily unmounting its mounts. A panic in `body`
/// is the test's panic.
pub fn scenario<F>(timeout: Duration, body: F)
where
    F: FnOnce() + Send + 'static,
{
    let scope = NEXT_ID.fetch_add(1, Ordering::Relaxed);
    let name = std::thread::current().name().unwrap_or("scenario").to_string();
    let (done_tx, done_rx) = mpsc::channel::<()>();
    let handle = std::thread::Builder::new()
        .name(name.clone())
        .spawn(move || {
            SCOPE.with(|s| s.set(Some(scope)));
            // Dropped when the body returns or unwinds: either way, done.
            let _done = done_tx;
            body();
        })
        .expect("cannot spawn the scenario thread");

    match done_rx.recv_timeout(timeout) {
        Ok(()) | Err(mpsc::RecvTimeoutError::Disconnected) => {
            if let Err(panic) = handle.join() {
                std::panic::resume_unwind(panic);
            }
        }
        Err(mpsc::RecvTimeoutError::Timeout) => {
            let report = clean_up_scope(scope);
            // Killing the daemons ends any FUSE call the body was stuck in;
            // give it a moment to unwind so its Drops run, but do not wait on it.
            let _ = done_rx.recv_timeout(Duration::from_secs(10));
            panic!("scenario `{name}` did not finish within {timeout:?}; cleaned up:\n{report}");
        }
    }
}

/// Kills the scope's processes, then lazily unmounts its mounts. Returns a
/// report with the tail of each killed process's log.
fn clean_up_scope(scope: u64) -> String {
    let entries: Vec<Entry> = {
        let mut reg = lock_register();
        let (mine, rest) = reg.drain(..).partition(|e| e.scope == scope);
        *reg = rest;
        mine
    };
    let mut report = String::new();
    for e in &entries {
        if let Resource::Process { name, child, log } = &e.what {
            if let Some(child) = child.upgrade() {
                let mut child = child.lock().unwrap_or_else(|p| p.into_inner());
                if matches!(child.try_wait(), Ok(None)) {
                    let _ = child.kill();
                    let _ = child.wait();
                    report.push_str(&format!("  killed {name} (pid {})\n", child.id()));
                }
            }
            let tail = crate::process::tail(&crate::process::read_lossy(log), 40);
            report.push_str(&format!("  --- last lines of {} ---\n{tail}\n", log.display()));
        }
    }
    for e in &entries {
        if let Resource::Mount(path) = &e.what {
            if mounts::find(path).is_some() {
                mounts::force_unmount(path);
                report.push_str(&format!("  lazily unmounted {}\n", path.display()));
            }
        }
    }
    report
}
