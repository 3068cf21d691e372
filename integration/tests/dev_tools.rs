//! Project trees that developer tools make, in one member's mount, used
//! from another member's (issue 14): a Python virtual environment
//! (`python3 -m venv --without-pip`: an absolute symlink to the
//! interpreter, relative ones beside it, pyvenv.cfg; with pip it is 1,600
//! files and over a minute in a debug build on a loaded CI machine, which
//! is issue 12's burst, not this test's), `node_modules/.bin` links as npm
//! lays them out (relative symlinks to executable scripts), and `cargo
//! build` of a small crate with its target directory in the mount (lock
//! files, fingerprints, hard links from `target/debug/` into `deps/`).
//! Each is checked the way its user would: by running what it made, on the
//! other member.
//!
//! Needs root, /dev/fuse, fusermount3, the binaries built (`cargo build
//! --workspace`), python3 with its venv module (python3-venv) and cargo
//! (.ci/run installs python3-venv; cargo is the one running these tests).

use std::fs;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;
use titorrent_integration::programs::{program, require_program, run_ok, wait_for_content, wait_for_tree, Compare, Tree, SEE};
use titorrent_integration::{alice_and_bob, scenario, wait_for};

fn temp_dir(prefix: &str) -> tempfile::TempDir {
    tempfile::Builder::new().prefix(prefix).tempdir().expect("cannot create a temp dir")
}

#[test]
fn a_python_venv_made_on_one_member_runs_on_the_other() {
    scenario(Duration::from_secs(240), || {
        // The system's python3 (its venv module is python3-venv), not a
        // pyenv shim that may be first on the PATH.
        let python = Some(std::path::PathBuf::from("/usr/bin/python3"))
            .filter(|p| p.is_file())
            .unwrap_or_else(|| require_program("python3", "python3-venv"));
        let (_tracker, alice, bob) = alice_and_bob();
        let home = temp_dir("titorrent-venv-home-");
        let made = run_ok(program(python.to_str().unwrap(), alice.mountpoint(), home.path()).args(["-m", "venv", "--without-pip", "venv"]));
        assert!(made.stderr.is_empty(), "python3 -m venv complained: {}", made.stderr);
        let venv_python = alice.path("venv/bin/python");
        let lib = fs::read_dir(alice.path("venv/lib")).unwrap().next().unwrap().unwrap().path();
        fs::write(lib.join("site-packages/hello_venv.py"), b"GREETING = 'hi'\n").unwrap();
        assert!(fs::symlink_metadata(&venv_python).unwrap().file_type().is_symlink(), "venv/bin/python is a symlink");

        // Bob's mount has the same tree, symlinks and all, byte for byte,
        // with the scripts still executable.
        let expected = Tree::read(&alice.path("venv")).unwrap();
        wait_for_tree("bob", &bob.path("venv"), &expected, Compare::BYTES_AND_MODES, SEE);

        // The venv works from bob's mount: its interpreter finds the venv
        // it is in (pyvenv.cfg beside the symlink) and imports from its
        // site-packages, where a module alice put there is found.
        let bob_venv = bob.path("venv");
        let prefix = run_ok(program(bob_venv.join("bin/python").to_str().unwrap(), home.path(), home.path())
            .args(["-c", "import sys; print(sys.prefix)"]));
        assert_eq!(prefix.stdout.trim(), bob_venv.to_str().unwrap(), "sys.prefix of the venv's python on bob");
        let site = run_ok(program(bob_venv.join("bin/python").to_str().unwrap(), home.path(), home.path())
            .args(["-c", "import hello_venv; print(hello_venv.__file__)"]));
        assert!(site.stdout.starts_with(bob_venv.to_str().unwrap()), "imported from bob's venv: {}", site.stdout);
    });
}

