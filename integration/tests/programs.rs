//! Ordinary programs on one member's mount, the result checked byte for
//! byte on another member's: an editor with its swap file, `sed -i`, `cp -a`,
//! `mv`, `rsync -a`, `tar x`, git, and a program that saves by writing a
//! temporary file and renaming it over the original. Each uses the mount
//! the way it uses any directory (temporary names, renames over existing
//! files, chmod and utimens after writing), which is what these check.
//!
//! Needs root, /dev/fuse, fusermount3, the binaries built (`cargo build
//! --workspace`), and vim, rsync, git, tar, python3 and getfattr
//! (.ci/run installs them).

use std::fs;
use std::path::Path;
use std::time::Duration;
use titorrent_integration::programs::{
    names, program, require_program, run, run_ok, wait_for_content, wait_for_tree, write_sample_tree, Compare, Seen, Tree, Watcher, SEE,
};
use titorrent_integration::{alice_and_bob, scenario, wait_for};

fn temp_dir(prefix: &str) -> tempfile::TempDir {
    tempfile::Builder::new().prefix(prefix).tempdir().expect("cannot create a temp dir")
}

#[test]
fn vim_saves_an_edit_made_with_its_swap_file_in_the_mount() {
    scenario(Duration::from_secs(120), || {
        require_program("vim", "vim");
        let (_tracker, alice, bob) = alice_and_bob();
        let home = temp_dir("titorrent-vim-home-");
        fs::create_dir(alice.path("docs")).unwrap();
        let original = b"alpha\nbanana\ncabana\n";
        fs::write(alice.path("docs/notes.txt"), original).unwrap();
        wait_for_content(&bob, "docs/notes.txt", original, SEE);

        // Vim as installed, no vimrc of this machine's (HOME is empty), swap
        // file and all. While the buffer is open, list the directory on
        // alice's mount, and wait (at most 10 s) for bob's mount to show the
        // swap file too: it is a file like any other in the shared folder.
        let during = home.path().join("during-alice");
        let during_bob = home.path().join("during-bob");
        let bob_docs = bob.path("docs");
        let watch_bob = format!(
            "silent !for i in $(seq 200); do ls -a {b} | grep -qx .notes.txt.swp && break; sleep 0.05; done; ls -a {b} > {o}",
            b = bob_docs.display(),
            o = during_bob.display()
        );
        let out = run(program("vim", &alice.path("docs"), home.path()).args([
            "-c",
            ":%s/a/o/g",
            "-c",
            &format!("silent !ls -a > {}", during.display()),
            "-c",
            &watch_bob,
            "-c",
            ":wq",
            "notes.txt",
        ]));
        assert!(out.status.success(), "vim exited {}; stderr: {}", out.status, out.stderr);
        let listed = fs::read_to_string(&during).expect("vim ran `ls -a` during the edit");
        assert!(
            listed.lines().any(|l| l == ".notes.txt.swp"),
            "no swap file in alice's docs/ during the edit; `ls -a` showed:\n{listed}"
        );
        let listed_bob = fs::read_to_string(&during_bob).expect("vim ran `ls -a` on bob's mount during the edit");
        assert!(
            listed_bob.lines().any(|l| l == ".notes.txt.swp"),
            "bob's docs/ never showed alice's swap file during the edit; `ls -a` showed:\n{listed_bob}"
        );

        let edited = b"olpho\nbonono\ncobono\n";
        assert_eq!(fs::read(alice.path("docs/notes.txt")).unwrap(), edited, "alice reads her saved edit");
        wait_for_content(&bob, "docs/notes.txt", edited, SEE);
        // Vim removed its swap file (and any backup) when it quit: gone on both.
        for p in [&alice, &bob] {
            wait_for(SEE, &format!("{}'s docs/ holds only notes.txt after vim quit", p.name()), || {
                let n = names(&p.path("docs"));
                if n == ["notes.txt"] { Ok(()) } else { Err(format!("{n:?}")) }
            });
        }
        assert_eq!(fs::metadata(bob.path("docs/notes.txt")).unwrap().len(), edited.len() as u64);
    });
}

