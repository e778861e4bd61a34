//! Entry point: worker mode when started by a master, else parse the
//! configuration, bind, and run the master loop. Only this file prints a
//! fatal error; everything below returns it.

use std::path::PathBuf;
use std::process::ExitCode;

use podmaster::config::{self, Config, cli};
use podmaster::master::{Master, MasterSetup};
use podmaster::{exit, init, logging, probes, sockets, sys, worker};

/// A fatal error: the one line to print and the exit code.
struct Fatal {
    code: u8,
    message: String,
}

fn config_error(message: impl ToString) -> Fatal {
    Fatal { code: exit::CONFIG, message: message.to_string() }
}

fn main() -> ExitCode {
    if worker::requested() {
        // Command workers only: Python ones run in podmaster-worker.
        return ExitCode::from(worker::run_command());
    }
    // `std::env::args` would panic on an argument that is not UTF-8.
    let args: Vec<String> = match std::env::args_os().map(|a| a.into_string()).collect() {
        Ok(args) => args,
        Err(bad) => {
            eprintln!("podmaster: argument {bad:?} is not valid UTF-8");
            return ExitCode::from(exit::CONFIG);
        }
    };
    // `podmaster probe URL`: the HEALTHCHECK client.
    if args.len() == 3 && args[1] == "probe" {
        return ExitCode::from(podmaster::probe_client::run(&args[2]));
    }

    let outcome = run(args);
    podmaster::sockets::remove_created_files();
    match outcome {
        Ok(code) => ExitCode::from(code),
        Err(f) => {
            // Several configuration problems: one line each.
            for line in f.message.lines() {
                eprintln!("podmaster: {line}");
            }
            ExitCode::from(f.code)
        }
    }
}

fn run(args: Vec<String>) -> Result<u8, Fatal> {
    let invocation = match cli::parse(args.into_iter().skip(1).collect()) {
        Ok(i) => i,
        Err(cli::CliError::Clap(e)) if !e.use_stderr() => {
            let _ = e.print();
            return Ok(exit::OK);
        }
        Err(cli::CliError::Clap(e)) => {
            // clap's message is multi-line with a usage hint; keep its first line.
            let text = e.render().to_string();
            let first = text.lines().next().unwrap_or("invalid command line").trim_start_matches("error: ");
            return Err(config_error(format!("{first} (see podmaster --help)")));
        }
        Err(cli::CliError::Config(e)) => return Err(config_error(e)),
    };
    let (sources, check_only, init_argv) = match invocation {
        cli::Invocation::Run(s) => (s, false, None),
        cli::Invocation::Check(s) => (s, true, None),
        cli::Invocation::Init(s, argv) => (s, false, Some(argv)),
    };
    let env = config::env_text(std::env::vars_os(), &sockets::ACTIVATION_VARS).map_err(config_error)?;
    // Every problem is collected and reported at once (one line each, exit 78).
    let (entries, mut problems) = config::load_all(&sources, env.iter().cloned());
    // A source that could not be read leaves the configuration incomplete:
    // checks of it as a whole would only report what the source lacked.
    let all_read = problems.is_empty();
    let (mut cfg, bad_entries) = Config::resolve_all(&entries);
    problems.extend(bad_entries);
    if let Some(argv) = init_argv {
        problems.extend(cfg.check_init_mode().err());
        config::ConfigError::all(problems).map_err(config_error)?;
        sys::unblock_all_signals();
        return Ok(init::run(init::InitOptions {
            argv,
            forward_to_group: cfg.forward_to_group,
            exit_grace: cfg.exit_grace,
        }));
    }
    // Socket activation: fds passed to us by LISTEN_PID/LISTEN_FDS.
    let (mut adopted, adopt_notice) = sockets::adopt(&env, std::process::id()).map_err(config_error)?;
    // Single-threaded still (the probe thread starts later).
    sys::edit_env_single_threaded(&sockets::ACTIVATION_VARS, &[]);
    let env: Vec<(String, String)> = env.into_iter().filter(|(k, _)| !k.starts_with("LISTEN_")).collect();
    let cwd = std::env::current_dir().unwrap_or_else(|_| PathBuf::from("/"));
    let cgroup = podmaster::cgroup::Cgroup::discover(&podmaster::cgroup::Roots::system());
    // Checks of the configuration as a whole; a problem about an option
    // already reported (its value was refused) is a consequence, left out.
    let whole = if all_read {
        vec![
            cfg.check_workers(!adopted.is_empty()).err(),
            cfg.finalize(&cwd).err(),
            cfg.size_workers(&cgroup, podmaster::cgroup::affinity_cpus()).err(),
        ]
    } else {
        Vec::new()
    };
    let reported: Vec<Option<String>> = problems.iter().map(|p| p.key.clone()).collect();
    problems.extend(whole.into_iter().flatten().filter(|p| p.key.is_none() || !reported.contains(&p.key)));
    config::ConfigError::all(problems).map_err(config_error)?;
    let python_worker = cfg.python_worker().then(worker::python_worker_exe).transpose().map_err(config_error)?;
    logging::init(cfg.log_format, &cfg.log_level);
    if let Some(n) = &adopt_notice {
        tracing::info!("{n}");
    }
    for (key, origin) in &cfg.ignored {
        let instead = config::options::uwsgi::ignored(key).unwrap_or("podmaster embeds CPython");
        tracing::info!(option = key.as_str(), origin = %origin, instead, "uWSGI option accepted and ignored");
    }
    for (key, origin, text) in &cfg.notices {
        tracing::info!(option = key.as_str(), origin = %origin, "{text}");
    }

    if let Some(how) = &cfg.processes_source {
        tracing::info!(processes = cfg.processes, source = how.as_str(), "processes = auto");
    }
    if check_only {
        // Like `nginx -t`: the effective value of every option and where it came from.
        print!("{}", config::effective(&entries));
        if let Some(how) = &cfg.processes_source {
            println!("processes = auto: {} workers ({how})", cfg.processes);
        }
        println!("{}", cgroup.describe());
        println!("configuration OK");
        return Ok(exit::OK);
    }

    sys::unblock_all_signals();
    sys::cloexec_inherited(&[]);
    if let Err(e) = sys::make_undumpable() {
        tracing::warn!(errno = %e, "cannot make the master non-dumpable; workers of its uid can read its /proc entries");
    }
    if let Some((old, new)) = sys::raise_nofile_limit() {
        tracing::info!(from = old, to = new, "raised the soft limit on open files");
    }
    if std::process::id() != 1 {
        if let Err(e) = sys::become_subreaper() {
            tracing::warn!(
                errno = %e,
                "cannot become child subreaper; orphans of workers will be reaped by the system init instead"
            );
        }
    }

    let (listeners, probe) = bind(&cfg, &mut adopted)?;
    let pidfile = cfg.pidfile.as_ref().map(|p| cwd.join(p));
    if let Some(p) = &pidfile {
        std::fs::write(p, format!("{}\n", std::process::id()))
            .map_err(|e| config_error(format!("pidfile {}: {e}", p.display())))?;
    }
    let config_hash = config::entries_hash(&entries);
    let setup = MasterSetup { config: cfg, listeners, sources, env, cwd, probe, config_hash, python_worker, cgroup };
    let master = Master::new(setup).map_err(|e| Fatal { code: exit::SOFTWARE, message: e.to_string() })?;
    let code = master.run();
    if let Some(p) = &pidfile {
        remove_own_pidfile(p);
    }
    Ok(code)
}

