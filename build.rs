//! Build script, two jobs.
//!
//! **The embedded Python.** pyo3 links `libpython3.x.so` found through the
//! build interpreter, but at run time the dynamic loader would otherwise
//! pick whatever `ld.so.cache` lists first (on a pyenv machine: Debian's
//! libpython, a different patch release with a different stdlib). A RUNPATH
//! entry pointing at the build interpreter's lib dir makes the pairing
//! explicit. The interpreter's own path is recorded too, so the worker can
//! present it as `sys.executable` and let CPython compute `sys.prefix` from
//! it, and its version, which `podmaster --version` prints.
//!
//! **What this machine can test.** Some integration tests need what a fresh
//! clone or an ordinary account lacks: root, PID and network namespaces,
//! helm, kubernetes-validate, hadolint, Python's prometheus_client, Flask,
//! Django, FastAPI and uvicorn, promtool, a Docker engine with the
//! `podmaster:test` image. Each is probed here and becomes a cfg
//! (`have_helm`, ...); a test carries
//! `#[cfg_attr(not(have_helm), ignore = "needs helm: run bash scripts/test-deps.sh")]`,
//! so that `cargo test` lists it as ignored with the reason instead of
//! passing it without running it. The probes run again when `.tools/bin`
//! changes (`scripts/test-deps.sh` installs there and writes a summary of
//! what it installed), or `USER` (sudo) or `PODMASTER_DOCKER_ROOT` change.

use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

fn main() {
    let config = pyo3_build_config::get();
    link_libpython_into_the_worker_only(config);
    let v = config.version();
    let mut full_version = format!("{}.{}", v.major, v.minor);
    if let Some(exe) = config.executable() {
        println!("cargo:rustc-env=PODMASTER_BUILD_PYTHON={exe}");
        if let Some(out) = run(exe, &["-c", "import sys; print('%d.%d.%d' % sys.version_info[:3])"], &[]) {
            full_version = out.trim().to_owned();
        }
    } else {
        println!("cargo:rustc-env=PODMASTER_BUILD_PYTHON=");
    }
    println!("cargo:rustc-env=PODMASTER_PY_VERSION={}.{}", v.major, v.minor);
    println!("cargo:rustc-env=PODMASTER_PY_VERSION_FULL={full_version}");
    println!("cargo:rerun-if-env-changed=PYO3_PYTHON");

    test_environment();
}

/// pyo3 is built with `extension-module`, so it links libpython nowhere;
/// here it is linked into `podmaster-worker` and the test binaries (which
/// may reach the embedding code), with a RUNPATH to the build
/// interpreter's lib dir — and not into `podmaster`, the master: PID 1 maps
/// no Python, and init mode runs where there is none. (Relying on the
/// linker's `--as-needed` instead is not enough: rustc 1.85 keeps the
/// unused library in the master's NEEDED list.)
fn link_libpython_into_the_worker_only(config: &pyo3_build_config::InterpreterConfig) {
    let lib_dir = config.lib_dir().map(|d| d.to_string()).or_else(|| {
        let exe = config.executable()?;
        run(exe, &["-c", "import sysconfig; print(sysconfig.get_config_var('LIBDIR'))"], &[])
            .map(|s| s.trim().to_owned())
    });
    let name = config.lib_name().map(|n| n.to_string()).unwrap_or_else(|| {
        let v = config.version();
        format!("python{}.{}", v.major, v.minor)
    });
    let mut args = vec![format!("-l{name}")];
    if let Some(dir) = &lib_dir {
        args.insert(0, format!("-L{dir}"));
        args.push(format!("-Wl,-rpath,{dir}"));
    }
    for arg in &args {
        println!("cargo:rustc-link-arg-bin=podmaster-worker={arg}");
        println!("cargo:rustc-link-arg-tests={arg}");
    }
}

/// The running kernel's release is at least `major.minor`.
fn kernel_at_least(major: u32, minor: u32) -> bool {
    let release = std::fs::read_to_string("/proc/sys/kernel/osrelease").unwrap_or_default();
    let mut parts = release.trim().split(['.', '-']).map(|p| p.parse::<u32>().unwrap_or(0));
    let (a, b) = (parts.next().unwrap_or(0), parts.next().unwrap_or(0));
    (a, b) >= (major, minor)
}

