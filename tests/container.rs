//! The image, built for real and run under a local Docker engine: PID 1,
//! `docker stop` drains, `docker kill -s HUP` chain-reloads, orphans are
//! reaped, read-only root works, non-root user; the example images
//! (examples/{flask,django,fastapi}/Dockerfile) build on it and serve. Containers get no network
//! (`--network none`); everything is checked from inside with `docker exec`
//! and `podmaster probe`.
//!
//! Runs against the `podmaster:test` image on the engine of
//! scripts/docker-local.sh (`$PODMASTER_DOCKER_ROOT/docker.sock`), which
//! `bash scripts/test-deps.sh` sets up and builds from this tree; reported
//! ignored when build.rs found no such image. Rebuild the image after
//! changing the code: `bash scripts/docker-local.sh image`.

mod common;

use std::process::{Command, Output};
use std::time::{Duration, Instant};

use common::*;

const IMAGE: &str = "podmaster:test";

/// The engine build.rs found the image on (scripts/docker-local.sh's).
const DOCKER_HOST: &str = env!("PODMASTER_TEST_DOCKER_HOST");

fn docker_cmd() -> Command {
    let mut c = Command::new("docker");
    c.env("DOCKER_HOST", DOCKER_HOST);
    c
}

fn docker(args: &[&str]) -> Output {
    docker_cmd().args(args).output().expect("docker client")
}

fn ok(args: &[&str]) -> String {
    let o = docker(args);
    assert!(o.status.success(), "docker {args:?}: {}", String::from_utf8_lossy(&o.stderr));
    String::from_utf8_lossy(&o.stdout).trim().to_owned()
}

/// A running container, removed on drop.
struct Container(String);

impl Container {
    fn run(name: &str, extra: &[&str]) -> Container {
        Self::run_image(name, IMAGE, extra)
    }

    fn run_image(name: &str, image: &str, extra: &[&str]) -> Container {
        let _ = docker(&["rm", "-f", name]);
        let mut args = vec!["run", "-d", "--pull", "never", "--network", "none", "--name", name];
        args.extend_from_slice(extra);
        args.push(image);
        ok(&args);
        let c = Container(name.to_owned());
        wait_for("container ready", DEADLINE, || c.probe("/readyz").filter(|(code, _)| *code == 0).map(|_| ()));
        c
    }

    fn exec(&self, cmd: &[&str]) -> Output {
        let mut args = vec!["exec", self.0.as_str()];
        args.extend_from_slice(cmd);
        docker(&args)
    }

    /// (exit code of `podmaster probe`, stdout) for a path on the probe port.
    fn probe(&self, path: &str) -> Option<(i32, String)> {
        let o = self.exec(&["podmaster", "probe", &format!("http://127.0.0.1:9191{path}")]);
        Some((o.status.code()?, String::from_utf8_lossy(&o.stdout).into_owned()))
    }

    fn metrics(&self) -> String {
        String::from_utf8_lossy(&self.exec(&["sh", "-c", "podmaster probe http://127.0.0.1:9191/metrics; true"]).stdout)
            .into_owned()
    }

    /// What the container wrote (podmaster logs to stderr).
    fn logs(&self) -> String {
        let o = docker(&["logs", &self.0]);
        format!("{}{}", String::from_utf8_lossy(&o.stdout), String::from_utf8_lossy(&o.stderr))
    }

    fn exit_code(&self) -> i64 {
        ok(&["inspect", "-f", "{{.State.ExitCode}}", &self.0]).parse().unwrap()
    }
}

impl Drop for Container {
    fn drop(&mut self) {
        let _ = docker(&["rm", "-f", &self.0]);
    }
}

#[test]
#[cfg_attr(
    not(have_docker_image),
    ignore = "needs a Docker engine with the podmaster:test image: run bash scripts/test-deps.sh as root"
)]
fn pid1_nonroot_and_graceful_docker_stop() {
    let c = Container::run("podmaster-test-stop", &[]);
    let cmdline = String::from_utf8_lossy(&c.exec(&["cat", "/proc/1/cmdline"]).stdout).replace('\0', " ");
    assert!(cmdline.starts_with("podmaster "), "PID 1 is podmaster: {cmdline}");
    assert_eq!(String::from_utf8_lossy(&c.exec(&["id", "-u"]).stdout).trim(), "10001");
    // From the host: the master is non-dumpable, so nothing in the
    // container (root without CAP_SYS_PTRACE included) may read its maps.
    let host_pid = ok(&["inspect", "-f", "{{.State.Pid}}", &c.0]);
    let maps = std::fs::read_to_string(format!("/proc/{host_pid}/maps")).unwrap_or_default();
    assert!(maps.contains("podmaster") && !maps.contains("libpython"), "PID 1 maps no Python:\n{maps}");
    // An in-flight request (2 s) survives `docker stop`.
    let slow = docker_cmd().args(["exec", &c.0, "podmaster", "probe", "http://127.0.0.1:8080/slow/2"]).spawn().unwrap();
    wait_for("slow request in flight", DEADLINE, || {
        let m = c.metrics();
        // The hello example has no request counter; watch the connection instead.
        let o = c.exec(&["sh", "-c", "cat /proc/net/tcp | grep -c ' 01 '"]);
        let established: u32 = String::from_utf8_lossy(&o.stdout).trim().parse().unwrap_or(0);
        (established >= 2 && !m.is_empty()).then_some(())
    });
    let t0 = Instant::now();
    ok(&["stop", &c.0]);
    let took = t0.elapsed();
    let out = slow.wait_with_output().unwrap();
    assert!(out.status.success(), "in-flight request completed during docker stop");
    assert_eq!(c.exit_code(), 0, "clean drain: {}", ok(&["logs", &c.0]));
    assert!(took < Duration::from_secs(8), "well under the 10 s stop timeout: {took:?}");
    assert!(ok(&["logs", &c.0]).contains("drain finished") || !docker(&["logs", &c.0]).stderr.is_empty());
}