#[test]
fn sed_in_place_replaces_the_file_keeping_its_mode() {
    scenario(Duration::from_secs(120), || {
        require_program("sed", "sed");
        let (_tracker, alice, bob) = alice_and_bob();
        let home = temp_dir("titorrent-sed-home-");
        fs::create_dir_all(alice.path("etc/app")).unwrap();
        let conf = alice.path("etc/app/app.conf");
        fs::write(&conf, b"port = 80\nhost = old.example\nport_admin = 8080\n").unwrap();
        fs::set_permissions(&conf, std::os::unix::fs::PermissionsExt::from_mode(0o640)).unwrap();
        wait_for_content(&bob, "etc/app/app.conf", b"port = 80\nhost = old.example\nport_admin = 8080\n", SEE);

        run_ok(program("sed", &alice.path("etc/app"), home.path()).args(["-i", "-e", "s/old/new/", "-e", "s/^port = 80$/port = 8000/", "app.conf"]));
        let want = b"port = 8000\nhost = new.example\nport_admin = 8080\n";
        assert_eq!(fs::read(&conf).unwrap(), want, "alice reads sed's result");
        wait_for_content(&bob, "etc/app/app.conf", want, SEE);
        wait_for(SEE, "bob sees app.conf alone in etc/app, mode 0640", || {
            let n = names(&bob.path("etc/app"));
            let mode = fs::metadata(bob.path("etc/app/app.conf")).map_err(|e| e.to_string())?.permissions();
            let mode = std::os::unix::fs::PermissionsExt::mode(&mode) & 0o7777;
            if n == ["app.conf"] && mode == 0o640 { Ok(()) } else { Err(format!("{n:?}, mode {mode:o}")) }
        });
    });
}

#[test]
fn cp_a_of_a_tree_arrives_with_bytes_modes_and_mtimes() {
    scenario(Duration::from_secs(120), || {
        let (_tracker, alice, bob) = alice_and_bob();
        let home = temp_dir("titorrent-cp-home-");
        let src = home.path().join("project");
        fs::create_dir(&src).unwrap();
        let expected = write_sample_tree(&src, 11);

        run_ok(program("cp", home.path(), home.path()).arg("-a").arg(&src).arg(alice.path("project")));
        wait_for_tree("alice", &alice.path("project"), &expected, Compare::ALL, SEE);
        wait_for_tree("bob", &bob.path("project"), &expected, Compare::ALL, SEE);
    });
}

#[test]
fn mv_moves_files_and_directories_across_subdirectories() {
    scenario(Duration::from_secs(120), || {
        let (_tracker, alice, bob) = alice_and_bob();
        let home = temp_dir("titorrent-mv-home-");
        for d in ["inbox/2024", "archive"] {
            fs::create_dir_all(alice.path(d)).unwrap();
        }
        fs::write(alice.path("inbox/todo.txt"), b"buy milk\n").unwrap();
        fs::write(alice.path("inbox/2024/jan.txt"), b"january\n").unwrap();
        fs::write(alice.path("inbox/2024/feb.txt"), b"february\n").unwrap();
        wait_for_content(&bob, "inbox/2024/feb.txt", b"february\n", SEE);

        let mnt = alice.mountpoint();
        // A file into another directory under a new name, then a whole
        // directory into another one.
        run_ok(program("mv", mnt, home.path()).args(["inbox/todo.txt", "archive/done.txt"]));
        run_ok(program("mv", mnt, home.path()).args(["inbox/2024", "archive/"]));

        let expected = Tree::read(alice.mountpoint()).unwrap();
        assert_eq!(
            expected.paths(),
            ["archive", "archive/2024", "archive/2024/feb.txt", "archive/2024/jan.txt", "archive/done.txt", "inbox"],
            "alice's tree after the moves"
        );
        wait_for_tree("bob", bob.mountpoint(), &expected, Compare::BYTES_AND_MODES, SEE);
        assert_eq!(fs::read(bob.path("archive/2024/jan.txt")).unwrap(), b"january\n");
        // And back, from bob's side.
        run_ok(program("mv", bob.mountpoint(), home.path()).args(["archive/2024", "inbox/2024"]));
        wait_for(SEE, "alice sees inbox/2024 back and archive/2024 gone", || {
            let back = fs::read(alice.path("inbox/2024/feb.txt")).map_err(|e| e.to_string())?;
            let gone = !alice.path("archive/2024").exists();
            if back == b"february\n" && gone { Ok(()) } else { Err(format!("feb.txt {back:?}, archive/2024 gone: {gone}")) }
        });
    });
}