/// Removes the pidfile if it still names this process (another instance
/// may have taken the path over meanwhile).
fn remove_own_pidfile(p: &std::path::Path) {
    let ours = std::fs::read_to_string(p).is_ok_and(|s| s.trim() == std::process::id().to_string());
    if ours {
        if let Err(e) = std::fs::remove_file(p) {
            tracing::warn!(path = %p.display(), error = %e, "cannot remove the pidfile");
        }
    }
}

/// Binds the configured sockets (or takes over every activated one) and
/// the probe socket, then logs what is bound: a bind error stays one line.
fn bind(
    cfg: &Config,
    adopted: &mut sockets::Adopted,
) -> Result<(Vec<sockets::Listener>, Option<probes::ProbeServer>), Fatal> {
    let mut specs: Vec<_> = cfg.sockets.iter().map(|s| (s.name.clone(), s.spec.clone())).collect();
    if specs.is_empty() {
        // No socket configured: serve every activated socket, by name.
        specs = adopted.names().into_iter().map(|n| (n.clone(), sockets::SocketSpec::Sd(n))).collect();
    }
    let (listeners, notices) = sockets::bind_all(&specs, &cfg.bind_options(), adopted).map_err(config_error)?;
    let probe = cfg
        .probe_socket
        .as_deref()
        .map(|a| probes::ProbeServer::bind(a, cfg.listen))
        .transpose()
        .map_err(config_error)?;

    // Logged only once everything is bound: a bind error stays one line.
    for n in notices {
        tracing::info!("{n}");
    }
    for name in adopted.close_unused() {
        tracing::warn!(socket = name.as_str(), "activated socket not used by any sd:// socket; closed");
    }

    for l in &listeners {
        tracing::info!(socket = l.name.as_str(), kind = l.kind, local = l.local.as_str(), "socket bound");
    }
    if let Some(p) = &probe {
        tracing::info!(address = p.address.as_str(), "probe server listening");
    }
    Ok((listeners, probe))
}