#[test]
#[cfg_attr(
    not(have_docker_image),
    ignore = "needs a Docker engine with the podmaster:test image: run bash scripts/test-deps.sh as root"
)]
fn docker_kill_hup_chain_reloads_and_orphans_are_reaped() {
    let c = Container::run("podmaster-test-hup", &[]);
    ok(&["kill", "-s", "HUP", &c.0]);
    wait_for("chain reload", DEADLINE, || {
        c.metrics().contains("podmaster_reloads_total{result=\"ok\"} 1").then_some(())
    });
    // Orphans: the shell exits at once, its 20 sleepers are reparented to PID 1.
    let o = c.exec(&["sh", "-c", "for i in $(seq 1 20); do sleep 0.2 & done; exit 0"]);
    assert!(o.status.success());
    wait_for("no zombies", DEADLINE, || {
        let o = c.exec(&["sh", "-c", "grep -l '^State:.Z' /proc/[0-9]*/status 2>/dev/null | wc -l"]);
        let reaped =
            c.metrics().lines().any(|l| l.starts_with("podmaster_reaped_orphans_total ") && !l.ends_with(" 0"));
        (String::from_utf8_lossy(&o.stdout).trim() == "0" && reaped).then_some(())
    });
}

#[test]
#[cfg_attr(
    not(have_docker_image),
    ignore = "needs a Docker engine with the podmaster:test image: run bash scripts/test-deps.sh as root"
)]
fn read_only_root_filesystem_works() {
    let c = Container::run("podmaster-test-ro", &["--read-only", "--tmpfs", "/tmp"]);
    assert_eq!(c.probe("/readyz").unwrap().1.trim(), "ready: 2/2 workers accepting");
    let o = c.exec(&["sh", "-c", "touch /app/x"]);
    assert!(!o.status.success(), "root filesystem is read-only");
}

/// Started as root with `uid`/`gid` (from the environment, as a Deployment
/// would set them): PID 1 stays root to bind and supervise, the zygote and
/// every worker it forks run as the unprivileged user, all four ids.
#[test]
#[cfg_attr(
    not(have_docker_image),
    ignore = "needs a Docker engine with the podmaster:test image: run bash scripts/test-deps.sh as root"
)]
fn workers_of_a_zygote_with_uid_never_run_as_root() {
    let c = Container::run(
        "podmaster-test-uid",
        &["--user", "0:0", "-e", "UWSGI_UID=podmaster", "-e", "UWSGI_GID=podmaster", "-e", "WORKERS=3"],
    );
    // Every process: pid, its title, its real/effective/saved/fs uids.
    let table = || {
        let script = "for p in /proc/[0-9]*; do \
            t=$(tr '\\0' ' ' < $p/cmdline 2>/dev/null); \
            u=$(awk '/^Uid:/ {print $2\",\"$3\",\"$4\",\"$5}' $p/status 2>/dev/null); \
            echo \"${p#/proc/}|$t|$u\"; done";
        String::from_utf8_lossy(&c.exec(&["sh", "-c", script]).stdout).into_owned()
    };
    let t = table();
    let rows: Vec<(&str, &str, &str)> = t
        .lines()
        .filter_map(|l| {
            let mut p = l.splitn(3, '|');
            Some((p.next()?, p.next()?.trim(), p.next()?))
        })
        .collect();
    let pid1 = rows.iter().find(|r| r.0 == "1").unwrap_or_else(|| panic!("{t}"));
    assert!(pid1.1.starts_with("podmaster ") && pid1.2 == "0,0,0,0", "PID 1 is root: {t}");
    let zygotes: Vec<_> = rows.iter().filter(|r| r.1.starts_with("podmaster: zygote")).collect();
    let workers: Vec<_> = rows.iter().filter(|r| r.1.starts_with("podmaster: worker")).collect();
    assert_eq!(zygotes.len(), 1, "{t}");
    assert_eq!(workers.len(), 3, "{t}");
    for r in zygotes.iter().chain(workers.iter()) {
        assert_eq!(r.2, "10001,10001,10001,10001", "never root: {r:?}\n{t}");
    }
    // A worker forked after startup (a chain reload) too.
    ok(&["kill", "-s", "HUP", &c.0]);
    wait_for("chain reload", DEADLINE, || {
        c.metrics().contains("podmaster_reloads_total{result=\"ok\"} 1").then_some(())
    });
    let t = table();
    let forked: Vec<&str> = t.lines().filter(|l| l.contains("|podmaster: ")).collect();
    assert!(forked.len() >= 4, "{t}");
    assert!(forked.iter().all(|l| l.ends_with("|10001,10001,10001,10001")), "{t}");
}