#[test]
fn rsync_a_mirrors_a_tree_and_updates_it_through_its_temp_files() {
    scenario(Duration::from_secs(150), || {
        require_program("rsync", "rsync");
        let (_tracker, alice, bob) = alice_and_bob();
        let home = temp_dir("titorrent-rsync-home-");
        let src = home.path().join("site");
        fs::create_dir(&src).unwrap();
        let first = write_sample_tree(&src, 21);
        let dst = alice.path("mirror");

        let rsync = |extra: &[&str]| {
            let mut cmd = program("rsync", home.path(), home.path());
            cmd.arg("-a").args(extra).arg(format!("{}/", src.display())).arg(format!("{}/", dst.display()));
            run_ok(&mut cmd);
        };
        rsync(&[]);
        wait_for_tree("alice", &dst, &first, Compare::ALL, SEE);
        wait_for_tree("bob", &bob.path("mirror"), &first, Compare::ALL, SEE);

        // Change the source: rsync writes each changed file to a temporary
        // name next to it and renames it over the old one; --delete removes.
        fs::write(src.join("docs/readme.txt"), b"the readme, second edition\n").unwrap();
        fs::write(src.join("docs/new.txt"), b"a new file\n").unwrap();
        fs::remove_file(src.join("bin/run.sh")).unwrap();
        let second = Tree::read(&src).unwrap();
        rsync(&["--delete"]);
        wait_for_tree("alice", &dst, &second, Compare::ALL, SEE);
        let seen = wait_for_tree("bob", &bob.path("mirror"), &second, Compare::ALL, SEE);
        assert!(!seen.paths().iter().any(|p| p.contains("/.") || p.starts_with('.')), "rsync's temp files left behind: {:?}", seen.paths());
    });
}

#[test]
fn tar_extracts_an_archive_into_the_mount() {
    scenario(Duration::from_secs(120), || {
        require_program("tar", "tar");
        let (_tracker, alice, bob) = alice_and_bob();
        let home = temp_dir("titorrent-tar-home-");
        let src = home.path().join("release");
        fs::create_dir(&src).unwrap();
        let expected = write_sample_tree(&src, 31);
        let archive = home.path().join("release.tar");
        run_ok(program("tar", home.path(), home.path()).arg("-C").arg(&src).arg("-cf").arg(&archive).arg("."));

        fs::create_dir(alice.path("unpacked")).unwrap();
        run_ok(program("tar", home.path(), home.path()).arg("-C").arg(alice.path("unpacked")).arg("-xpf").arg(&archive));
        wait_for_tree("alice", &alice.path("unpacked"), &expected, Compare::ALL, SEE);
        wait_for_tree("bob", &bob.path("unpacked"), &expected, Compare::ALL, SEE);
    });
}

#[test]
fn a_git_repository_committed_on_one_member_clones_cleanly_from_the_other() {
    scenario(Duration::from_secs(180), || {
        require_program("git", "git");
        let (_tracker, alice, bob) = alice_and_bob();
        let home = temp_dir("titorrent-git-home-");
        let git = |dir: &Path, args: &[&str]| {
            let mut cmd = program("git", dir, home.path());
            cmd.args(["-c", "user.name=alice", "-c", "user.email=alice@example.org", "-c", "init.defaultBranch=main"]).args(args);
            run_ok(&mut cmd)
        };
        let repo = alice.path("repo");
        git(alice.mountpoint(), &["init", "-q", "repo"]);
        fs::create_dir(repo.join("src")).unwrap();
        fs::write(repo.join("README"), b"a repository in a shared folder\n").unwrap();
        fs::write(repo.join("src/main.c"), b"int main(void) { return 0; }\n").unwrap();
        git(&repo, &["add", "."]);
        git(&repo, &["commit", "-q", "-m", "first"]);
        fs::write(repo.join("src/main.c"), b"int main(void) { return 1; }\n").unwrap();
        fs::write(repo.join("NEWS"), b"returns 1 now\n").unwrap();
        git(&repo, &["add", "-A"]);
        git(&repo, &["commit", "-q", "-m", "second"]);
        let status = git(&repo, &["status", "--porcelain"]);
        assert_eq!(status.stdout, "", "git status on alice's mount right after committing");

        // Bob's mount shows the same repository, .git and all, byte for byte.
        let expected = Tree::read(&repo).unwrap();
        wait_for_tree("bob", &bob.path("repo"), &expected, Compare::BYTES, SEE);

        let clone = home.path().join("clone");
        git(home.path(), &["clone", "-q", bob.path("repo").to_str().unwrap(), clone.to_str().unwrap()]);
        let log = git(&clone, &["log", "--format=%an %s"]);
        assert_eq!(log.stdout, "alice second\nalice first\n", "git log of the clone");
        let status = git(&clone, &["status", "--porcelain"]);
        assert_eq!(status.stdout, "", "git status of the clone");
        git(&clone, &["fsck", "--strict", "--no-progress"]);
        let work = Tree::read_without(&clone, &[".git/"]).unwrap();
        let work_alice = Tree::read_without(&repo, &[".git/"]).unwrap();
        if let Some(d) = work.difference(&work_alice, Compare::BYTES) {
            panic!("the clone's work tree differs from alice's: {d}");
        }
    });
}