#[test]
fn node_modules_bin_links_run_on_the_other_member() {
    scenario(Duration::from_secs(120), || {
        let (_tracker, alice, bob) = alice_and_bob();
        let home = temp_dir("titorrent-npm-home-");
        // As npm lays out a package with a "bin" entry: the package's
        // script, executable, and a relative link to it in .bin.
        let pkg = alice.path("app/node_modules/hello-cli");
        fs::create_dir_all(pkg.join("bin")).unwrap();
        fs::write(pkg.join("package.json"), br#"{"name":"hello-cli","version":"1.0.0","bin":{"hello":"bin/cli.sh"}}"#).unwrap();
        fs::write(pkg.join("bin/cli.sh"), b"#!/bin/sh\necho \"hello from $(basename \"$(dirname \"$(dirname \"$0\")\")\") with $*\"\n").unwrap();
        fs::set_permissions(pkg.join("bin/cli.sh"), fs::Permissions::from_mode(0o755)).unwrap();
        fs::create_dir_all(alice.path("app/node_modules/.bin")).unwrap();
        std::os::unix::fs::symlink("../hello-cli/bin/cli.sh", alice.path("app/node_modules/.bin/hello")).unwrap();
        let on_alice = run_ok(program(alice.path("app/node_modules/.bin/hello").to_str().unwrap(), &alice.path("app"), home.path()).arg("a"));
        assert_eq!(on_alice.stdout, "hello from node_modules with a\n");

        let expected = Tree::read(&alice.path("app")).unwrap();
        wait_for_tree("bob", &bob.path("app"), &expected, Compare::BYTES_AND_MODES, SEE);
        // npm run puts node_modules/.bin first on PATH: the link runs there.
        let path = format!("{}:/usr/bin:/bin", bob.path("app/node_modules/.bin").display());
        let on_bob = run_ok(program("hello", &bob.path("app"), home.path()).env("PATH", path).arg("b"));
        assert_eq!(on_bob.stdout, "hello from node_modules with b\n", "the .bin link run on bob");
    });
}

/// `cargo` as the tests were started with (rustup's proxy needs its own
/// homes, not the test's temporary HOME).
fn cargo(dir: &Path, home: &Path, target: &Path) -> Command {
    let cargo = std::env::var_os("CARGO").map(PathBuf::from).unwrap_or_else(|| require_program("cargo", "cargo"));
    let real_home = std::env::var_os("HOME").map(PathBuf::from).unwrap_or_else(|| PathBuf::from("/root"));
    let mut cmd = program(cargo.to_str().unwrap(), dir, home);
    cmd.env("CARGO_HOME", std::env::var_os("CARGO_HOME").map(PathBuf::from).unwrap_or_else(|| real_home.join(".cargo")))
        .env("RUSTUP_HOME", std::env::var_os("RUSTUP_HOME").map(PathBuf::from).unwrap_or_else(|| real_home.join(".rustup")))
        .env("CARGO_TARGET_DIR", target)
        .env_remove("CARGO_BUILD_TARGET_DIR")
        .env_remove("RUSTFLAGS")
        .env("CARGO_INCREMENTAL", "1")
        .env("CARGO_TERM_COLOR", "never");
    cmd.args(["build", "--offline", "--quiet"]);
    cmd
}

#[test]
fn cargo_builds_a_crate_with_its_target_dir_in_the_mount_and_the_other_member_runs_it() {
    scenario(Duration::from_secs(240), || {
        let (_tracker, alice, bob) = alice_and_bob();
        let home = temp_dir("titorrent-cargo-home-");
        let krate = alice.path("hello");
        fs::create_dir_all(krate.join("src")).unwrap();
        fs::write(krate.join("Cargo.toml"), b"[package]\nname = \"hello\"\nversion = \"0.1.0\"\nedition = \"2021\"\n").unwrap();
        fs::write(krate.join("src/main.rs"), b"fn main() { println!(\"built on alice\"); }\n").unwrap();
        run_ok(&mut cargo(&krate, home.path(), &krate.join("target")));
        let exe = krate.join("target/debug/hello");
        let out = run_ok(&mut Command::new(&exe));
        assert_eq!(out.stdout, "built on alice\n");
        assert!(fs::metadata(&exe).unwrap().nlink() >= 2, "cargo hard-links target/debug/hello to its copy in deps/");

        // Bob runs the binary alice built, from his mount.
        let built = fs::read(&exe).unwrap();
        let bob_exe = bob.path("hello/target/debug/hello");
        wait_for_content(&bob, "hello/target/debug/hello", &built, SEE);
        wait_for(SEE, "bob's target/debug/hello is executable and as linked as alice's", || {
            let md = fs::metadata(&bob_exe).map_err(|e| e.to_string())?;
            match (md.permissions().mode() & 0o111 != 0, md.nlink()) {
                (true, n) if n == fs::metadata(&exe).unwrap().nlink() => Ok(()),
                other => Err(format!("{other:?}")),
            }
        });
        assert_eq!(run_ok(&mut Command::new(&bob_exe)).stdout, "built on alice\n", "alice's binary run on bob");

        // Bob edits the source and builds in his mount, into the same
        // target directory: alice runs what bob built.
        let bob_krate = bob.path("hello");
        fs::write(bob_krate.join("src/main.rs"), b"fn main() { println!(\"built on bob\"); }\n").unwrap();
        run_ok(&mut cargo(&bob_krate, home.path(), &bob_krate.join("target")));
        assert_eq!(run_ok(&mut Command::new(&bob_exe)).stdout, "built on bob\n");
        let rebuilt = fs::read(&bob_exe).unwrap();
        wait_for_content(&alice, "hello/target/debug/hello", &rebuilt, SEE);
        assert_eq!(run_ok(&mut Command::new(&exe)).stdout, "built on bob\n", "bob's binary run on alice");
    });
}