/// Builds `examples/NAME/Dockerfile` on podmaster:test as `podmaster-NAME:test`,
/// offline as far as Python goes: the requirements are downloaded here, as
/// wheels for the image's Python, into the build context's `wheels/` (the
/// engine's builds reach only the Debian mirror, for apt).
fn build_example_image(name: &str) -> String {
    let ctx = TempDir::new(&format!("image-{name}"));
    let st = Command::new("cp").arg("-r").arg(format!("{ROOT}/examples/{name}/.")).arg(ctx.path()).status().unwrap();
    assert!(st.success(), "copy examples/{name}");
    let _ = std::fs::remove_dir_all(ctx.path().join("wheels"));
    let python = ["run", "--rm", "--pull", "never", "--network", "none", "--entrypoint", "python3", IMAGE];
    let abi = ok(&[&python[..], &["-c", "import sys; print('cp%d%d' % sys.version_info[:2])"]].concat());
    // Wheels for the engine's (this machine's) architecture; pure-Python ones fit any.
    let platforms =
        ["manylinux2014", "manylinux_2_17", "manylinux_2_28"].map(|p| format!("{p}_{}", std::env::consts::ARCH));
    let mut pip = Command::new("python3");
    pip.args(["-m", "pip", "download", "-q", "--disable-pip-version-check", "--only-binary=:all:"]);
    pip.args(["--implementation", "cp", "--abi", &abi, "--python-version", &abi[2..]]);
    for p in &platforms {
        pip.args(["--platform", p]);
    }
    let out = pip
        .arg("-d")
        .arg(ctx.path().join("wheels"))
        .arg("-r")
        .arg(ctx.path().join("requirements.txt"))
        .output()
        .unwrap();
    assert!(out.status.success(), "pip download: {}", String::from_utf8_lossy(&out.stderr));
    let tag = format!("podmaster-{name}:test");
    let ctx_path = ctx.path().display().to_string();
    let build_arg = format!("PODMASTER_IMAGE={IMAGE}");
    // --network host: the apt step reaches the Debian mirror (as scripts/docker-local.sh builds).
    ok(&["build", "-q", "--network", "host", "--build-arg", &build_arg, "-t", &tag, &ctx_path]);
    tag
}

/// Each example image as its users run it: the ini as shipped, podmaster as
/// PID 1 and the image's `--probe-socket`; the app answers on :8000 and
/// `docker stop` drains it.
#[test]
#[cfg_attr(
    not(have_docker_image),
    ignore = "needs a Docker engine with the podmaster:test image: run bash scripts/test-deps.sh as root"
)]
fn example_images_serve_their_apps() {
    for (name, items) in [("flask", "/api/items"), ("django", "/api/items/"), ("fastapi", "/api/items")] {
        let image = build_example_image(name);
        let c = Container::run_image(&format!("podmaster-test-example-{name}"), &image, &[]);
        let get = |path: &str| {
            let o = c.exec(&["podmaster", "probe", &format!("http://127.0.0.1:8000{path}")]);
            assert!(o.status.success(), "{name} {path}: {}", c.logs());
            String::from_utf8_lossy(&o.stdout).into_owned()
        };
        assert_eq!(get("/").trim(), "Hello, World!", "{name}");
        let v: serde_json::Value = serde_json::from_str(&get(items)).unwrap();
        assert_eq!((v["total"].as_u64(), v["items"][0]["tags"][1].as_str()), (Some(16), Some(name)));
        let cmdline = String::from_utf8_lossy(&c.exec(&["cat", "/proc/1/cmdline"]).stdout).replace('\0', " ");
        assert!(cmdline.starts_with("podmaster --ini /app/uwsgi.ini"), "{cmdline}");
        ok(&["stop", &c.0]);
        assert_eq!(c.exit_code(), 0, "{name}: {}", c.logs());
    }
}