#[test]
fn a_program_saving_through_a_temp_file_and_os_replace_updates_the_file() {
    scenario(Duration::from_secs(120), || {
        let python = ["/usr/bin/python3", "python3"]
            .into_iter()
            .find(|p| Path::new(p).is_file() || titorrent_integration::env::which(p).is_some())
            .unwrap_or_else(|| panic!("this test runs python3: `apt-get install python3`"));
        let (_tracker, alice, bob) = alice_and_bob();
        let home = temp_dir("titorrent-py-home-");
        fs::create_dir(alice.path("notes")).unwrap();
        fs::write(alice.path("notes/list.txt"), b"eggs\nflour\n").unwrap();
        fs::set_permissions(alice.path("notes/list.txt"), std::os::unix::fs::PermissionsExt::from_mode(0o664)).unwrap();
        wait_for_content(&bob, "notes/list.txt", b"eggs\nflour\n", SEE);

        // The usual "atomic save": a temporary file in the same directory,
        // flushed and fsynced, given the original's mode, renamed over it.
        let save = r#"
import os, sys, tempfile
path = sys.argv[1]
with open(path, "rb") as f:
    data = f.read()
d = os.path.dirname(path)
fd, tmp = tempfile.mkstemp(dir=d, prefix=".list.", suffix=".tmp")
with os.fdopen(fd, "wb") as f:
    f.write(data.upper() + b"SUGAR\n")
    f.flush()
    os.fsync(f.fileno())
os.chmod(tmp, os.stat(path).st_mode & 0o7777)
os.replace(tmp, path)
"#;
        // Bob keeps reading list.txt meanwhile: a save is atomic for him too.
        let watcher = Watcher::start(bob.path("notes/list.txt"));
        run_ok(program(python, home.path(), home.path()).arg("-c").arg(save).arg(alice.path("notes/list.txt")));
        let want = b"EGGS\nFLOUR\nSUGAR\n";
        assert_eq!(fs::read(alice.path("notes/list.txt")).unwrap(), want, "alice reads the saved file");
        wait_for_content(&bob, "notes/list.txt", want, SEE);
        let seen = watcher.stop();
        let (old, new) = (Seen::Bytes(b"eggs\nflour\n".to_vec()), Seen::Bytes(want.to_vec()));
        assert!(
            seen.iter().all(|s| *s == old || *s == new),
            "bob, reading list.txt while alice saved it, saw something other than the old or the new content: {seen:?}"
        );
        wait_for(SEE, "bob's notes/ holds list.txt alone, mode 0664", || {
            let n = names(&bob.path("notes"));
            let md = fs::metadata(bob.path("notes/list.txt")).map_err(|e| e.to_string())?;
            let mode = std::os::unix::fs::PermissionsExt::mode(&md.permissions()) & 0o7777;
            if n == ["list.txt"] && mode == 0o664 { Ok(()) } else { Err(format!("{n:?}, mode {mode:o}")) }
        });
        assert_eq!(names(&alice.path("notes")), ["list.txt"], "alice's listing");
    });
}