/// Probes what the integration tests need (see the module doc) and emits
/// one cfg per thing found.
fn test_environment() {
    let manifest = PathBuf::from(std::env::var_os("CARGO_MANIFEST_DIR").expect("CARGO_MANIFEST_DIR"));
    let tools = manifest.join(".tools/bin");
    // Watched as a directory: cargo re-runs this script when a file in it
    // changes. It is kept in git (its own .gitignore) so that it exists;
    // recreated here if someone removed it, since a missing path would make
    // cargo re-run the script, and rebuild the crate, on every build.
    let _ = std::fs::create_dir_all(&tools);
    println!("cargo:rerun-if-changed={}", tools.display());
    for var in ["USER", "PODMASTER_DOCKER_ROOT"] {
        println!("cargo:rerun-if-env-changed={var}");
    }

    let root = effective_uid() == Some(0);
    // The Docker engine of scripts/docker-local.sh (which builds the image there).
    let docker_root = std::env::var("PODMASTER_DOCKER_ROOT").unwrap_or_else(|_| "/tmp/podmaster-docker".into());
    let docker_host = format!("unix://{docker_root}/docker.sock");
    println!("cargo:rustc-env=PODMASTER_TEST_DOCKER_HOST={docker_host}");
    let unprivileged_port_start: u32 = std::fs::read_to_string("/proc/sys/net/ipv4/ip_unprivileged_port_start")
        .ok()
        .and_then(|s| s.trim().parse().ok())
        .unwrap_or(1024);

    let found = [
        ("have_root", root),
        ("have_pidns", root && runs("unshare", &["--pid", "--fork", "--mount-proc", "true"], &[])),
        ("have_netns", root && runs("ip", &["-V"], &[]) && runs("unshare", &["--net", "true"], &[])),
        ("have_setpriv", runs("setpriv", &["--version"], &[])),
        // Workers switched to `nobody` exec the test binary and read tests/scripts.
        (
            "have_checkout_open_to_nobody",
            open_to_others(Path::new(&std::env::var_os("OUT_DIR").expect("OUT_DIR")))
                && open_to_others(&manifest.join("tests/scripts/sdserver.py")),
        ),
        // The privileged-port test picks a port in 600..1000.
        ("have_privileged_low_ports", unprivileged_port_start > 600),
        ("have_ipv6_loopback", std::net::TcpListener::bind("[::1]:0").is_ok()),
        // EEVDF's per-thread slice request (sched_setattr runtime for SCHED_OTHER).
        ("have_sched_slice", kernel_at_least(6, 12)),
        // Child cgroups with a CPU quota and a memory limit (tests/pod_resources.rs).
        (
            "have_cgroup_v1",
            root && ["cpu", "memory"].iter().all(|c| Path::new(&format!("/sys/fs/cgroup/{c}/cgroup.procs")).exists()),
        ),
        ("have_venv", runs("python3", &["-c", "import venv, ensurepip"], &[])),
        ("have_helm", runs(tools.join("helm"), &["version", "--short"], &[])),
        ("have_kubernetes_validate", runs(tools.join("kubernetes-validate"), &["--help"], &[])),
        (
            "have_prometheus_client",
            runs(manifest.join(".tools/venv/bin/python3"), &["-c", "import prometheus_client.openmetrics.parser"], &[]),
        ),
        // The apps of examples/flask, examples/django and examples/fastapi
        // (tests/wsgi_apps.rs), pinned in scripts/test-requirements.txt.
        (
            "have_wsgi_apps",
            runs(manifest.join(".tools/venv/bin/python3"), &["-c", "import flask, django, fastapi, uvicorn"], &[]),
        ),
        ("have_hadolint", runs(tools.join("hadolint"), &["--version"], &[])),
        // On PATH (Debian's prometheus package); scripts/test-deps.sh lists it
        // in .tools/bin/.installed, so installing it there re-runs this probe.
        ("have_promtool", runs("promtool", &["--version"], &[])),
        // On PATH (Debian's nginx-light): tests/front runs a private nginx
        // with uwsgi_pass in front of the WSGI front (listed in .installed too).
        ("have_nginx", runs("nginx", &["-v"], &[])),
        (
            "have_docker_image",
            runs("docker", &["image", "inspect", "podmaster:test"], &[("DOCKER_HOST", docker_host.as_str())]),
        ),
    ];
    for (cfg, present) in found {
        println!("cargo::rustc-check-cfg=cfg({cfg})");
        if present {
            println!("cargo::rustc-cfg={cfg}");
        }
    }
}

/// How long one probe may take: a wedged tool (say, a docker client waiting
/// on a remote engine) must not hang the build; anything slower counts as
/// absent.
const PROBE_TIMEOUT: Duration = Duration::from_secs(10);

/// Whether `program args` runs and exits 0 within [`PROBE_TIMEOUT`].
fn runs(program: impl AsRef<Path>, args: &[&str], env: &[(&str, &str)]) -> bool {
    run(program, args, env).is_some()
}

/// Stdout of `program args` if it exits 0 within [`PROBE_TIMEOUT`]. (Read
/// once it has exited: every probe prints far less than a pipe holds.)
fn run(program: impl AsRef<Path>, args: &[&str], env: &[(&str, &str)]) -> Option<String> {
    let mut child = Command::new(program.as_ref())
        .args(args)
        .envs(env.iter().copied())
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .ok()?;
    let deadline = Instant::now() + PROBE_TIMEOUT;
    loop {
        match child.try_wait() {
            Ok(Some(status)) if status.success() => {
                let mut out = String::new();
                child.stdout.take()?.read_to_string(&mut out).ok()?;
                return Some(out);
            }
            Ok(Some(_)) => return None,
            Ok(None) if Instant::now() < deadline => std::thread::sleep(Duration::from_millis(10)),
            _ => {
                let _ = child.kill();
                let _ = child.wait();
                return None;
            }
        }
    }
}

/// Whether a user who is neither owner nor in the group can reach `path`:
/// every directory on the way is searchable by others and the path itself
/// is readable by them.
fn open_to_others(path: &Path) -> bool {
    use std::os::unix::fs::PermissionsExt;
    let mode = |p: &Path| std::fs::metadata(p).map(|m| m.permissions().mode()).unwrap_or(0);
    mode(path) & 0o004 != 0 && path.ancestors().skip(1).all(|dir| mode(dir) & 0o001 != 0)
}

/// The effective uid, from /proc (no libc in build dependencies).
fn effective_uid() -> Option<u32> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    status.lines().find_map(|l| l.strip_prefix("Uid:"))?.split_whitespace().nth(1)?.parse().ok()
}
